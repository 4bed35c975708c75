"""MLflow's artifact proxy (``mlflow-artifacts:/`` URIs): files streamed to and from Bridgehead's store.

A path's first segment is the experiment id (``<exp>/<run>/artifacts/...``, ``<exp>/models/<id>/artifacts/...``):
reading needs ``tracking.read`` and sight of that experiment (or of a registered model version whose files
lie under the path); writing and deleting need ``tracking.write`` and a writable experiment (or one's own run or logged model in it). Every path goes
through the ArtifactStore, which refuses ``..``, absolute paths, backslashes, encoded traversal and links that
leave its root. Files are served as attachments of type application/octet-stream, never rendered.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import anyio.from_thread
import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from bridgehead.auth.deps import ApiPrincipal
from bridgehead.auth.roles import Action
from bridgehead.auth.service import Principal, require
from bridgehead.errors import NotFound, PayloadTooLarge
from bridgehead.registry import service as registry
from bridgehead.settings import Settings
from bridgehead.store.artifacts import safe_relative_path
from bridgehead.tracking import service as tracking
from bridgehead.tracking.mlflow_wire import artifacts_of, db, ok

__all__ = ["router"]

router = APIRouter(prefix="/api/2.0/mlflow-artifacts")
CHUNK = 1 << 20


def _readable(request: Request, principal: Principal, path: str) -> str:
    require(principal, Action.TRACKING_READ)
    with db(request).session() as session:
        try:
            return tracking.artifact_experiment(session, principal, path)
        except NotFound:
            safe = safe_relative_path(path)
            if registry.registered_path_visible(session, principal, safe):
                return safe
            raise


def _writable(request: Request, principal: Principal, path: str) -> str:
    require(principal, Action.TRACKING_WRITE)
    with db(request).session() as session:
        return tracking.artifact_write_path(session, principal, path)


@router.get("/artifacts")
def list_artifacts(request: Request, principal: ApiPrincipal, path: str = "") -> JSONResponse:
    """Direct children of a directory, by basename; ``{}`` when it does not exist (as MLflow answers)."""
    if not path.strip("/"):
        require(principal, Action.TRACKING_READ)
        return ok()  # the root would list every unit's experiments
    safe = _readable(request, principal, path)
    files: list[dict[str, Any]] = []
    for entry in artifacts_of(request).list_dir(safe):
        item: dict[str, Any] = {"path": entry.name, "is_dir": entry.is_dir}
        if not entry.is_dir:
            item["file_size"] = entry.size
        files.append(item)
    return ok({"files": files} if files else None)


@router.get("/artifacts/{path:path}")
def download_artifact(path: str, request: Request, principal: ApiPrincipal) -> StreamingResponse:
    safe = _readable(request, principal, path)
    store = artifacts_of(request)
    if not store.is_file(safe):
        raise NotFound(f"Artifact '{path}' does not exist.", details={"path": path})
    name = quote(safe.rsplit("/", 1)[-1])
    return StreamingResponse(
        store.iter_bytes(safe, CHUNK),
        media_type="application/octet-stream",
        headers={"Content-Disposition": f"attachment; filename*=UTF-8''{name}"},
    )


@router.put("/artifacts/{path:path}")
async def upload_artifact(path: str, request: Request, principal: ApiPrincipal) -> JSONResponse:
    """Stream the body to the store; above BRIDGEHEAD_MAX_ARTIFACT_BYTES answer 413 and keep nothing."""
    safe = await run_in_threadpool(_writable, request, principal, path)
    settings: Settings = request.app.state.settings
    limit = settings.max_artifact_bytes
    announced = request.headers.get("content-length", "")
    if announced.isdigit() and int(announced) > limit:
        raise PayloadTooLarge(
            f"Artifact is larger than {limit} bytes (BRIDGEHEAD_MAX_ARTIFACT_BYTES).",
            details={"limit_bytes": limit, "path": path},
        )
    stream = request.stream()

    async def next_chunk() -> bytes | None:
        try:
            return await stream.__anext__()
        except StopAsyncIteration:
            return None

    def chunks() -> Iterator[bytes]:
        # Runs in a worker thread, pulling each chunk from the event loop: the file is never held whole.
        while (chunk := anyio.from_thread.run(next_chunk)) is not None:
            if chunk:
                yield chunk

    store = artifacts_of(request)
    await anyio.to_thread.run_sync(lambda: store.put_stream(safe, chunks(), max_bytes=limit))
    return ok()


@router.delete("/artifacts/{path:path}")
def delete_artifact(path: str, request: Request, principal: ApiPrincipal) -> JSONResponse:
    safe = _writable(request, principal, path)
    artifacts_of(request).delete(safe)
    return ok()
