"""JSON API: /api/v1/experiments and /api/v1/runs (params, metrics, tags, dataset inputs, artifacts).

Reads need ``tracking.read``, writes ``tracking.write``. What a caller sees follows the business-unit
visibility of the service functions; changing an object shared with the organization takes its own unit.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from bridgehead.auth.deps import ApiPrincipal, db_of
from bridgehead.auth.roles import Action
from bridgehead.auth.service import Principal, require
from bridgehead.errors import (
    AlreadyExists,
    BadRequest,
    Conflict,
    NotFound,
    PayloadTooLarge,
    StoreUnavailable,
    error_responses,
)
from bridgehead.schemas import Page
from bridgehead.store import Database
from bridgehead.store.artifacts import ArtifactStore, blocking_chunks, safe_relative_path
from bridgehead.tracking import service
from bridgehead.tracking.models import Experiment, Run
from bridgehead.tracking.schemas import (
    ArtifactEntry,
    ArtifactList,
    ArtifactWritten,
    DatasetInputOut,
    ExperimentCreate,
    ExperimentOut,
    ExperimentUpdate,
    LatestMetricOut,
    LogBatch,
    LogInputs,
    MetricHistory,
    MetricPoint,
    RunCreate,
    RunOut,
    RunSearch,
    RunUpdate,
    TagSet,
    ViewType,
    datetime_to_ms,
    ms_to_datetime,
)

router = APIRouter(prefix="/api/v1", tags=["tracking"])
ERRORS = error_responses()
UPLOAD_ERRORS = error_responses(400, 401, 403, 404, 409, 413, 422)
FILE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The file's bytes.",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}

Limit = Annotated[int, Query(ge=1, le=1000)]
Offset = Annotated[int, Query(ge=0, le=10_000_000)]
ExperimentId = Annotated[str, Path(min_length=1, max_length=32)]
RunId = Annotated[str, Path(min_length=1, max_length=32)]
TERMINAL = ("FINISHED", "FAILED", "KILLED")


# --- helpers ----------------------------------------------------------------------------------


def _experiment_out(exp: Experiment, tags: dict[str, str]) -> ExperimentOut:
    return ExperimentOut(
        id=exp.id,
        name=exp.name,
        business_unit_id=exp.business_unit_id,
        visibility=exp.visibility,
        owner_id=exp.owner_id,
        use_case_id=exp.use_case_id,
        description=exp.description,
        artifact_location=exp.artifact_location,
        lifecycle_stage=exp.lifecycle_stage,
        created_at=ms_to_datetime(exp.created_ms),
        updated_at=ms_to_datetime(exp.updated_ms),
        tags=tags,
    )


def _runs_out(session: Session, runs: list[Run]) -> list[RunOut]:
    data = service.run_data(session, [r.id for r in runs])
    out = []
    for run in runs:
        d = data[run.id]
        out.append(
            RunOut(
                id=run.id,
                experiment_id=run.experiment_id,
                business_unit_id=run.business_unit_id,
                name=run.name,
                status=run.status,
                lifecycle_stage=run.lifecycle_stage,
                start_time=ms_to_datetime(run.start_ms),
                end_time=None if run.end_ms is None else ms_to_datetime(run.end_ms),
                author_id=run.author_id,
                user_name=run.user_name,
                parent_run_id=run.parent_run_id,
                artifact_uri=run.artifact_uri,
                params=d.params,
                tags=d.tags,
                metrics=[
                    LatestMetricOut(
                        key=m.key,
                        value=service.metric_value(m.value, m.is_nan),
                        step=m.step,
                        timestamp_ms=m.timestamp_ms,
                    )
                    for m in sorted(d.metrics, key=lambda m: m.key)
                ],
                inputs=[
                    DatasetInputOut(
                        name=i.name,
                        digest=i.digest,
                        source_type=i.source_type,
                        source=i.source,
                        schema_=i.schema_json,
                        profile=i.profile_json,
                        context=i.context,
                    )
                    for i in d.inputs
                ],
            )
        )
    return out


def _json(body: BaseModel, status: int = 200) -> Response:
    """Serialized by pydantic, which writes non-finite metric values as strings; the default JSON
    encoder would refuse them."""
    return Response(body.model_dump_json(by_alias=True), status_code=status, media_type="application/json")


def _store(request: Request) -> ArtifactStore:
    store: ArtifactStore = request.app.state.artifacts
    return store


@contextlib.contextmanager
def _artifact_errors(path: str) -> Iterator[None]:
    """The artifact store's boundary: filesystem errors become Bridgehead errors."""
    try:
        yield
    except (IsADirectoryError, NotADirectoryError, FileExistsError) as exc:
        raise Conflict(
            "Another artifact already uses part of this path (a file where a directory is needed, or the "
            "reverse).",
            details={"path": path},
        ) from exc
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise BadRequest("A part of the artifact path is too long.", details={"path": path}) from exc
        raise StoreUnavailable("The artifact store failed; retry shortly.") from exc


# --- experiments ------------------------------------------------------------------------------


@router.get("/experiments", response_model=Page[ExperimentOut], responses=ERRORS)
def list_experiments(
    request: Request,
    principal: ApiPrincipal,
    name: Annotated[str | None, Query(min_length=1, max_length=500, description="Exact name.")] = None,
    name_like: Annotated[str | None, Query(max_length=500, description="SQL LIKE pattern: %, _.")] = None,
    view_type: ViewType = "ACTIVE_ONLY",
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[ExperimentOut]:
    """Experiments you may see, newest first."""
    require(principal, Action.TRACKING_READ)
    with db_of(request).session() as session:
        if name is not None:
            try:
                found = [service.get_experiment_by_name(session, principal, name)]
            except NotFound:
                found = []
            wanted = {"ACTIVE_ONLY": ("active",), "DELETED_ONLY": ("deleted",)}.get(view_type)
            found = [e for e in found if wanted is None or e.lifecycle_stage in wanted]
            total = len(found)
            rows = found[offset : offset + limit]
        else:
            rows = list(
                service.search_experiments(
                    session, principal, name_like=name_like, view_type=view_type, limit=limit, offset=offset
                )
            )
            total = service.count_experiments(session, principal, name_like=name_like, view_type=view_type)
        tags = service.experiment_tags_for(session, [e.id for e in rows])
        return Page[ExperimentOut](items=[_experiment_out(e, tags[e.id]) for e in rows], total=total)


@router.post("/experiments", status_code=201, response_model=ExperimentOut, responses=ERRORS)
def create_experiment(request: Request, principal: ApiPrincipal, body: ExperimentCreate) -> ExperimentOut:
    """Create an experiment in your business unit (central staff may name another)."""
    require(principal, Action.TRACKING_WRITE)
    with db_of(request).session(write=True) as session:
        exp = service.create_experiment(
            session,
            principal,
            body.name,
            tags=body.tags,
            business_unit_id=body.business_unit_id,
            use_case_id=body.use_case_id,
            description=body.description,
            visibility=body.visibility,
        )
        return _experiment_out(exp, service.experiment_tags(session, exp.id))


@router.get("/experiments/{experiment_id}", response_model=ExperimentOut, responses=ERRORS)
def get_experiment(request: Request, principal: ApiPrincipal, experiment_id: ExperimentId) -> ExperimentOut:
    require(principal, Action.TRACKING_READ)
    with db_of(request).session() as session:
        exp = service.get_experiment(session, principal, experiment_id)
        return _experiment_out(exp, service.experiment_tags(session, exp.id))


@router.patch("/experiments/{experiment_id}", response_model=ExperimentOut, responses=ERRORS)
def update_experiment(
    request: Request, principal: ApiPrincipal, experiment_id: ExperimentId, body: ExperimentUpdate
) -> ExperimentOut:
    """Rename an experiment or change its description."""
    require(principal, Action.TRACKING_WRITE)
    with db_of(request).session(write=True) as session:
        exp = service.writable_experiment(session, principal, experiment_id)
        if body.name is not None and body.name != exp.name:
            if exp.id == service.DEFAULT_EXPERIMENT_ID:
                raise BadRequest("The Default experiment cannot be renamed.")
            if body.name == "Default":
                raise AlreadyExists("Experiment 'Default' already exists.", details={"name": body.name})
            service.rename_experiment(session, principal, exp.id, body.name)
        if body.description is not None:
            service.set_experiment_description(session, principal, exp.id, body.description)
        session.flush()
        return _experiment_out(exp, service.experiment_tags(session, exp.id))


@router.delete("/experiments/{experiment_id}", status_code=204, response_class=Response, responses=ERRORS)
def delete_experiment(request: Request, principal: ApiPrincipal, experiment_id: ExperimentId) -> Response:
    """Mark an experiment deleted (it is kept and can be restored)."""
    require(principal, Action.TRACKING_WRITE)
    with db_of(request).session(write=True) as session:
        exp = service.writable_experiment(session, principal, experiment_id)
        service.set_experiment_lifecycle(session, principal, exp.id, "deleted")
    return Response(status_code=204)


@router.post("/experiments/{experiment_id}/restore", response_model=ExperimentOut, responses=ERRORS)
def restore_experiment(
    request: Request, principal: ApiPrincipal, experiment_id: ExperimentId
) -> ExperimentOut:
    require(principal, Action.TRACKING_WRITE)
    with db_of(request).session(write=True) as session:
        exp = service.writable_experiment(session, principal, experiment_id)
        service.set_experiment_lifecycle(session, principal, exp.id, "active")
        return _experiment_out(exp, service.experiment_tags(session, exp.id))


@router.put("/experiments/{experiment_id}/tags/{key:path}", response_model=ExperimentOut, responses=ERRORS)
def set_experiment_tag(
    request: Request, principal: ApiPrincipal, experiment_id: ExperimentId, key: str, body: TagSet
) -> ExperimentOut:
    require(principal, Action.TRACKING_WRITE)
    with db_of(request).session(write=True) as session:
        exp = service.writable_experiment(session, principal, experiment_id)
        service.set_experiment_tag(session, principal, exp.id, key, body.value)
        session.flush()
        return _experiment_out(exp, service.experiment_tags(session, exp.id))


@router.delete(
    "/experiments/{experiment_id}/tags/{key:path}", status_code=204, response_class=Response, responses=ERRORS
)
def delete_experiment_tag(
    request: Request, principal: ApiPrincipal, experiment_id: ExperimentId, key: str
) -> Response:
    require(principal, Action.TRACKING_WRITE)
    with db_of(request).session(write=True) as session:
        exp = service.writable_experiment(session, principal, experiment_id)
        service.delete_experiment_tag(session, principal, exp.id, key)
    return Response(status_code=204)


# --- runs -------------------------------------------------------------------------------------


@router.post("/runs", status_code=201, response_model=RunOut, responses=ERRORS)
def create_run(request: Request, principal: ApiPrincipal, body: RunCreate) -> Response:
    """Start a run (status RUNNING) in an experiment; anyone who may write may log to Default ("0")."""
    require(principal, Action.TRACKING_WRITE)
    tags = dict(body.tags)
    if body.parent_run_id:
        tags["mlflow.parentRunId"] = body.parent_run_id
    with db_of(request).session(write=True) as session:
        run = service.create_run(
            session,
            principal,
            body.experiment_id,
            name=body.name,
            start_ms=None if body.start_time is None else datetime_to_ms(body.start_time),
            tags=tags,
        )
        session.flush()
        return _json(_runs_out(session, [run])[0], 201)


@router.post("/runs/search", response_model=Page[RunOut], responses=ERRORS)
def search_runs(request: Request, principal: ApiPrincipal, body: RunSearch) -> Response:
    """Runs you may see, filtered and ordered with MLflow's search grammar."""
    require(principal, Action.TRACKING_READ)
    with db_of(request).session() as session:
        runs = service.search_runs(
            session,
            principal,
            body.experiment_ids,
            filter_string=body.filter,
            order_by=body.order_by,
            view_type=body.view_type,
            limit=body.limit,
            offset=body.offset,
        )
        total = service.count_runs(
            session, principal, body.experiment_ids, filter_string=body.filter, view_type=body.view_type
        )
        return _json(Page[RunOut](items=_runs_out(session, list(runs)), total=total))


@router.get("/runs/{run_id}", response_model=RunOut, responses=ERRORS)
def get_run(request: Request, principal: ApiPrincipal, run_id: RunId) -> Response:
    """A run with its params, tags, the latest value of each metric, and its dataset inputs."""
    require(principal, Action.TRACKING_READ)
    with db_of(request).session() as session:
        return _json(_runs_out(session, [service.get_run(session, principal, run_id)])[0])


@router.patch("/runs/{run_id}", response_model=RunOut, responses=ERRORS)
def update_run(request: Request, principal: ApiPrincipal, run_id: RunId, body: RunUpdate) -> Response:
    """Change a run's status (ending it), end time or name."""
    require(principal, Action.TRACKING_WRITE)
    with db_of(request).session(write=True) as session:
        run = service.writable_run(session, principal, run_id)
        end_ms = None if body.end_time is None else datetime_to_ms(body.end_time)
        if end_ms is None and body.status in TERMINAL and run.end_ms is None:
            end_ms = service.now_ms()
        service.update_run(session, principal, run.id, status=body.status, end_ms=end_ms, name=body.name)
        session.flush()
        return _json(_runs_out(session, [run])[0])


@router.delete("/runs/{run_id}", status_code=204, response_class=Response, responses=ERRORS)
def delete_run(request: Request, principal: ApiPrincipal, run_id: RunId) -> Response:
    """Mark a run deleted (it is kept and can be restored)."""
    require(principal, Action.TRACKING_WRITE)
    with db_of(request).session(write=True) as session:
        run = service.writable_run(session, principal, run_id)
        service.set_run_lifecycle(session, principal, run.id, "deleted")
    return Response(status_code=204)


@router.post("/runs/{run_id}/restore", response_model=RunOut, responses=ERRORS)
def restore_run(request: Request, principal: ApiPrincipal, run_id: RunId) -> Response:
    require(principal, Action.TRACKING_WRITE)
    with db_of(request).session(write=True) as session:
        run = service.writable_run(session, principal, run_id)
        service.set_run_lifecycle(session, principal, run.id, "active")
        return _json(_runs_out(session, [run])[0])


@router.post("/runs/{run_id}/log-batch", status_code=204, response_class=Response, responses=ERRORS)
def log_batch(request: Request, principal: ApiPrincipal, run_id: RunId, body: LogBatch) -> Response:
    """Append metrics (full history kept) and log params and tags, atomically. Up to 1000 metric points,
    100 params and 100 tags a call."""
    require(principal, Action.TRACKING_WRITE)
    now = service.now_ms()
    metrics = [
        service.MetricIn(
            key=m.key,
            value=m.value,
            timestamp_ms=now if m.timestamp_ms is None else m.timestamp_ms,
            step=m.step,
        )
        for m in body.metrics
    ]
    with db_of(request).session(write=True) as session:
        run = service.writable_run(session, principal, run_id)
        service.log_batch(session, principal, run.id, metrics=metrics, params=body.params, tags=body.tags)
    return Response(status_code=204)


@router.get("/runs/{run_id}/metrics/{key:path}", response_model=MetricHistory, responses=ERRORS)
def metric_history(
    request: Request,
    principal: ApiPrincipal,
    run_id: RunId,
    key: str,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 25_000,
    offset: Offset = 0,
) -> Response:
    """Every logged point of one metric, ordered by step, then time, then logging order."""
    require(principal, Action.TRACKING_READ)
    with db_of(request).session() as session:
        points = service.metric_history(session, principal, run_id, key, limit=limit, offset=offset)
        total = service.count_metric_history(session, principal, run_id, key)
        history = MetricHistory(
            key=key,
            items=[
                MetricPoint(
                    value=service.metric_value(p.value, p.is_nan), step=p.step, timestamp_ms=p.timestamp_ms
                )
                for p in points
            ],
            total=total,
        )
    return _json(history)


@router.post("/runs/{run_id}/inputs", status_code=204, response_class=Response, responses=ERRORS)
def log_inputs(request: Request, principal: ApiPrincipal, run_id: RunId, body: LogInputs) -> Response:
    """Record the datasets a run consumed (the same name, digest and context is recorded once)."""
    require(principal, Action.TRACKING_WRITE)
    datasets = [
        {
            "name": d.name,
            "digest": d.digest,
            "source_type": d.source_type,
            "source": d.source,
            "schema": d.schema_,
            "profile": d.profile,
            "context": d.context,
        }
        for d in body.datasets
    ]
    with db_of(request).session(write=True) as session:
        run = service.writable_run(session, principal, run_id)
        service.log_inputs(session, principal, run.id, datasets)
    return Response(status_code=204)


# --- artifacts --------------------------------------------------------------------------------


def _run_root(db: Database, principal: Principal, run_id: str, *, write: bool) -> str:
    with db.session() as session:
        run = (
            service.writable_run(session, principal, run_id)
            if write
            else service.get_run(session, principal, run_id)
        )
        if write and run.lifecycle_stage != "active":
            raise BadRequest(f"Run {run.id} is deleted; restore it before logging to it.")
        return service.run_artifact_root(run)


@router.get("/runs/{run_id}/artifacts", response_model=ArtifactList, responses=ERRORS)
def list_artifacts(
    request: Request,
    principal: ApiPrincipal,
    run_id: RunId,
    path: Annotated[str | None, Query(max_length=1024, description="A directory; default: the root.")] = None,
) -> ArtifactList:
    """The direct children of one directory of the run's artifacts."""
    require(principal, Action.TRACKING_READ)
    root = _run_root(db_of(request), principal, run_id, write=False)
    rel = safe_relative_path(path) if path else ""
    with _artifact_errors(rel):
        entries = _store(request).list_dir(f"{root}/{rel}" if rel else root)
    return ArtifactList(
        root_uri=f"mlflow-artifacts:/{root}",
        path=rel,
        files=[
            ArtifactEntry(path=f"{rel}/{e.name}" if rel else e.name, is_dir=e.is_dir, size=e.size)
            for e in entries
        ],
    )


@router.get(
    "/runs/{run_id}/artifacts/{path:path}",
    response_class=StreamingResponse,
    responses={**ERRORS, **FILE_RESPONSE},
)
def download_artifact(
    request: Request, principal: ApiPrincipal, run_id: RunId, path: str
) -> StreamingResponse:
    """One artifact file, streamed."""
    require(principal, Action.TRACKING_READ)
    root = _run_root(db_of(request), principal, run_id, write=False)
    return _stream_file(_store(request), f"{root}/{safe_relative_path(path)}")


def _stream_file(store: ArtifactStore, full: str) -> StreamingResponse:
    """Stream one file of the store as an attachment (404 when it is not a file)."""
    with _artifact_errors(full):
        if not store.is_file(full):
            raise NotFound("Artifact not found.", details={"path": full.split("/", 3)[-1]})
    name = full.rsplit("/", 1)[-1]
    return StreamingResponse(
        store.iter_bytes(full),
        media_type="application/octet-stream",
        headers={"Content-Disposition": f"attachment; filename*=UTF-8''{quote(name)}"},
    )


@router.put(
    "/runs/{run_id}/artifacts/{path:path}",
    status_code=201,
    response_model=ArtifactWritten,
    responses=UPLOAD_ERRORS,
)
async def upload_artifact(
    request: Request, principal: ApiPrincipal, run_id: RunId, path: str
) -> ArtifactWritten:
    """Store the raw request body as one artifact file, streamed to the store. Files larger than
    BRIDGEHEAD_MAX_ARTIFACT_BYTES answer 413 and nothing is kept; an existing file is replaced."""
    require(principal, Action.TRACKING_WRITE)
    rel = safe_relative_path(path)
    limit: int = request.app.state.settings.max_artifact_bytes
    announced = request.headers.get("content-length", "")
    if announced.isdigit() and int(announced) > limit:
        raise _too_large(limit, rel)
    root = await run_in_threadpool(_run_root, db_of(request), principal, run_id, write=True)
    store = _store(request)
    body = blocking_chunks(request.stream())
    with _artifact_errors(rel):
        size = await run_in_threadpool(_write, store, f"{root}/{rel}", body, limit)
    return ArtifactWritten(path=rel, size=size)


def _write(store: ArtifactStore, full: str, body: Iterator[bytes], limit: int) -> int:
    if store.exists(full) and not store.is_file(full):
        raise IsADirectoryError(errno.EISDIR, "is a directory", full)
    return store.put_stream(full, body, max_bytes=limit)


def _too_large(limit: int, path: str) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"Artifact is larger than {limit} bytes (BRIDGEHEAD_MAX_ARTIFACT_BYTES).",
        details={"limit_bytes": limit, "path": path},
    )
