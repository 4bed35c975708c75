"""Console: Monitoring — every monitor one may see with its latest verdict; an endpoint's monitoring page
(drift share, per-feature PSI, quality against the validation baseline and fairness gaps over the monitor's
runs, the latest run's per-column verdicts, the endpoint's incidents, "Run now" and a form to create a first
monitor); a run's report page with its HTML and JSON downloads; the incident inbox and an incident's page with
its breaches, evidence runs, timeline and the acknowledge and resolve forms.

Everything goes through the monitoring service with the same permissions as the JSON API: reading needs
monitoring.read and follows the unit (another unit's monitor, run or incident is "not found"); creating a
monitor and running it now need monitoring.manage; acknowledging and resolving need incident.handle."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from markupsafe import Markup
from sqlalchemy import select
from sqlalchemy.orm import Session

from bridgehead.audit.models import AuditEvent
from bridgehead.auth.deps import PagePrincipal, check_form_csrf, db_of
from bridgehead.auth.models import Person
from bridgehead.auth.roles import Action
from bridgehead.auth.service import Principal, require
from bridgehead.errors import BridgeheadError, NotFound, ValidationFailed
from bridgehead.monitoring import rules as rules_mod
from bridgehead.monitoring import service
from bridgehead.monitoring.html import CUR_COLOR, REF_COLOR, render_report, report_body
from bridgehead.monitoring.models import Incident, Monitor, MonitorRun
from bridgehead.monitoring.routes import run_summary
from bridgehead.org import service as org
from bridgehead.serving import service as serving
from bridgehead.serving.models import Endpoint
from bridgehead.web import Console, format_ms

router = APIRouter(include_in_schema=False)

RUNS = 50  # runs drawn on an endpoint's page
HEAT_RUNS = 24  # runs in the feature-by-run table
EVIDENCE = 50  # evidence runs listed on an incident's page
INBOX = 500  # incidents read for the inbox
STATUS_TABS = (("", "Active"), ("open", "Open"), ("acknowledged", "Acknowledged"), ("resolved", "Resolved"))
QUALITY = (("accuracy", "Accuracy", 0), ("f1", "F1", 1), ("roc_auc", "ROC AUC", 2))

EndpointName = Annotated[str, Path(min_length=1, max_length=100)]
Id = Annotated[str, Path(min_length=1, max_length=32)]
Csrf = Annotated[str, Form(max_length=500)]
Confirm = Annotated[str, Form(max_length=10)]
TextField = Annotated[str, Form(max_length=2000)]
NumberField = Annotated[str, Form(max_length=12)]


def _console(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def _people(session: Session, ids: Sequence[str | None]) -> dict[str, str]:
    wanted = sorted({i for i in ids if i})
    if not wanted:
        return {}
    return dict(session.execute(select(Person.id, Person.name).where(Person.id.in_(wanted))).tuples().all())


def _units(session: Session) -> dict[str, str]:
    return {u.id: u.name for u in org.list_units(session)}


def _done(url: str, message: str) -> Response:
    joiner = "&" if "?" in url else "?"
    return RedirectResponse(f"{url}{joiner}notice={quote(message)}", status_code=303)


def _refusal(exc: BridgeheadError) -> bool:
    """Errors answered with the error page (not found, not allowed), not shown on the page of the form."""
    return isinstance(exc, NotFound) or (exc.status == 403 and "action" in exc.details)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


# --- wording ------------------------------------------------------------------------------------------------


def _minutes(n: int) -> str:
    if n % 1440 == 0:
        days = n // 1440
        return "day" if days == 1 else f"{days} days"
    if n % 60 == 0:
        hours = n // 60
        return "hour" if hours == 1 else f"{hours} h"
    return f"{n} min"


def schedule_text(monitor: Monitor) -> str:
    if monitor.every_rows:
        return f"every {monitor.every_rows:,} rows"
    if monitor.every_minutes == 60:
        return "hourly"
    if monitor.every_minutes == 1440:
        return "daily"
    return f"every {_minutes(monitor.every_minutes or 0)}"


def window_text(monitor: Monitor) -> str:
    return "last 24 h" if monitor.window_minutes == 1440 else f"last {_minutes(monitor.window_minutes)}"


def _duration_s(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{int(seconds)} s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} m"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def _span(start_ms: int | None, end_ms: int | None) -> str:
    if start_ms is None or end_ms is None:
        return ""
    return _duration_s((end_ms - start_ms) / 1000)


# --- runs ---------------------------------------------------------------------------------------------------


@dataclass
class RunView:
    """One run as the pages show it: its verdicts and the figures the charts and tables need."""

    run: MonitorRun
    label: str  # the window's end, UTC
    drift_share: float | None
    drifted: int | None
    columns: int | None
    dataset_drift: bool
    accuracy: float | None
    baseline: dict[str, float]
    current: dict[str, float]
    breaches: int

    @property
    def decline(self) -> float | None:
        base = self.baseline.get("accuracy")
        return None if base is None or self.accuracy is None else self.accuracy - base


def run_view(run: MonitorRun) -> RunView:
    metrics = run.metrics or {}
    report = run.report or {}
    drift = report.get("drift") or {}
    performance = report.get("performance") or {}
    current = {k: float(v) for k, v in (performance.get("current") or {}).items() if _number(v) is not None}
    baseline = {k: float(v) for k, v in (performance.get("baseline") or {}).items() if _number(v) is not None}
    return RunView(
        run=run,
        label=format_ms(run.window_end_ms).removesuffix(" UTC"),
        drift_share=_number(metrics.get("drift_share")),
        drifted=drift.get("n_drifted") if run.status == "succeeded" else None,
        columns=drift.get("n_columns") if run.status == "succeeded" else None,
        dataset_drift=bool(drift.get("dataset_drift")),
        accuracy=_number(metrics.get("accuracy")),
        baseline=baseline,
        current=current,
        breaches=len(run.breaches or []),
    )


def _series(name: str, x: list[str], y: list[float | None], color: int, **more: Any) -> dict[str, Any]:
    return {"name": name, "x": x, "y": [None if v is None else round(v, 5) for v in y], "color": color} | more


def _constant(name: str, x: list[str], value: float, color: int = 7) -> dict[str, Any]:
    return _series(name, x, [value] * len(x), color, dash="dash")


def run_charts(monitor: Monitor, runs: Sequence[MonitorRun]) -> list[tuple[str, str, dict[str, Any]]]:
    """The charts over the monitor's succeeded runs (oldest first): drift share, PSI per feature, quality
    against the baseline, fairness gaps. A chart with nothing to draw is left out."""
    done = [r for r in runs if r.status == "succeeded" and r.rows]
    if not done:
        return []
    views = [run_view(r) for r in done]
    x = [v.label for v in views]
    charts: list[tuple[str, str, dict[str, Any]]] = []
    share = float((monitor.settings or {}).get("drift_share", 0.5))
    charts.append(
        (
            "Drift share",
            "share of the inputs that drifted, per run",
            {
                "kind": "line",
                "x_title": "window end (UTC)",
                "y_title": "share of inputs",
                "series": [
                    _series("drifted share", x, [v.drift_share for v in views], 0),
                    _constant(f"dataset drift at {share:g}", x, share, 5),
                ],
            },
        )
    )
    features: list[str] = []
    for r in done:
        for c in (r.report or {}).get("drift", {}).get("columns") or []:
            if c.get("column") not in features:
                features.append(str(c.get("column")))
    if features:
        charts.append(
            (
                "PSI per feature",
                "population stability index; 0.25 is significant",
                {
                    "kind": "line",
                    "x_title": "window end (UTC)",
                    "y_title": "PSI",
                    "series": [
                        _series(f, x, [_number((r.metrics or {}).get(f"psi:{f}")) for r in done], i)
                        for i, f in enumerate(features)
                    ]
                    + [_constant("significant (0.25)", x, 0.25)],
                },
            )
        )
    quality = [
        _series(label, x, [v.current.get(key) for v in views], color)
        for key, label, color in QUALITY
        if any(v.current.get(key) is not None for v in views)
    ]
    if quality:
        baseline = next(
            (v.baseline.get("accuracy") for v in reversed(views) if "accuracy" in v.baseline), None
        )
        if baseline is not None:
            quality.append(_constant(f"baseline accuracy {baseline:.3g}", x, baseline, 7))
        charts.append(
            (
                "Quality against the baseline",
                "on the labelled rows of each window",
                {"kind": "line", "x_title": "window end (UTC)", "y_title": "score", "series": quality},
            )
        )
    gaps = [
        ("demographic_parity_difference", "demographic parity difference", 3),
        ("equalized_odds_difference", "equalized odds difference", 4),
        ("disparate_impact_ratio", "disparate impact ratio", 5),
    ]
    fairness = [
        _series(label, x, [_number((r.metrics or {}).get(key)) for r in done], color)
        for key, label, color in gaps
        if any((r.metrics or {}).get(key) is not None for r in done)
    ]
    if fairness:
        fairness.append(_constant("four-fifths rule (0.8)", x, 0.8, 7))
        charts.append(
            (
                "Fairness gaps",
                "worst protected attribute per run",
                {
                    "kind": "line",
                    "x_title": "window end (UTC)",
                    "y_title": "gap or ratio",
                    "series": fairness,
                },
            )
        )
    return charts


def heat_table(runs: Sequence[MonitorRun]) -> dict[str, Any]:
    """Feature by run (oldest first): each cell the column's PSI, classed by its verdict and PSI band."""
    done = [r for r in runs if r.status == "succeeded" and r.rows][-HEAT_RUNS:]
    features: list[str] = []
    cells: dict[tuple[str, str], dict[str, Any]] = {}
    for r in done:
        for c in (r.report or {}).get("drift", {}).get("columns") or []:
            name = str(c.get("column"))
            if name not in features:
                features.append(name)
            psi = _number(c.get("psi"))
            band = c.get("psi_band") or "none"
            css = "heat-drift" if c.get("drifted") else f"heat-{band}"
            if c.get("statistic") is None:
                css = "heat-none"
            cells[(name, r.id)] = {
                "css": css,
                "text": "—" if psi is None else f"{psi:.2f}",
                "title": (
                    f"{name} · {format_ms(r.window_end_ms)}: {c.get('test')} score "
                    f"{_number(c.get('score')) if c.get('score') is not None else '—'}, PSI "
                    f"{'—' if psi is None else f'{psi:.3f}'} ({band}), {'drift' if c.get('drifted') else 'stable'}"
                ),
            }
    return {
        "runs": [(r.id, format_ms(r.window_end_ms)[11:16], format_ms(r.window_end_ms)[:10]) for r in done],
        "features": features,
        "cells": cells,
    }


def latest_columns(run: MonitorRun | None) -> list[dict[str, Any]]:
    if run is None or run.status != "succeeded":
        return []
    out = []
    for c in (run.report or {}).get("drift", {}).get("columns") or []:
        out.append(
            {
                "column": c.get("column"),
                "test": c.get("test"),
                "statistic": _number(c.get("statistic")),
                "score": _number(c.get("score")),
                "threshold": _number(c.get("threshold")),
                "psi": _number(c.get("psi")),
                "band": c.get("psi_band"),
                "drifted": bool(c.get("drifted")),
                "tested": c.get("statistic") is not None,
            }
        )
    return sorted(out, key=lambda c: (not c["drifted"], -(c["psi"] or 0.0)))


# --- incidents ----------------------------------------------------------------------------------------------


@dataclass
class IncidentView:
    incident: Incident
    endpoint: str
    monitor: str

    @property
    def open_for(self) -> str:
        end = self.incident.resolved_ms if self.incident.resolved_ms is not None else service.now_ms()
        return _span(self.incident.opened_ms, end)

    @property
    def to_acknowledge(self) -> str:
        return _span(self.incident.opened_ms, self.incident.acknowledged_ms)

    @property
    def to_resolve(self) -> str:
        return _span(self.incident.opened_ms, self.incident.resolved_ms)


def _incident_views(session: Session, found: Sequence[Incident]) -> list[IncidentView]:
    endpoints = {i.endpoint_id for i in found}
    monitors = {i.monitor_id for i in found}
    names = (
        dict(
            session.execute(select(Endpoint.id, Endpoint.name).where(Endpoint.id.in_(endpoints)))
            .tuples()
            .all()
        )
        if endpoints
        else {}
    )
    monitor_names = (
        dict(session.execute(select(Monitor.id, Monitor.name).where(Monitor.id.in_(monitors))).tuples().all())
        if monitors
        else {}
    )
    return [
        IncidentView(i, names.get(i.endpoint_id, "?"), monitor_names.get(i.monitor_id, "?")) for i in found
    ]


def _mean_seconds(pairs: Sequence[tuple[int, int | None]]) -> float | None:
    spans = [(end - start) / 1000 for start, end in pairs if end is not None]
    return sum(spans) / len(spans) if spans else None


# --- overview -----------------------------------------------------------------------------------------------


@router.get("/monitoring")
def monitoring_page(request: Request, principal: PagePrincipal) -> Response:
    require(principal, Action.MONITORING_READ)
    with db_of(request).session() as session:
        monitors = service.list_monitors(session, principal)
        endpoints = {e.id: e for e in serving.list_endpoints(session, principal, include_retired=True)}
        active = service.list_incidents(session, principal, limit=INBOX)
        units = _units(session)
        rows: list[dict[str, Any]] = []
        for m in monitors:
            endpoint = endpoints.get(m.endpoint_id)
            latest = next(iter(service.runs_of(session, m, 1)), None)
            mine = [i for i in active if i.monitor_id == m.id and i.status != "resolved"]
            worst = max((i.severity for i in mine), key=rules_mod.SEVERITIES.index, default=None)
            rows.append(
                {
                    "monitor": m,
                    "endpoint": endpoint.name if endpoint else "?",
                    "environment": endpoint.environment if endpoint else "",
                    "unit": units.get(m.business_unit_id, m.business_unit_id),
                    "schedule": schedule_text(m),
                    "window": window_text(m),
                    "latest": run_view(latest) if latest is not None else None,
                    "incidents": len(mine),
                    "worst": worst,
                }
            )
        watched = {m.endpoint_id for m in monitors}
        unwatched = [e for e in endpoints.values() if e.status == "active" and e.id not in watched]
    rows.sort(key=lambda r: (r["environment"] != "production", r["endpoint"], r["monitor"].name))
    open_incidents = [i for i in active if i.status != "resolved"]
    stats = {
        "monitors": len(monitors),
        "endpoints": len(watched),
        "drifting": sum(1 for r in rows if r["latest"] is not None and r["latest"].dataset_drift),
        "declining": sum(1 for r in rows if r["latest"] is not None and (r["latest"].decline or 0.0) < -0.05),
        "incidents": len(open_incidents),
        "critical": sum(1 for i in open_incidents if i.severity == "critical"),
    }
    return _console(request).render(
        request,
        "monitoring.html",
        active="monitoring",
        rows=rows,
        unwatched=sorted(unwatched, key=lambda e: e.name),
        stats=stats,
        can_manage=principal.can(Action.MONITORING_MANAGE),
        notice=request.query_params.get("notice"),
    )


# --- an endpoint --------------------------------------------------------------------------------------------


def _endpoint_page(
    request: Request,
    principal: Principal,
    name: str,
    monitor_id: str | None = None,
    *,
    status: int = 200,
    error: str | None = None,
    form: dict[str, str] | None = None,
) -> Response:
    require(principal, Action.MONITORING_READ)
    with db_of(request).session() as session:
        endpoint = serving.get_endpoint(session, principal, name)
        monitors = service.list_monitors(session, principal, name)
        selected = next((m for m in monitors if m.id == monitor_id), monitors[0] if monitors else None)
        if monitor_id and (selected is None or selected.id != monitor_id):
            raise NotFound(f"Monitor {monitor_id!r} not found on {name}.", details={"monitor_id": monitor_id})
        runs = list(reversed(service.runs_of(session, selected, RUNS))) if selected is not None else []
        incidents = _incident_views(session, service.list_incidents(session, principal, endpoint_name=name))
        people = _people(
            session,
            [i.incident.owner_id for i in incidents] + [m.owner_id for m in monitors],
        )
        unit_name = _units(session).get(endpoint.business_unit_id, endpoint.business_unit_id)
    latest = runs[-1] if runs else None
    views = [run_view(r) for r in reversed(runs)]
    return _console(request).render(
        request,
        "monitoring_endpoint.html",
        status=status,
        active="monitoring",
        endpoint=endpoint,
        unit_name=unit_name,
        monitors=monitors,
        selected=selected,
        schedule=schedule_text(selected) if selected else "",
        window=window_text(selected) if selected else "",
        rules=(selected.rules or []) if selected else [],
        charts=run_charts(selected, runs) if selected else [],
        heat=heat_table(runs),
        latest=run_view(latest) if latest is not None else None,
        columns=latest_columns(latest),
        runs=views,
        incidents=incidents,
        people=people,
        schedules=[schedule_text(m) for m in monitors],
        can_manage=principal.can(Action.MONITORING_MANAGE) and endpoint.status == "active",
        form=form or {"name": "drift and quality", "every_minutes": "60", "window_minutes": "1440"},
        error=error,
        notice=request.query_params.get("notice") if not error else None,
    )


@router.get("/monitoring/{name}")
def endpoint_page(
    request: Request,
    principal: PagePrincipal,
    name: EndpointName,
    monitor: Annotated[str | None, Query(min_length=1, max_length=32)] = None,
) -> Response:
    return _endpoint_page(request, principal, name, monitor)


def _minutes_field(value: str, label: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise ValidationFailed(f"{label} must be a whole number of minutes.") from None


@router.post("/monitoring/{name}/monitors")
def create_monitor(
    request: Request,
    principal: PagePrincipal,
    name: EndpointName,
    monitor_name: Annotated[str, Form(alias="name", max_length=100)] = "",
    every_minutes: NumberField = "60",
    window_minutes: NumberField = "1440",
    csrf: Csrf = "",
) -> Response:
    check_form_csrf(principal, csrf)
    require(principal, Action.MONITORING_MANAGE)
    form = {"name": monitor_name, "every_minutes": every_minutes, "window_minutes": window_minutes}
    try:
        if not monitor_name.strip():
            raise ValidationFailed("Give the monitor a name.")
        with db_of(request).session(write=True) as session:
            created = service.create_monitor(
                session,
                principal,
                name,
                name=monitor_name.strip(),
                every_minutes=_minutes_field(every_minutes, "The schedule"),
                window_minutes=_minutes_field(window_minutes, "The window"),
            )
            monitor_id, schedule = created.id, schedule_text(created)
    except BridgeheadError as exc:
        if _refusal(exc):
            raise
        return _endpoint_page(request, principal, name, status=exc.status, error=exc.message, form=form)
    return _done(
        f"/monitoring/{name}?monitor={monitor_id}",
        f"Monitor {monitor_name.strip()!r} created: it runs {schedule} with the standard rules.",
    )


@router.post("/monitoring/{name}/monitors/{monitor_id}/run")
def run_now(
    request: Request, principal: PagePrincipal, name: EndpointName, monitor_id: Id, csrf: Csrf = ""
) -> Response:
    check_form_csrf(principal, csrf)
    require(principal, Action.MONITORING_MANAGE)
    with db_of(request).session(write=True) as session:
        monitor = service.get_monitor(session, principal, monitor_id)
        endpoint = session.get(Endpoint, monitor.endpoint_id)
        if endpoint is None or endpoint.name != name:
            raise NotFound(f"Monitor {monitor_id!r} not found on {name}.", details={"monitor_id": monitor_id})
        job = service.run_now(session, principal, monitor_id)
        job_id = job.id
    from bridgehead.jobs.plugin import wake

    wake(request.app)
    return _done(
        f"/monitoring/{name}?monitor={monitor_id}",
        f"Run queued (job {job_id[:8]}); its report appears here when it finishes, usually within seconds.",
    )


# --- a run's report -----------------------------------------------------------------------------------------

_LEGEND = {
    f'<span style="background:{REF_COLOR}"></span>': '<span class="legend-key legend-ref"></span>',
    f'<span style="background:{CUR_COLOR}"></span>': '<span class="legend-key legend-cur"></span>',
}
_STYLE = re.compile(r'\sstyle="[^"]*"')
_SVG = re.compile(r'<svg width="(\d+)" height="(\d+)"')


def console_report_body(report: dict[str, Any]) -> Markup:
    """`report_body` for the console: the legend's inline colours become classes (the console's
    Content-Security-Policy refuses inline styles), and the charts scale to their column."""
    html = report_body(report)
    for old, new in _LEGEND.items():
        html = html.replace(old, new)
    # A viewBox lets the distribution charts shrink with a narrow column instead of being cut.
    html = _SVG.sub(r'<svg width="\1" height="\2" viewBox="0 0 \1 \2"', html)
    return Markup(_STYLE.sub("", html))  # noqa: S704 — report_body escapes every value it writes


@router.get("/monitoring/runs/{run_id}")
def report_page(request: Request, principal: PagePrincipal, run_id: Id) -> Response:
    with db_of(request).session() as session:
        run, monitor = service.get_run(session, principal, run_id)
        endpoint = session.get(Endpoint, monitor.endpoint_id)
        siblings = list(reversed(service.runs_of(session, monitor, RUNS)))
        incident = session.get(Incident, run.incident_id) if run.incident_id else None
    ids = [r.id for r in siblings]
    index = ids.index(run.id) if run.id in ids else -1
    report = run.report or {}
    return _console(request).render(
        request,
        "monitoring_report.html",
        active="monitoring",
        run=run,
        view=run_view(run),
        monitor=monitor,
        endpoint=endpoint.name if endpoint else "?",
        model=report.get("model") or {},
        reference=report.get("reference") or {},
        body=console_report_body(report) if run.status == "succeeded" else None,
        incident=incident,
        previous=ids[index - 1] if index > 0 else None,
        following=ids[index + 1] if 0 <= index < len(ids) - 1 else None,
    )


@router.get("/monitoring/runs/{run_id}/report.html")
def report_html(request: Request, principal: PagePrincipal, run_id: Id) -> Response:
    """The standalone report file (as the API's download), for the signed-in person."""
    with db_of(request).session() as session:
        run, monitor = service.get_run(session, principal, run_id)
        endpoint = session.get(Endpoint, monitor.endpoint_id)
        html = render_report(run, monitor, endpoint.name if endpoint else "")
    return HTMLResponse(
        html,
        headers={
            "Content-Disposition": f'attachment; filename="drift-report-{run.id}.html"',
            "Cache-Control": "private, no-store",
        },
    )


@router.get("/monitoring/runs/{run_id}/report.json")
def report_json(request: Request, principal: PagePrincipal, run_id: Id) -> Response:
    with db_of(request).session() as session:
        run, _ = service.get_run(session, principal, run_id)
        body = run_summary(run).model_dump(mode="json") | {"report": run.report or {}}
    return JSONResponse(
        body,
        headers={
            "Content-Disposition": f'attachment; filename="drift-report-{run.id}.json"',
            "Cache-Control": "private, no-store",
        },
    )


# --- incidents ----------------------------------------------------------------------------------------------


@router.get("/incidents")
def inbox(
    request: Request,
    principal: PagePrincipal,
    status: Annotated[str, Query(pattern="^(|open|acknowledged|resolved|all)$")] = "",
    endpoint: Annotated[str, Query(max_length=100)] = "",
) -> Response:
    require(principal, Action.MONITORING_READ)
    with db_of(request).session() as session:
        every = service.list_incidents(session, principal, endpoint_name=endpoint or None, limit=INBOX)
        views = _incident_views(session, every)
        people = _people(session, [i.owner_id for i in every])
    counts = {
        "": sum(1 for i in every if i.status != "resolved"),
        "open": sum(1 for i in every if i.status == "open"),
        "acknowledged": sum(1 for i in every if i.status == "acknowledged"),
        "resolved": sum(1 for i in every if i.status == "resolved"),
    }
    if status == "all":
        shown = views
    elif status:
        shown = [v for v in views if v.incident.status == status]
    else:
        shown = [v for v in views if v.incident.status != "resolved"]
    severity_rank = {s: n for n, s in enumerate(reversed(rules_mod.SEVERITIES))}
    status_rank = {"open": 0, "acknowledged": 1, "resolved": 2}
    shown.sort(
        key=lambda v: (
            status_rank.get(v.incident.status, 3),
            severity_rank.get(v.incident.severity, 9),
            -v.incident.opened_ms,
        )
    )
    stats = {
        "open": counts["open"],
        "acknowledged": counts["acknowledged"],
        "critical": sum(1 for i in every if i.status != "resolved" and i.severity == "critical"),
        "mtta": _duration_s(_mean_seconds([(i.opened_ms, i.acknowledged_ms) for i in every])) or "—",
        "mttr": _duration_s(_mean_seconds([(i.opened_ms, i.resolved_ms) for i in every])) or "—",
    }

    def tab_url(value: str) -> str:
        query = {k: v for k, v in (("status", value), ("endpoint", endpoint)) if v}
        return "/incidents" + (f"?{urlencode(query)}" if query else "")

    return _console(request).render(
        request,
        "incidents.html",
        active="incidents",
        incidents=shown,
        people=people,
        current=status,
        endpoint=endpoint,
        tabs=[(value, label, counts[value], tab_url(value)) for value, label in STATUS_TABS],
        all_url=tab_url("all"),
        total=len(every),
        stats=stats,
        notice=request.query_params.get("notice"),
    )


def _timeline(session: Session, incident: Incident) -> list[dict[str, Any]]:
    events = session.scalars(
        select(AuditEvent)
        .where(AuditEvent.object_type == "incident", AuditEvent.object_id == incident.id)
        .order_by(AuditEvent.seq)
    ).all()
    people = _people(session, [e.actor_id for e in events])
    words = {
        "incident.open": "Opened by the monitor",
        "incident.escalate": "Escalated",
        "incident.acknowledge": "Acknowledged",
        "incident.assign": "Assigned",
        "incident.resolve": "Resolved",
    }
    out = []
    for e in events:
        changes = e.changes or {}
        detail = ""
        if e.action == "incident.open":
            detail = f"severity {changes.get('severity', incident.severity)}"
        elif e.action == "incident.escalate":
            detail = f"to {changes.get('severity')}"
        elif e.action == "incident.acknowledge":
            detail = str(changes.get("note") or "")
        elif e.action == "incident.assign":
            after = changes.get("after")
            detail = f"to {_people(session, [after]).get(after, after)}" if after else ""
        elif e.action == "incident.resolve":
            detail = str(changes.get("resolution") or "")
        who = people.get(e.actor_id or "", "") or (
            "Bridgehead" if e.actor_email.endswith("@bridgehead") else e.actor_email
        )
        # The incident's own times for the steps it records (what the durations are computed from).
        at = {
            "incident.open": incident.opened_ms,
            "incident.acknowledge": incident.acknowledged_ms,
            "incident.resolve": incident.resolved_ms,
        }.get(e.action)
        out.append(
            {
                "action": e.action.removeprefix("incident."),
                "label": words.get(e.action, e.action),
                "who": who,
                "ms": at
                if at is not None
                else int(e.at.replace(tzinfo=e.at.tzinfo or UTC).timestamp() * 1000),
                "detail": detail,
            }
        )
    return out


def _incident_page(
    request: Request,
    principal: Principal,
    incident_id: str,
    *,
    status: int = 200,
    error: str | None = None,
) -> Response:
    with db_of(request).session() as session:
        incident = service.get_incident(session, principal, incident_id)
        view = _incident_views(session, [incident])[0]
        wanted = list(reversed(incident.run_ids or []))[:EVIDENCE]
        found = (
            {r.id: r for r in session.scalars(select(MonitorRun).where(MonitorRun.id.in_(wanted))).all()}
            if wanted
            else {}
        )
        evidence = [run_view(found[i]) for i in wanted if i in found]
        timeline = _timeline(session, incident)
        people = _people(session, [incident.owner_id, incident.acknowledged_by, incident.resolved_by])
        deliveries = service.incident_deliveries(session, incident)
    return _console(request).render(
        request,
        "incident.html",
        deliveries=deliveries,
        status=status,
        active="incidents",
        incident=incident,
        view=view,
        evidence=evidence,
        timeline=timeline,
        people=people,
        can_handle=principal.can(Action.INCIDENT_HANDLE),
        error=error,
        notice=request.query_params.get("notice") if not error else None,
    )


@router.get("/incidents/{incident_id}")
def incident_page(request: Request, principal: PagePrincipal, incident_id: Id) -> Response:
    return _incident_page(request, principal, incident_id)


@router.post("/incidents/{incident_id}/acknowledge")
def acknowledge(
    request: Request, principal: PagePrincipal, incident_id: Id, note: TextField = "", csrf: Csrf = ""
) -> Response:
    check_form_csrf(principal, csrf)
    require(principal, Action.INCIDENT_HANDLE)
    try:
        with db_of(request).session(write=True) as session:
            service.acknowledge(session, principal, incident_id, note.strip())
    except BridgeheadError as exc:
        if _refusal(exc):
            raise
        return _incident_page(request, principal, incident_id, status=exc.status, error=exc.message)
    return _done(f"/incidents/{incident_id}", "Acknowledged: you own this incident until it is resolved.")


@router.post("/incidents/{incident_id}/resolve")
def resolve(
    request: Request,
    principal: PagePrincipal,
    incident_id: Id,
    resolution: TextField = "",
    confirm: Confirm = "",
    csrf: Csrf = "",
) -> Response:
    check_form_csrf(principal, csrf)
    require(principal, Action.INCIDENT_HANDLE)
    if confirm != "yes":
        return _incident_page(
            request, principal, incident_id, status=400, error="Tick the confirmation box to resolve."
        )
    try:
        with db_of(request).session(write=True) as session:
            service.resolve_incident(session, principal, incident_id, resolution)
    except BridgeheadError as exc:
        if _refusal(exc):
            raise
        return _incident_page(request, principal, incident_id, status=exc.status, error=exc.message)
    return _done(f"/incidents/{incident_id}", "Resolved. A new breach will open a new incident.")
