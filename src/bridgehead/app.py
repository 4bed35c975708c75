"""``create_app(settings)``: the one way the server, the CLI and the tests build Bridgehead."""

from __future__ import annotations

import gc
import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bridgehead import __version__
from bridgehead.auth.service import TokenCache
from bridgehead.errors import BridgeheadError, PayloadTooLarge
from bridgehead.hookspecs import plugin_manager
from bridgehead.logs import configure_logging, request_id_var
from bridgehead.settings import Settings
from bridgehead.store import Database, upgrade
from bridgehead.store.artifacts import ArtifactStore
from bridgehead.web import Console

__all__ = ["create_app", "error_body", "is_mlflow_path"]

# Artifact uploads through the MLflow proxy are streamed by their route under max_artifact_bytes.
ARTIFACT_UPLOAD_PREFIXES = (
    "/api/2.0/mlflow-artifacts/artifacts/",
    "/ajax-api/2.0/mlflow-artifacts/artifacts/",
)
# ... and so are uploads through the native API (tracking/routes.py).
NATIVE_ARTIFACT_UPLOAD = re.compile(r"^/api/v1/runs/[^/]+/artifacts/.")
# ... and the input file of a batch scoring job (serving/routes.py), POSTed.
SCORE_JOB_UPLOAD = re.compile(r"^/api/v1/endpoints/[^/]+/score-jobs$")

log = logging.getLogger("bridgehead.http")

_STATUS_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_failed",
    429: "too_many_requests",
}

# The MLflow REST API (tracking/mlflow_api.py) answers errors as MLflow does: {"error_code", "message"} with
# MLflow's statuses, because the mlflow client's behaviour depends on them (set_experiment creates on
# RESOURCE_DOES_NOT_EXIST, register_model continues on RESOURCE_ALREADY_EXISTS, 5xx are retried for minutes).
MLFLOW_PREFIXES = ("/api/2.0/", "/api/3.0/", "/ajax-api/")
_NO_ENDPOINT = "no_endpoint"  # a route missing under the MLflow prefixes (never a Bridgehead code)
# Bridgehead code -> (HTTP status, MLflow error_code).
_MLFLOW_CODES = {
    "bad_request": (400, "INVALID_PARAMETER_VALUE"),
    "invalid_json": (400, "INVALID_PARAMETER_VALUE"),
    "validation_failed": (400, "INVALID_PARAMETER_VALUE"),
    "unauthenticated": (401, "UNAUTHENTICATED"),
    "permission_denied": (403, "PERMISSION_DENIED"),
    "not_found": (404, "RESOURCE_DOES_NOT_EXIST"),
    "already_exists": (400, "RESOURCE_ALREADY_EXISTS"),
    "conflict": (409, "RESOURCE_CONFLICT"),
    "payload_too_large": (413, "RESOURCE_EXHAUSTED"),
    "too_many_requests": (429, "REQUEST_LIMIT_EXCEEDED"),
    "store_unavailable": (503, "TEMPORARILY_UNAVAILABLE"),
    "internal_error": (500, "INTERNAL_ERROR"),
    # Unknown routes and methods: the client falls back to another endpoint on ENDPOINT_NOT_FOUND.
    _NO_ENDPOINT: (404, "ENDPOINT_NOT_FOUND"),
    "method_not_allowed": (405, "ENDPOINT_NOT_FOUND"),
}


def is_mlflow_path(path: str) -> bool:
    return path.startswith(MLFLOW_PREFIXES)


def error_body(path: str, status: int, error: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """The one place an error becomes a body: Bridgehead's ``{"error": {"code", "message", "details"}}``, or
    MLflow's ``{"error_code", "message"}`` with MLflow's status under the MLflow prefixes."""
    if not is_mlflow_path(path):
        return status, {"error": error}
    code, message, details = error["code"], error["message"], error.get("details") or {}
    fallback = (status, "BAD_REQUEST" if status < 500 else "INTERNAL_ERROR")
    status, mlflow_code = _MLFLOW_CODES.get(code, fallback)
    # MLflow's body has no details: name the offending fields in the message instead.
    problems = [
        f"{'.'.join(str(p) for p in err.get('location', [])[1:]) or 'body'}: {err.get('message')}"
        for err in details.get("errors", [])[:5]
        if isinstance(err, dict)
    ]
    if problems:
        message = f"{message} {'; '.join(problems)}"
    return status, {"error_code": mlflow_code, "message": message}


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    configure_logging(settings.log_level)
    db = Database(settings.resolved_database_url)
    pm = plugin_manager()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.home.mkdir(parents=True, exist_ok=True)
        if settings.migrate_on_start:
            upgrade(db)
        from bridgehead.org.service import bootstrap_admin

        bootstrap_admin(db, settings)
        app.state.artifacts.check_writable()
        # What start-up built lives as long as the process: keep it out of the collector's sight, so that
        # full collections, triggered by the many short-lived objects of a large request, stay short.
        pm.hook.startup(app=app)
        gc.collect()
        gc.freeze()
        log.info(
            "bridgehead started", extra={"version": __version__, "database": db.engine.url.render_as_string()}
        )
        try:
            yield
        finally:
            _shutdown_each(pm, app)
            db.dispose()

    app = BridgeheadApp(
        title="Bridgehead",
        version=__version__,
        description="Self-hostable platform that takes AI from pilot to production, with governance built in.",
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/openapi.json",
        lifespan=lifespan,
    )
    _add_offline_docs(app)
    app.state.settings = settings
    app.state.db = db
    app.state.artifacts = ArtifactStore(settings.resolved_artifact_root)
    app.state.secret_key = settings.resolved_secret_key()
    # Tokens authenticated by the hot lanes (inference, MLflow logging); see auth.service.TokenCache.
    app.state.token_cache = TokenCache(settings.token_cache_seconds)
    app.state.plugins = pm
    console = Console(settings)
    app.state.console = console
    # (ASGI middleware class, options): hot paths answered before routing; see BridgeheadApp.
    app.state.fast_lanes = []
    # What plugins share with the handlers of this process's job worker (the serving runtime's loaded models).
    app.state.job_resources = {}

    _install_error_handlers(app, console)
    if settings.serve_endpoint:
        from bridgehead.serving.plugin import setup_inference

        setup_inference(app)
    else:
        pm.hook.register_routes(app=app, console=console)

    @app.get("/healthz", tags=["health"], include_in_schema=True)
    def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok", "version": __version__}

    @app.get("/readyz", tags=["health"], responses={503: {"description": "database unreachable"}})
    def readyz() -> dict[str, str]:
        """Readiness: the database answers."""
        db.ping()
        return {"status": "ready"}

    inner: ASGIApp = partial(FastAPI.__call__, app)
    for lane, options in reversed(app.state.fast_lanes):
        inner = lane(inner, **options)
    limited = _BodyLimit(inner, max_bytes=settings.max_body_bytes, exempt=ARTIFACT_UPLOAD_PREFIXES)
    app.front = _RequestContext(limited)
    return app


def _add_offline_docs(app: FastAPI) -> None:
    """Swagger UI at /api/docs from the assets bundled in the fastapi-offline wheel: no CDN."""
    import fastapi_offline

    static = "/api/docs/static"
    app.mount(
        static, StaticFiles(directory=Path(fastapi_offline.__file__).parent / "static"), name="docs-static"
    )

    @app.get("/api/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/api/openapi.json",
            title="Bridgehead - API",
            swagger_js_url=f"{static}/swagger-ui-bundle.js",
            swagger_css_url=f"{static}/swagger-ui.css",
            swagger_favicon_url=f"{static}/favicon.png",
        )


class BridgeheadApp(FastAPI):
    """FastAPI, entered through Bridgehead's own front: the request context (request id, security headers,
    access log line, error body for anything unhandled), then the body limit, then the fast lanes plugins
    registered in ``app.state.fast_lanes``, and only then FastAPI and Starlette's middleware and router.
    What a lane answers (a successful logging call from a training loop) skips that machinery; everything
    else goes through it as usual."""

    front: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.front is None:
            await super().__call__(scope, receive, send)
        else:
            await self.front(scope, receive, send)


def _wants_html(request: Request) -> bool:
    path = request.url.path
    return (
        not path.startswith("/api")
        and not is_mlflow_path(path)
        and "text/html" in request.headers.get("accept", "")
    )


def _install_error_handlers(app: FastAPI, console: Console) -> None:
    def respond(request: Request, status: int, code: str, message: str, details: dict[str, Any]) -> Response:
        if _wants_html(request):
            if status == 401:
                return console.redirect_to_login(request)
            return console.error_page(request, status, message)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        status, body = error_body(
            request.url.path, status, {"code": code, "message": message, "details": details}
        )
        return JSONResponse(body, status_code=status, headers=headers)

    @app.exception_handler(BridgeheadError)
    async def _bridgehead(request: Request, exc: BridgeheadError) -> Response:
        if exc.status >= 500:
            log.warning("request failed: %s", exc.message, extra={"code": exc.code})
        return respond(request, exc.status, exc.code, exc.message, exc.details)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        errors = [
            {
                "location": [str(p) for p in err.get("loc", ())],
                "message": err.get("msg", ""),
                "type": err.get("type"),
            }
            for err in exc.errors()
        ]
        if any(err["type"] == "json_invalid" for err in errors):
            return respond(
                request, 400, "invalid_json", "The request body is not valid JSON.", {"errors": errors}
            )
        return respond(request, 422, "validation_failed", "The request is not valid.", {"errors": errors})

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception) -> Response:
        # Starlette's outermost middleware answers with this, then re-raises to the request context, which
        # logs the traceback under the request id; the client gets the error body, never a traceback.
        return respond(request, 500, "internal_error", _internal_error_message(request_id_var.get()), {})

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        code = _STATUS_CODES.get(exc.status_code, "http_error")
        message = str(exc.detail) if exc.detail else code.replace("_", " ")
        if exc.status_code == 404 and is_mlflow_path(request.url.path):
            code, message = _NO_ENDPOINT, f"No endpoint {request.method} {request.url.path}."
        return respond(request, exc.status_code, code, message, {})


def _internal_error_message(request_id: str | None) -> str:
    return f"Internal error; quote request id {request_id or 'unknown'} to your administrator."


_SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"same-origin")]
_PAGE_HEADERS = [
    *_SECURITY_HEADERS,
    (b"x-frame-options", b"DENY"),
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        b"frame-ancestors 'none'; form-action 'self'",
    ),
]


def _shutdown_each(pm: Any, app: FastAPI) -> None:
    """Every plugin's shutdown, each on its own: one that fails (a store gone away) must not keep the others
    from stopping their threads and flushing their buffers."""
    for impl in pm.hook.shutdown.get_hookimpls():
        try:
            impl.function(app=app)
        except Exception:
            log.exception("shutdown of %s failed", impl.plugin_name)


class _RequestContext:
    """The envelope of every request, in one wrapper: a request id on every log line and response,
    security headers on every answer (413s and 500s included), one access log line per request, and an
    error body, never a traceback, for an unhandled exception."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from bridgehead.store.base import new_id

        incoming = next((v for k, v in scope["headers"] if k == b"x-request-id"), b"").decode("latin-1")
        rid = incoming if 8 <= len(incoming) <= 64 and incoming.replace("-", "").isalnum() else new_id()
        token = request_id_var.set(rid)
        start = time.perf_counter()
        status = 500
        started = False
        extra = _SECURITY_HEADERS if scope["path"].startswith("/api/docs") else _PAGE_HEADERS

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", []), *extra, (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            # Caught inside the request context so the log line carries the request id; the client
            # gets the error body, never a traceback.
            log.exception("unhandled error")
            if not started:
                error = {"code": "internal_error", "message": _internal_error_message(rid), "details": {}}
                status_, body = error_body(scope["path"], 500, error)
                await JSONResponse(body, status_code=status_)(scope, receive, send_with_id)
        finally:
            log.info(
                "%s %s %s",
                scope["method"],
                scope["path"],
                status,
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "client": (scope.get("client") or ("",))[0],
                    "status": status,
                    "duration_ms": round((time.perf_counter() - start) * 1000, 2),
                },
            )
            request_id_var.reset(token)


class _BodyLimit:
    """Refuse bodies above the limit, whether announced by Content-Length or streamed.

    Artifact uploads (``PUT`` under an ``exempt`` prefix) and batch scoring inputs (``POST`` to an endpoint's
    ``score-jobs``) are streamed to the store by their route, which enforces ``max_artifact_bytes`` instead."""

    def __init__(self, app: ASGIApp, max_bytes: int, exempt: tuple[str, ...] = ()) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or (
                scope["method"] == "PUT"
                and (scope["path"].startswith(self.exempt) or NATIVE_ARTIFACT_UPLOAD.match(scope["path"]))
            )
            or (scope["method"] == "POST" and SCORE_JOB_UPLOAD.match(scope["path"]))
        ):
            await self.app(scope, receive, send)
            return
        length = next((value for name, value in scope["headers"] if name == b"content-length"), None)
        too_big = self._too_big(scope["path"])
        if length is not None:
            try:
                announced = int(length)
            except ValueError:
                announced = self.max_bytes + 1
            if announced > self.max_bytes:
                await too_big(scope, receive, send)
                return
            # The server hands the app exactly the announced bytes: nothing left to count.
            await self.app(scope, receive, send)
            return
        received = 0
        exceeded = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    # Ends the body for the app; whatever it answers is replaced by the 413 below.
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not exceeded:
                await send(message)
            elif message["type"] == "http.response.start":
                await too_big(scope, receive, send)

        await self.app(scope, limited_receive, guarded_send)

    def _too_big(self, path: str) -> ASGIApp:
        async def answer(scope: Scope, receive: Receive, send: Send) -> None:
            error = PayloadTooLarge(
                f"Request body is larger than {self.max_bytes} bytes.",
                details={"limit_bytes": self.max_bytes},
            )
            _, body = error_body(path, 413, error.to_body()["error"])
            await JSONResponse(body, status_code=413)(scope, receive, send)

        return answer
