"""JSON API: /api/v1/endpoints (deploy, traffic, promote, rollback, retire, invokers, history, stats, batch
scoring jobs).

Reading needs ``serving.read`` and follows the endpoint's unit; every change needs ``serving.deploy``, goes
through the ``check_transition`` hook and is audited. A deploy loads the version first: a model that cannot be
loaded is refused with the reason and the endpoint keeps serving what it served.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from bridgehead.auth.deps import ApiPrincipal, db_of
from bridgehead.auth.roles import Action
from bridgehead.auth.service import Principal
from bridgehead.errors import BadRequest, PayloadTooLarge, PermissionDenied, error_responses
from bridgehead.jobs import service as jobs
from bridgehead.jobs.plugin import wake
from bridgehead.jobs.schemas import JobOut, job_out
from bridgehead.registry.models import ModelVersion
from bridgehead.serving import service
from bridgehead.serving.batch import SCORE_KIND
from bridgehead.serving.models import Endpoint, EndpointRevision, Feedback, PredictionHour
from bridgehead.serving.runtime import LATENCY_BUCKETS_MS, ModelRuntime
from bridgehead.serving.schemas import (
    DeployIn,
    EndpointOut,
    HourOut,
    InvokersIn,
    PromoteIn,
    ReasonIn,
    RevisionOut,
    RouteOut,
    ScoreJobIn,
    StatsOut,
    TrafficIn,
)
from bridgehead.store.artifacts import ArtifactStore, blocking_chunks
from bridgehead.store.base import new_id
from bridgehead.tracking import service as tracking
from bridgehead.tracking.schemas import ms_to_datetime

router = APIRouter(prefix="/api/v1", tags=["serving"])
ERRORS = error_responses()

EndpointName = Annotated[str, Path(min_length=1, max_length=100)]


def _routes(session: Session, policy: dict[str, Any]) -> list[RouteOut]:
    return [
        RouteOut(model=r.model, version=r.version, version_id=r.version_id, weight=r.weight, role=r.role)
        for r in service.describe(session, policy)
    ]


def endpoint_out(session: Session, endpoint: Endpoint) -> EndpointOut:
    invokers = endpoint.invokers or {}
    return EndpointOut(
        id=endpoint.id,
        name=endpoint.name,
        environment=endpoint.environment,
        business_unit_id=endpoint.business_unit_id,
        description=endpoint.description,
        status=endpoint.status,
        revision=endpoint.revision,
        routes=_routes(session, endpoint.policy),
        invokers={"units": list(invokers.get("units", [])), "roles": list(invokers.get("roles", []))},
        url=f"/serve/{endpoint.name}/predict",
        created_at=ms_to_datetime(endpoint.created_ms),
        updated_at=ms_to_datetime(endpoint.updated_ms),
    )


def _verifier(request: Request, session: Session, principal: Principal) -> service.Verifier:
    runtime: ModelRuntime = request.app.state.runtime

    def verify(version: ModelVersion) -> None:
        runtime.check(session, principal, version)

    return verify


def hooks_of(request: Request) -> Any:
    # A change is about to be made: this process's inference sees it from the next request on.
    request.app.state.endpoint_cache.invalidate()
    return request.app.state.plugins.hook


@router.get("/endpoints", response_model=list[EndpointOut], responses=ERRORS)
def list_endpoints(
    request: Request,
    principal: ApiPrincipal,
    environment: Annotated[str | None, Query(max_length=20)] = None,
    include_retired: bool = False,
) -> list[EndpointOut]:
    """Endpoints in the caller's unit (every unit for central roles): which versions serve them, with what
    traffic."""
    with db_of(request).session() as session:
        found = service.list_endpoints(
            session, principal, environment=environment, include_retired=include_retired
        )
        return [endpoint_out(session, e) for e in found]


@router.get("/endpoints/{name}", response_model=EndpointOut, responses=ERRORS)
def get_endpoint(request: Request, principal: ApiPrincipal, name: EndpointName) -> EndpointOut:
    with db_of(request).session() as session:
        return endpoint_out(session, service.get_endpoint(session, principal, name))


@router.post("/endpoints/{name}/deploy", response_model=EndpointOut, responses=ERRORS)
def deploy(request: Request, principal: ApiPrincipal, name: EndpointName, body: DeployIn) -> EndpointOut:
    """Deploy a model version (by number, alias or "latest") to the endpoint, created on first deploy.
    ``strategy``: replace, canary (``weight`` %, default 10), ab (default 50) or shadow."""
    with db_of(request).session(write=True) as session:
        endpoint = service.deploy(
            session,
            principal,
            hooks_of(request),
            endpoint=name,
            model=body.model,
            version=body.version,
            environment=body.environment,
            strategy=body.strategy,
            weight=body.weight,
            business_unit_id=body.business_unit_id,
            description=body.description,
            reason=body.reason,
            verify=_verifier(request, session, principal),
        )
        return endpoint_out(session, endpoint)


@router.put("/endpoints/{name}/traffic", response_model=EndpointOut, responses=ERRORS)
def set_traffic(
    request: Request, principal: ApiPrincipal, name: EndpointName, body: TrafficIn
) -> EndpointOut:
    """Set the whole traffic split: routes with weights summing to 100, and shadows."""
    with db_of(request).session(write=True) as session:
        endpoint = service.set_traffic(
            session,
            principal,
            hooks_of(request),
            name,
            routes=[(r.model, r.version, r.weight) for r in body.routes],
            shadows=[(s.model, s.version) for s in body.shadows],
            reason=body.reason,
            verify=_verifier(request, session, principal),
        )
        return endpoint_out(session, endpoint)


@router.post("/endpoints/{name}/promote", response_model=EndpointOut, responses=ERRORS)
def promote(request: Request, principal: ApiPrincipal, name: EndpointName, body: PromoteIn) -> EndpointOut:
    """Give one version all the traffic: the named one, or the challenger (smallest share, else the shadow)."""
    with db_of(request).session(write=True) as session:
        endpoint = service.promote(
            session,
            principal,
            hooks_of(request),
            name,
            model=body.model,
            version=body.version,
            reason=body.reason,
        )
        return endpoint_out(session, endpoint)


@router.post("/endpoints/{name}/rollback", response_model=EndpointOut, responses=ERRORS)
def rollback(request: Request, principal: ApiPrincipal, name: EndpointName, body: ReasonIn) -> EndpointOut:
    """Restore the configuration in force before the current one (repeat to go further back)."""
    with db_of(request).session(write=True) as session:
        endpoint = service.rollback(session, principal, hooks_of(request), name, reason=body.reason)
        return endpoint_out(session, endpoint)


@router.post("/endpoints/{name}/retire", response_model=EndpointOut, responses=ERRORS)
def retire(request: Request, principal: ApiPrincipal, name: EndpointName, body: ReasonIn) -> EndpointOut:
    """Take the endpoint out of service (it answers 409 until deployed again); history and logs stay."""
    with db_of(request).session(write=True) as session:
        endpoint = service.retire(session, principal, hooks_of(request), name, reason=body.reason)
        return endpoint_out(session, endpoint)


@router.put("/endpoints/{name}/invokers", response_model=EndpointOut, responses=ERRORS)
def set_invokers(
    request: Request, principal: ApiPrincipal, name: EndpointName, body: InvokersIn
) -> EndpointOut:
    """Let other business units (or roles) call the endpoint; its own unit and central staff always may."""
    request.app.state.endpoint_cache.invalidate()
    with db_of(request).session(write=True) as session:
        endpoint = service.set_invokers(session, principal, name, units=body.units, roles=body.roles)
        return endpoint_out(session, endpoint)


@router.get("/endpoints/{name}/revisions", response_model=list[RevisionOut], responses=ERRORS)
def list_revisions(request: Request, principal: ApiPrincipal, name: EndpointName) -> list[RevisionOut]:
    """Every configuration the endpoint has had, newest first."""
    with db_of(request).session() as session:
        return [_revision_out(session, r) for r in service.revisions(session, principal, name)]


def _revision_out(session: Session, r: EndpointRevision) -> RevisionOut:
    return RevisionOut(
        revision=r.revision,
        source_revision=r.source_revision,
        action=r.action,
        routes=_routes(session, r.policy),
        reason=r.reason,
        author_id=r.author_id,
        created_at=ms_to_datetime(r.created_ms),
    )


def _percentile(buckets: list[int], q: float) -> float | None:
    total = sum(buckets)
    if total == 0:
        return None
    target = q * total
    seen = 0
    for count, bound in zip(buckets, (*LATENCY_BUCKETS_MS, float("inf")), strict=False):
        seen += count
        if seen >= target:
            return bound if bound != float("inf") else LATENCY_BUCKETS_MS[-1]
    return LATENCY_BUCKETS_MS[-1]


@router.get("/endpoints/{name}/stats", response_model=StatsOut, responses=ERRORS)
def stats(
    request: Request,
    principal: ApiPrincipal,
    name: EndpointName,
    hours: Annotated[int, Query(ge=1, le=24 * 90)] = 24,
) -> StatsOut:
    """Per hour, version and role: rows, errors, mean/max latency and p50/p99 (upper bounds of the latency
    bucket); and the feedback received so far by kind."""
    with db_of(request).session() as session:
        endpoint = service.get_endpoint(session, principal, name)
        since = (tracking.now_ms() // 3_600_000 - hours + 1) * 3_600_000
        rows = session.scalars(
            select(PredictionHour)
            .where(PredictionHour.endpoint_id == endpoint.id, PredictionHour.hour_ms >= since)
            .order_by(PredictionHour.hour_ms, PredictionHour.model_name, PredictionHour.version)
        ).all()
        kinds: dict[str, int] = dict(
            session.execute(  # type: ignore[arg-type]
                select(Feedback.kind, func.count())
                .where(Feedback.endpoint_id == endpoint.id)
                .group_by(Feedback.kind)
            ).all()
        )
        return StatsOut(
            endpoint=endpoint.name,
            hours=[
                HourOut(
                    hour=ms_to_datetime(h.hour_ms),
                    model=h.model_name,
                    version=h.version,
                    role=h.role,
                    requests=h.requests,
                    rows=h.rows,
                    errors=h.errors,
                    mean_latency_ms=h.latency_sum_ms / h.requests if h.requests else 0.0,
                    max_latency_ms=h.latency_max_ms,
                    p50_latency_ms=_percentile(list(h.latency_buckets or []), 0.5),
                    p99_latency_ms=_percentile(list(h.latency_buckets or []), 0.99),
                )
                for h in rows
            ],
            feedback={"label": int(kinds.get("label", 0)), "override": int(kinds.get("override", 0))},
        )


# --- batch scoring jobs ---------------------------------------------------------------------------------------

PARQUET_TYPES = ("application/vnd.apache.parquet", "application/octet-stream")
_BINARY = {"schema": {"type": "string", "format": "binary"}}
SCORE_JOB_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/vnd.apache.parquet": _BINARY,
            "application/octet-stream": _BINARY,
            "application/json": {
                "schema": {
                    "type": "object",
                    "title": "ScoreJobIn",
                    "required": ["dataset_id", "version"],
                    "additionalProperties": False,
                    "properties": {
                        "dataset_id": {"type": "string", "minLength": 1, "maxLength": 32},
                        "version": {"type": "integer", "minimum": 1, "maximum": 2_147_483_647},
                    },
                }
            },
        },
    }
}


async def _read_capped(request: Request, limit: int) -> bytes:
    """The whole body, refused past ``limit`` bytes (this route is exempt from the global body limit because
    its Parquet uploads are streamed; its JSON bodies are held to it here)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(
                f"Request body is larger than {limit} bytes.", details={"limit_bytes": limit}
            )
    return bytes(body)


def _enqueue_score(
    request: Request, session: Session, principal: Principal, endpoint: Endpoint, job_id: str,
    source: dict[str, Any], batch_rows: int,
) -> JobOut:  # fmt: skip
    params = {
        "endpoint": endpoint.name,
        "endpoint_id": endpoint.id,
        "input": source,
        "batch_rows": batch_rows,
    }
    job = jobs.enqueue(
        session,
        principal,
        SCORE_KIND,
        params,
        job_id=job_id,
        max_attempts=request.app.state.settings.jobs_max_attempts,
    )
    return job_out(job)


def _score_upload(
    request: Request, principal: Principal, name: str, chunks: Any, limit: int, batch_rows: int
) -> JobOut:
    from bridgehead.data.readers import open_source

    db = db_of(request)
    store: ArtifactStore = request.app.state.artifacts
    with db.session() as session:  # refuse before storing a byte
        service.endpoint_for_invoke(session, principal, name)
    job_id = new_id()
    path = f"jobs/{job_id}/input.parquet"
    try:
        store.put_stream(path, chunks, max_bytes=limit)
        fs, full, local = store.locate(path)
        open_source(full, "parquet", filesystem=None if local else fs)  # a readable Parquet file, or 400
        with db.session(write=True) as session:
            endpoint = service.endpoint_for_invoke(session, principal, name)
            source = {"kind": "upload", "path": path, "format": "parquet"}
            return _enqueue_score(request, session, principal, endpoint, job_id, source, batch_rows)
    except BaseException:
        store.delete(f"jobs/{job_id}")
        raise


def _score_dataset(
    request: Request, principal: Principal, name: str, body: ScoreJobIn, batch_rows: int
) -> JobOut:
    from bridgehead.data import service as data

    with db_of(request).session(write=True) as session:
        endpoint = service.endpoint_for_invoke(session, principal, name)
        dataset = data.get_dataset(session, principal, body.dataset_id)
        version = data.get_version(session, dataset, body.version)
        if version.storage != "stored":
            raise BadRequest(
                "This version's data lives outside Bridgehead (on the client that registered it), so the server "
                "cannot read it: upload the file as the request body instead, or score it where it is with "
                "`bridgehead score`.",
                details={"dataset_id": dataset.id, "version": version.version},
            )
        masked = data.masked_columns(principal, version)
        if masked:
            # The output carries the input columns: scoring would hand over values the caller sees masked.
            raise PermissionDenied(
                f"Columns {', '.join(masked)} of this version are tagged personal or sensitive and your role sees "
                "them masked; scoring it would write them to the output.",
                details={"action": Action.DATA_PII.value, "role": principal.role.value, "columns": masked},
            )
        data.record_read(
            session, principal, dataset, f"version {version.version} scored on {name}", masked=[]
        )
        source = {
            "kind": "dataset",
            "path": version.location,
            "format": version.format,
            "dataset_id": dataset.id,
            "dataset_version": version.version,
        }
        return _enqueue_score(request, session, principal, endpoint, new_id(), source, batch_rows)


@router.post(
    "/endpoints/{name}/score-jobs",
    status_code=202,
    response_model=JobOut,
    responses=error_responses(400, 401, 403, 404, 409, 413, 422),
    openapi_extra=SCORE_JOB_BODY,
)
async def create_score_job(
    request: Request,
    principal: ApiPrincipal,
    name: EndpointName,
    batch_rows: Annotated[int, Query(ge=1, le=100_000, description="Rows scored per chunk.")] = 10_000,
) -> JobOut:
    """Score a file of any size in the background with the endpoint's current serving version (the one taking
    the most traffic). The body is either the Parquet file itself (`application/vnd.apache.parquet` or
    `application/octet-stream`, streamed to the artifact store, up to BRIDGEHEAD_MAX_ARTIFACT_BYTES), or JSON
    naming a dataset version uploaded to Bridgehead (`{"dataset_id": ..., "version": ...}`). Answers 202 with
    the job; follow it at `/api/v1/jobs/{id}` and download the output (the inputs plus `prediction`,
    `probabilities` for classifiers and `version`) from `/api/v1/jobs/{id}/output`. Needs the right to invoke
    the endpoint."""
    settings = request.app.state.settings
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media == "application/json":
        raw = await _read_capped(request, settings.max_body_bytes)
        try:
            body = ScoreJobIn.model_validate_json(raw)
        except ValidationError as exc:
            raise RequestValidationError(
                [
                    {**e, "loc": ("body", *e["loc"])}
                    for e in exc.errors(include_url=False, include_context=False)
                ]
            ) from None
        out = await run_in_threadpool(_score_dataset, request, principal, name, body, batch_rows)
    elif media in PARQUET_TYPES:
        limit: int = settings.max_artifact_bytes
        announced = request.headers.get("content-length", "")
        if announced.isdigit() and int(announced) > limit:
            raise PayloadTooLarge(
                f"The file is larger than {limit} bytes (BRIDGEHEAD_MAX_ARTIFACT_BYTES).",
                details={"limit_bytes": limit},
            )
        chunks = blocking_chunks(request.stream())
        out = await run_in_threadpool(_score_upload, request, principal, name, chunks, limit, batch_rows)
    else:
        raise BadRequest(
            "Send the input as a Parquet file (Content-Type application/vnd.apache.parquet or "
            "application/octet-stream), or as JSON naming a dataset version (application/json).",
            details={"content_type": media},
        )
    wake(request.app)
    return out
