"""A fast lane for MLflow's logging calls, the hot path of every training loop.

``runs/log-metric``, ``runs/log-parameter``, ``runs/set-tag`` and ``runs/log-batch`` are answered here, before
FastAPI's routing, dependency solving and response machinery: the body is parsed and validated in one pass,
then one call authenticates (``auth.deps.principal_for``, as every API route does) and writes in one write
session, one transaction, through the same ``write_log`` the routes use. On SQLite that call runs on the event
loop with a session that never waits for the write lock; on PostgreSQL, in a worker thread. On SQLite, a call
carrying metric points alone whose token is cached skips the session: ``write_points`` runs the same checks
and statements in a transaction of the pooled sqlite3 connection (``Database.driver_write``).

Only success is answered here. Whatever is not a plain success (a bad body, no or a bad token, a refused
permission or CSRF check, a missing run, a body over the limit, the write lock taken) is handed, with its body,
to the regular routes in ``mlflow_api``, which answer it, so errors and their statuses have one definition.
The lane's transaction was rolled back by then, so nothing is written twice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NotRequired

from pydantic import TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from typing_extensions import TypedDict

from bridgehead.auth.deps import principal_for
from bridgehead.auth.service import TokenCache
from bridgehead.errors import BridgeheadError
from bridgehead.store import Database
from bridgehead.tracking.mlflow_api import API, write_log, write_points
from bridgehead.tracking.mlflow_wire import Int64
from bridgehead.tracking.service import MetricPoint, now_ms

__all__ = ["LoggingLane", "read_body", "replay"]


# The bodies as typed dicts: validated by pydantic-core with the same field rules as the routes' models
# (mlflow_api), in a third of the time, since no model object is built per point. What these shapes refuse
# but the routes would accept (a numeric key, say) simply goes to the route.


class _Point(TypedDict):
    key: str
    value: float
    timestamp: NotRequired[Int64]
    step: NotRequired[Int64]
    model_id: NotRequired[str | None]


class _Pair(TypedDict):
    key: str
    value: NotRequired[str]


class _Ref(TypedDict):
    run_id: NotRequired[str]
    run_uuid: NotRequired[str]


class _OnePoint(_Point, _Ref):
    pass


class _OnePair(_Pair, _Ref):
    pass


class _Batch(_Ref):
    metrics: NotRequired[list[_Point]]
    params: NotRequired[list[_Pair]]
    tags: NotRequired[list[_Pair]]


def _points(points: list[_Point]) -> list[MetricPoint]:
    # Plain tuples (`MetricPoint`): a named tuple's constructor is Python code, and took a third of the rows'
    # time in a 1,000-point batch.
    now = now_ms()
    return [
        (p["key"], p["value"], p.get("timestamp") or now, p.get("step", 0), p.get("model_id")) for p in points
    ]


def _pairs(pairs: list[_Pair]) -> list[tuple[str, str]]:
    return [(p["key"], p.get("value", "")) for p in pairs]


def _metric(body: Any) -> dict[str, Any]:
    return {"metrics": _points([body])}


def _param(body: Any) -> dict[str, Any]:
    return {"params": _pairs([body])}


def _tag(body: Any) -> dict[str, Any]:
    return {"tags": _pairs([body])}


def _batch(body: Any) -> dict[str, Any]:
    return {
        "metrics": _points(body.get("metrics", [])),
        "params": _pairs(body.get("params", [])),
        "tags": _pairs(body.get("tags", [])),
    }


Shape = tuple[TypeAdapter[Any], Callable[[Any], dict[str, Any]]]
ROUTES: dict[str, Shape] = {
    f"{API}/runs/log-metric": (TypeAdapter(_OnePoint), _metric),
    f"{API}/runs/log-parameter": (TypeAdapter(_OnePair), _param),
    f"{API}/runs/set-tag": (TypeAdapter(_OnePair), _tag),
    f"{API}/runs/log-batch": (TypeAdapter(_Batch), _batch),
}
_OK_HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"2")]


class LoggingLane:
    """ASGI middleware; see the module docstring. Sits inside the body limit and the request envelope, so
    answers carry the request id and security headers and oversize bodies are refused as everywhere."""

    def __init__(self, app: ASGIApp, db: Database, tokens: TokenCache) -> None:
        self.app = app
        self.db = db
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = ROUTES.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if route is None:
            await self.app(scope, receive, send)
            return
        body, complete = await read_body(receive)
        if self.db.is_sqlite:
            # SQLite is in-process and this write takes a fraction of a millisecond of CPU, which a worker
            # thread would hold the GIL for anyway; the hop to it and back costs more than the write. The
            # session does not wait for the write lock: when another writer holds it, the call goes to the
            # route below, which waits in a worker thread.
            logged = complete and self._write(route, Request(scope), body, wait=False)
        else:
            logged = complete and await run_in_threadpool(self._write, route, Request(scope), body)
        if logged:
            await send({"type": "http.response.start", "status": 200, "headers": _OK_HEADERS})
            await send({"type": "http.response.body", "body": b"{}"})
            return
        await self.app(scope, replay(body, complete, receive), send)

    def _write(
        self,
        route: Shape,
        request: Request,
        raw: bytes,
        *,
        wait: bool = True,
    ) -> bool:
        """True when logged; False when the regular route must answer (nothing was written)."""
        shape, fields = route
        try:
            body: Any = shape.validate_json(raw)
            run_id = body.get("run_id") or body.get("run_uuid")
            if not run_id:
                return False
            batch = fields(body)
            authorization = request.headers.get("authorization")
            # A token this process authenticated within `token_cache_seconds` is not read again; what the
            # caller may do with the run is still checked by write_log and write_points, on every call.
            principal = self.tokens.get(authorization)
            if principal is not None and self.tokens.claim_refresh(authorization):
                # Due for a refresh (see TokenCache): this one call reads the token again, in the session
                # it writes with; the others go on from the cache, so the entry is renewed before it expires.
                principal = None
            if principal is not None:
                request.state.principal = principal
                if self.db.is_sqlite and not batch.get("params") and not batch.get("tags"):
                    # Metric points alone, on SQLite: in a transaction of the driver's own connection, which
                    # never waits for the write lock either (a held lock sends the call to the route).
                    with self.db.driver_write() as driver:
                        write_points(driver, principal, run_id, batch["metrics"])
                    return True
            with self.db.session(write=True, wait=wait) as session:
                if principal is None:
                    stamp = self.tokens.stamp()
                    try:
                        principal = principal_for(request, session)
                    except BridgeheadError:
                        self.tokens.forget(authorization)  # revoked or expired elsewhere: no longer trusted
                        raise
                    self.tokens.put(authorization, principal, stamp)
                write_log(session, principal, run_id, **batch)
        except (ValidationError, BridgeheadError):
            return False
        return True


async def read_body(receive: Receive) -> tuple[bytes, bool]:
    """The whole body, and whether it arrived whole (False when the client or the body limit ended it)."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), False
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), True


def replay(body: bytes, complete: bool, receive: Receive) -> Receive:
    """A receive channel that gives the app the body already read, then the rest of the connection's."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            if complete:
                return {"type": "http.request", "body": body, "more_body": False}
            return {"type": "http.disconnect"}
        return await receive()

    return replay
