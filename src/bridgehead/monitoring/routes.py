"""JSON API: monitors (/api/v1/endpoints/{name}/monitors, /api/v1/monitors), their runs and reports, incidents
and notification channels.

Reading needs ``monitoring.read`` and follows the unit; setting up monitors and channels ``monitoring.manage``;
acknowledging, assigning and resolving incidents ``incident.handle``. Every change is audited.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, cast

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from sqlalchemy.orm import Session

from bridgehead.auth.deps import ApiPrincipal, db_of
from bridgehead.errors import error_responses
from bridgehead.jobs.schemas import Status
from bridgehead.monitoring import service
from bridgehead.monitoring.html import render_report
from bridgehead.monitoring.models import Incident, Monitor, MonitorRun, NotificationChannel
from bridgehead.monitoring.schemas import (
    AcknowledgeIn,
    AssignIn,
    ChannelCreated,
    ChannelIn,
    ChannelOut,
    IncidentOut,
    JobRef,
    MonitorDetail,
    MonitorIn,
    MonitorOut,
    MonitorPatch,
    NotificationOut,
    ResolveIn,
    RunOut,
    RunSummary,
)
from bridgehead.serving.models import Endpoint

router = APIRouter(prefix="/api/v1", tags=["monitoring"])
ERRORS = error_responses()
Id = Annotated[str, Path(min_length=1, max_length=32)]
EndpointName = Annotated[str, Path(min_length=1, max_length=100)]


def _dt(ms: int | None) -> datetime | None:
    return datetime.fromtimestamp(ms / 1000, UTC) if ms is not None else None


def monitor_out(session: Session, m: Monitor) -> MonitorOut:
    endpoint = session.get(Endpoint, m.endpoint_id)
    return MonitorOut(
        id=m.id,
        endpoint=endpoint.name if endpoint else "",
        name=m.name,
        description=m.description,
        business_unit_id=m.business_unit_id,
        every_minutes=m.every_minutes,
        every_rows=m.every_rows,
        window_minutes=m.window_minutes,
        reference_version_id=m.reference_version_id,
        target_column=m.target_column,
        settings=m.settings or {},
        rules=m.rules or [],
        enabled=m.enabled,
        owner_id=m.owner_id,
        next_run=_dt(m.next_run_ms),
        last_run=_dt(m.last_run_ms),
        created=_dt(m.created_ms),
    )


def run_summary(r: MonitorRun) -> RunSummary:
    return RunSummary(
        id=r.id,
        status=r.status,
        trigger=r.trigger,
        window_start=_dt(r.window_start_ms),
        window_end=_dt(r.window_end_ms),
        rows=r.rows,
        metrics=r.metrics or {},
        breaches=r.breaches or [],
        error=r.error,
        incident_id=r.incident_id,
    )


def incident_out(session: Session, i: Incident, *, notifications: bool = True) -> IncidentOut:
    endpoint = session.get(Endpoint, i.endpoint_id)
    return IncidentOut(
        id=i.id,
        title=i.title,
        severity=i.severity,
        status=i.status,
        endpoint=endpoint.name if endpoint else None,
        monitor_id=i.monitor_id,
        business_unit_id=i.business_unit_id,
        owner_id=i.owner_id,
        opened=_dt(i.opened_ms),
        acknowledged=_dt(i.acknowledged_ms),
        resolved=_dt(i.resolved_ms),
        seconds_to_acknowledge=(i.acknowledged_ms - i.opened_ms) / 1000 if i.acknowledged_ms else None,
        seconds_to_resolve=(i.resolved_ms - i.opened_ms) / 1000 if i.resolved_ms else None,
        resolution=i.resolution,
        occurrences=i.occurrences,
        breaches=i.breaches or [],
        run_ids=list(i.run_ids or []),
        notifications=[notification_out(d) for d in service.incident_deliveries(session, i)]
        if notifications
        else None,
    )


def notification_out(d: service.Delivery) -> NotificationOut:
    return NotificationOut(
        job_id=d.job.id,
        channel_id=d.channel_id,
        channel=d.channel.name if d.channel else None,
        kind=d.channel.kind if d.channel else None,
        event=d.event,
        status=cast(Status, d.job.status),
        attempts=d.job.attempts,
        max_attempts=d.job.max_attempts,
        error=d.job.error,
        queued=d.job.created_at,
        finished=d.job.finished_at,
    )


def channel_out(c: NotificationChannel) -> ChannelOut:
    return ChannelOut(
        id=c.id,
        name=c.name,
        kind=c.kind,
        target=c.target,
        min_severity=c.min_severity,
        enabled=c.enabled,
        business_unit_id=c.business_unit_id,
        created=_dt(c.created_ms),
    )


# --- monitors -----------------------------------------------------------------------------------------------


@router.post("/endpoints/{name}/monitors", response_model=MonitorOut, status_code=201, responses=ERRORS)
def create_monitor(
    request: Request, principal: ApiPrincipal, name: EndpointName, body: MonitorIn
) -> MonitorOut:
    """Watch the endpoint: a schedule (every_minutes, or every_rows), the window each run reads, the reference
    (default: the serving version's training data), settings and rules (default: the standard set)."""
    every_minutes = body.every_minutes if body.every_minutes is not None or body.every_rows else 60
    with db_of(request).session(write=True) as session:
        monitor = service.create_monitor(
            session,
            principal,
            name,
            name=body.name,
            description=body.description,
            every_minutes=every_minutes,
            every_rows=body.every_rows,
            window_minutes=body.window_minutes,
            reference_version_id=body.reference_version_id,
            target_column=body.target_column,
            settings=body.settings.stored(),
            rules=[r.model_dump() for r in body.rules] if body.rules is not None else None,
        )
        return monitor_out(session, monitor)


@router.get("/monitors", response_model=list[MonitorOut], responses=ERRORS)
def list_monitors(
    request: Request,
    principal: ApiPrincipal,
    endpoint: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
) -> list[MonitorOut]:
    with db_of(request).session() as session:
        return [monitor_out(session, m) for m in service.list_monitors(session, principal, endpoint)]


@router.get("/monitors/{monitor_id}", response_model=MonitorDetail, responses=ERRORS)
def get_monitor(request: Request, principal: ApiPrincipal, monitor_id: Id) -> MonitorDetail:
    """The monitor and its latest runs (newest first)."""
    with db_of(request).session() as session:
        monitor = service.get_monitor(session, principal, monitor_id)
        runs = [run_summary(r) for r in service.runs_of(session, monitor)]
        return MonitorDetail(**monitor_out(session, monitor).model_dump(), runs=runs)


@router.patch("/monitors/{monitor_id}", response_model=MonitorOut, responses=ERRORS)
def update_monitor(
    request: Request, principal: ApiPrincipal, monitor_id: Id, body: MonitorPatch
) -> MonitorOut:
    changes = body.model_dump(exclude_unset=True)
    if "settings" in changes and body.settings is not None:
        changes["settings"] = body.settings.stored()
    if "rules" in changes and body.rules is not None:
        changes["rules"] = [r.model_dump() for r in body.rules]
    with db_of(request).session(write=True) as session:
        return monitor_out(session, service.update_monitor(session, principal, monitor_id, **changes))


@router.delete("/monitors/{monitor_id}", status_code=204, responses=ERRORS)
def delete_monitor(request: Request, principal: ApiPrincipal, monitor_id: Id) -> None:
    with db_of(request).session(write=True) as session:
        service.delete_monitor(session, principal, monitor_id)


@router.post("/monitors/{monitor_id}/run", response_model=JobRef, status_code=202, responses=ERRORS)
def run_monitor(request: Request, principal: ApiPrincipal, monitor_id: Id) -> JobRef:
    """Run the monitor now, in the background: follow the job at /api/v1/jobs/{job_id}."""
    with db_of(request).session(write=True) as session:
        job = service.run_now(session, principal, monitor_id)
        ref = JobRef(job_id=job.id, status=job.status)
    from bridgehead.jobs.plugin import wake

    wake(request.app)
    return ref


@router.get("/monitors/{monitor_id}/runs", response_model=list[RunSummary], responses=ERRORS)
def list_runs(
    request: Request,
    principal: ApiPrincipal,
    monitor_id: Id,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[RunSummary]:
    with db_of(request).session() as session:
        monitor = service.get_monitor(session, principal, monitor_id)
        return [run_summary(r) for r in service.runs_of(session, monitor, limit)]


@router.get("/monitor-runs/{run_id}", response_model=RunOut, responses=ERRORS)
def get_run(request: Request, principal: ApiPrincipal, run_id: Id) -> RunOut:
    """One run with its whole report (per column: test, statistic, threshold, verdict, distributions)."""
    with db_of(request).session() as session:
        run, monitor = service.get_run(session, principal, run_id)
        return RunOut(**run_summary(run).model_dump(), monitor_id=monitor.id, report=run.report or {})


@router.get(
    "/monitor-runs/{run_id}/report.html",
    responses={**ERRORS, 200: {"content": {"text/html": {"schema": {"type": "string"}}}}},
    response_class=Response,
)
def report_html(request: Request, principal: ApiPrincipal, run_id: Id) -> HTMLResponse:
    """The run's report as one standalone HTML file (charts inline, nothing fetched), to keep or send."""
    with db_of(request).session() as session:
        run, monitor = service.get_run(session, principal, run_id)
        endpoint = session.get(Endpoint, monitor.endpoint_id)
        html = render_report(run, monitor, endpoint.name if endpoint else "")
    filename = f"drift-report-{run.id}.html"
    return HTMLResponse(html, headers={"Content-Disposition": f'attachment; filename="{filename}"'})


@router.get("/monitor-runs/{run_id}/report.json", responses=ERRORS)
def report_json(request: Request, principal: ApiPrincipal, run_id: Id) -> JSONResponse:
    """The run's report as a JSON file download."""
    with db_of(request).session() as session:
        run, _ = service.get_run(session, principal, run_id)
        body = run_summary(run).model_dump(mode="json") | {"report": run.report or {}}
    return JSONResponse(
        body, headers={"Content-Disposition": f'attachment; filename="drift-report-{run.id}.json"'}
    )


# --- incidents ----------------------------------------------------------------------------------------------


@router.get("/incidents", response_model=list[IncidentOut], responses=ERRORS)
def list_incidents(
    request: Request,
    principal: ApiPrincipal,
    status: Annotated[str | None, Query(pattern="^(open|acknowledged|resolved)$")] = None,
    endpoint: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[IncidentOut]:
    with db_of(request).session() as session:
        found = service.list_incidents(session, principal, status=status, endpoint_name=endpoint, limit=limit)
        return [incident_out(session, i, notifications=False) for i in found]


@router.get("/incidents/{incident_id}", response_model=IncidentOut, responses=ERRORS)
def get_incident(request: Request, principal: ApiPrincipal, incident_id: Id) -> IncidentOut:
    with db_of(request).session() as session:
        return incident_out(session, service.get_incident(session, principal, incident_id))


@router.post("/incidents/{incident_id}/acknowledge", response_model=IncidentOut, responses=ERRORS)
def acknowledge(
    request: Request, principal: ApiPrincipal, incident_id: Id, body: AcknowledgeIn
) -> IncidentOut:
    with db_of(request).session(write=True) as session:
        return incident_out(session, service.acknowledge(session, principal, incident_id, body.note))


@router.post("/incidents/{incident_id}/resolve", response_model=IncidentOut, responses=ERRORS)
def resolve(request: Request, principal: ApiPrincipal, incident_id: Id, body: ResolveIn) -> IncidentOut:
    with db_of(request).session(write=True) as session:
        return incident_out(
            session, service.resolve_incident(session, principal, incident_id, body.resolution)
        )


@router.post("/incidents/{incident_id}/assign", response_model=IncidentOut, responses=ERRORS)
def assign(request: Request, principal: ApiPrincipal, incident_id: Id, body: AssignIn) -> IncidentOut:
    with db_of(request).session(write=True) as session:
        return incident_out(session, service.assign(session, principal, incident_id, body.owner_id))


# --- notification channels ----------------------------------------------------------------------------------


@router.get("/notification-channels", response_model=list[ChannelOut], responses=ERRORS)
def list_channels(request: Request, principal: ApiPrincipal) -> list[ChannelOut]:
    with db_of(request).session() as session:
        return [channel_out(c) for c in service.list_channels(session, principal)]


@router.post("/notification-channels", response_model=ChannelCreated, status_code=201, responses=ERRORS)
def create_channel(request: Request, principal: ApiPrincipal, body: ChannelIn) -> ChannelCreated:
    """A webhook (HMAC-signed; the signing secret is in this answer only) or e-mail channel for your unit's
    incidents at or above ``min_severity``."""
    with db_of(request).session(write=True) as session:
        channel, secret = service.create_channel(
            session,
            principal,
            name=body.name,
            kind=body.kind,
            target=body.target,
            min_severity=body.min_severity,
            server_key=request.app.state.settings.resolved_secret_key(),
        )
        return ChannelCreated(**channel_out(channel).model_dump(), secret=secret)


@router.delete("/notification-channels/{channel_id}", status_code=204, responses=ERRORS)
def delete_channel(request: Request, principal: ApiPrincipal, channel_id: Id) -> None:
    with db_of(request).session(write=True) as session:
        service.delete_channel(session, principal, channel_id)
