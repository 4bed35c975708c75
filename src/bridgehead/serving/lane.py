"""A fast lane for inference, the hot path of every application that calls a model.

``POST /serve/{name}/predict``, ``/serve/{name}/invocations`` and ``/v2/models/{name}/infer`` are answered
here, before FastAPI's routing, dependency solving and response machinery, by the same
``invoke.score_request`` the routes use (authentication, the endpoint's permission check, parsing, routing,
validation, scoring, the prediction log and the metrics all happen there).

Only success is answered here. Whatever is not a plain success (a bad body, no or a bad token, an unknown
endpoint, a model error) is handed, with its body, to the regular routes in ``invoke``, which answer it, so
errors and their statuses have one definition. Nothing was logged by then: a request is logged only once it
has been scored.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal
from urllib.parse import parse_qs

import orjson
from fastapi import BackgroundTasks, FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from bridgehead.errors import BridgeheadError
from bridgehead.serving.invoke import answer, ready, score_batched, score_request
from bridgehead.tracking.mlflow_lane import read_body, replay

__all__ = ["INLINE_BYTES", "InferenceLane"]

# Requests up to this size are scored on the event loop when nothing needs loading (about 200 rows of 20
# numbers); larger ones in a worker thread, so that one big batch does not hold up the small ones.
INLINE_BYTES = 64 * 1024

_PATHS: list[tuple[re.Pattern[str], Literal["native", "mlflow", "v2"]]] = [
    (re.compile(r"^/serve/([^/]{1,100})/predict$"), "native"),
    (re.compile(r"^/serve/([^/]{1,100})/invocations$"), "mlflow"),
    (re.compile(r"^/v2/models/([^/]{1,100})/infer$"), "v2"),
]


def _match(scope: Scope) -> tuple[str, Literal["native", "mlflow", "v2"]] | None:
    if scope["type"] != "http" or scope["method"] != "POST":
        return None
    path: str = scope["path"]
    if not path.startswith(("/serve/", "/v2/models/")):
        return None
    for pattern, protocol in _PATHS:
        found = pattern.match(path)
        if found:
            return found.group(1), protocol
    return None


class InferenceLane:
    """ASGI middleware; see the module docstring. Inside the body limit and the request envelope, so answers
    carry the request id and security headers and oversize bodies are refused as everywhere."""

    def __init__(self, app: ASGIApp, fastapi: FastAPI) -> None:
        self.app = app
        self.fastapi = fastapi

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        matched = _match(scope)
        if matched is None:
            await self.app(scope, receive, send)
            return
        name, protocol = matched
        body, complete = await read_body(receive)
        answered = complete and await self._answer(scope, name, protocol, body, send)
        if not answered:
            await self.app(scope, replay(body, complete, receive), send)

    async def _answer(
        self, scope: Scope, name: str, protocol: Literal["native", "mlflow", "v2"], body: bytes, send: Send
    ) -> bool:
        key_column = None
        if protocol == "native" and scope.get("query_string"):
            query = parse_qs(scope["query_string"].decode("latin-1"))
            if set(query) - {"key_column"} or len(query.get("key_column", [])) > 1:
                return False  # let the route validate what it does not expect
            values = query.get("key_column")
            key_column = values[0] if values else None
            if key_column is not None and not 1 <= len(key_column) <= 250:
                return False
        scope.setdefault("app", self.fastapi)
        request = Request(scope)
        if request.app.state.settings.serve_endpoint not in (None, name):
            return False
        background = BackgroundTasks()
        try:
            if len(body) <= INLINE_BYTES and ready(request, name) is not None:
                # Caller, endpoint and models are cached: nothing to wait on, only a little CPU, which a
                # worker thread would hold the GIL for anyway; the hop there and back costs more. The model
                # call joins the micro-batch of requests scored at the same moment (serving.batching).
                if request.app.state.settings.serving_batch_rows:
                    scored = await score_batched(request, name, protocol, body, background, key_column)
                else:
                    scored = score_request(request, name, protocol, body, background, key_column)
            else:
                scored = await run_in_threadpool(
                    score_request, request, name, protocol, body, background, key_column
                )
        except BridgeheadError:
            return False
        payload: Any = answer(protocol, name, scored)
        try:
            data = orjson.dumps(payload)  # ten times faster than json.dumps; NaN is written as null
        except TypeError:
            data = json.dumps(payload, separators=(",", ":")).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": data})
        await background()
        return True
