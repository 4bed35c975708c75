"""JSON API: /api/v1/endpoints (deploy, traffic, promote, rollback, retire, invokers, history, stats).

Reading needs ``serving.read`` and follows the endpoint's unit; every change needs ``serving.deploy``, goes
through the ``check_transition`` hook and is audited. A deploy loads the version first: a model that cannot be
loaded is refused with the reason and the endpoint keeps serving what it served.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bridgehead.auth.deps import ApiPrincipal, db_of
from bridgehead.auth.service import Principal
from bridgehead.errors import error_responses
from bridgehead.registry.models import ModelVersion
from bridgehead.serving import service
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
    StatsOut,
    TrafficIn,
)
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
