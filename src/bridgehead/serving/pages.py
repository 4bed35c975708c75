"""Console: Deployments — the endpoints one may see, grouped by environment, with their traffic split and the
last day's requests and errors; an endpoint's page with its routes, traffic, hourly charts (requests, errors,
latency), feedback, recent predictions, revision history, and the promote and rollback forms.

Everything goes through the serving service with the same permissions as the JSON API: reading needs
serving.read and follows the endpoint's unit (another unit's endpoint is "not found"); promote and rollback
need serving.deploy, pass the check_transition hook and are audited. The prediction log's inputs may hold
personal data: they are shown only to people with data.pii."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Path, Query, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bridgehead.auth.deps import PagePrincipal, check_form_csrf, db_of
from bridgehead.auth.models import Person
from bridgehead.auth.roles import Action
from bridgehead.auth.service import Principal, require
from bridgehead.errors import BridgeheadError, NotFound
from bridgehead.org import service as org
from bridgehead.serving import predlog, service
from bridgehead.serving.models import Endpoint, EndpointRevision, Feedback, PredictionHour
from bridgehead.serving.routes import _percentile, hooks_of
from bridgehead.serving.service import ENVIRONMENTS, RouteInfo
from bridgehead.tracking import service as tracking
from bridgehead.web import Console

router = APIRouter(include_in_schema=False)

HOUR_MS = 3_600_000
RECENT = 20  # predictions shown from the log
CLIP = 140  # characters of a prediction's inputs or output shown in the table
WINDOWS = ((24, "24 h"), (168, "7 days"))
# The console's palette (charts.js, and .swatch-N in bridgehead.css): one colour per version on a page.
PALETTE = ("#1f4fd6", "#e8710a", "#1a7f4b", "#7b3fe4", "#0e9aa7", "#c2185b", "#8a6d00", "#5f6b7a")

EndpointName = Annotated[str, Path(min_length=1, max_length=100)]
Hours = Annotated[int, Query(ge=1, le=24 * 90)]
Csrf = Annotated[str, Form(max_length=500)]
ReasonField = Annotated[str, Form(max_length=2000)]
Confirm = Annotated[str, Form(max_length=10)]


def _console(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def _units(session: Session) -> dict[str, str]:
    return {u.id: u.name for u in org.list_units(session)}


def _people(session: Session, ids: Sequence[str | None]) -> dict[str, str]:
    wanted = sorted({i for i in ids if i})
    if not wanted:
        return {}
    return dict(session.execute(select(Person.id, Person.name).where(Person.id.in_(wanted))).tuples().all())


def _done(url: str, message: str) -> Response:
    return RedirectResponse(f"{url}?notice={quote(message)}", status_code=303)


def _refusal(exc: BridgeheadError) -> bool:
    """Errors answered with the error page (not found, not allowed), not shown on the endpoint's page."""
    return isinstance(exc, NotFound) or (exc.status == 403 and "action" in exc.details)


def _since(hours: int) -> int:
    """The first hour of a window of ``hours`` hours ending with the current one (as the stats API counts)."""
    return (tracking.now_ms() // HOUR_MS - hours + 1) * HOUR_MS


def can_deploy(principal: Principal, endpoint: Endpoint) -> bool:
    return principal.can(Action.SERVING_DEPLOY) and principal.can_see_unit(endpoint.business_unit_id)


# --- traffic --------------------------------------------------------------------------------------------


def _weight(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0")


@dataclass
class Traffic:
    """An endpoint's routes and shadows, each with a colour and, for routes, its place on a stacked bar."""

    routes: list[dict[str, Any]] = field(default_factory=list)
    shadows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def summary(self) -> str:
        parts = [f"{r['label']} {r['share']} %" for r in self.routes]
        parts += [f"{s['label']} shadow" for s in self.shadows]
        return " · ".join(parts) or "nothing deployed"


def traffic_view(routes: Sequence[RouteInfo]) -> Traffic:
    """Segments of a stacked bar (x and width in % of the bar) for the routes; the shadows apart. Versions are
    labelled "v3", or "model v3" when the endpoint serves more than one model."""
    several = len({r.model for r in routes}) > 1
    colors: dict[str, int] = {}
    traffic = Traffic()
    offset = 0.0
    for r in routes:
        index = colors.setdefault(r.version_id, len(colors))
        item = {
            "model": r.model,
            "version": r.version,
            "label": f"{r.model} v{r.version}" if several else f"v{r.version}",
            "role": r.role,
            "weight": r.weight,
            "share": _weight(r.weight),
            "color": index,
            "hex": PALETTE[index % len(PALETTE)],
        }
        if r.role == "shadow":
            traffic.shadows.append(item)
            continue
        item["x"] = round(offset, 3)
        item["width"] = round(r.weight, 3)
        item["middle"] = round(offset + r.weight / 2, 3)
        offset += r.weight
        traffic.routes.append(item)
    return traffic


def _summary(session: Session, policy: dict[str, Any]) -> str:
    try:
        return traffic_view(service.describe(session, policy)).summary
    except (BridgeheadError, ValueError, KeyError, TypeError):  # a policy written by an older release
        return "unreadable configuration"


# --- the list ---------------------------------------------------------------------------------------------


@dataclass
class Totals:
    requests: int = 0
    rows: int = 0
    errors: int = 0

    @property
    def error_rate(self) -> float | None:
        return 100.0 * self.errors / self.rows if self.rows else None


def _totals(session: Session, endpoint_ids: Sequence[str], since: int) -> dict[str, Totals]:
    """Answered requests, rows and rows in error per endpoint since ``since`` (shadow copies not counted)."""
    if not endpoint_ids:
        return {}
    found = session.execute(
        select(
            PredictionHour.endpoint_id,
            func.sum(PredictionHour.requests),
            func.sum(PredictionHour.rows),
            func.sum(PredictionHour.errors),
        )
        .where(
            PredictionHour.endpoint_id.in_(endpoint_ids),
            PredictionHour.hour_ms >= since,
            PredictionHour.role == "primary",
        )
        .group_by(PredictionHour.endpoint_id)
    ).all()
    return {e: Totals(int(r or 0), int(n or 0), int(x or 0)) for e, r, n, x in found}


def _environment_order(name: str) -> tuple[int, str]:
    return (0 if name == "production" else 1 if name == "staging" else 2, name)


@router.get("/deployments")
def deployments_page(
    request: Request,
    principal: PagePrincipal,
    environment: Annotated[str, Query(max_length=20)] = "",
    retired: bool = False,
) -> Response:
    require(principal, Action.SERVING_READ)
    with db_of(request).session() as session:
        every = service.list_endpoints(session, principal, include_retired=True)
        shown = [
            e
            for e in every
            if (retired or e.status == "active") and (not environment or e.environment == environment)
        ]
        traffic = {e.id: traffic_view(service.describe(session, e.policy)) for e in shown}
        totals = _totals(session, [e.id for e in shown], _since(24))
        units = _units(session)
    groups: dict[str, list[Endpoint]] = {}
    for e in sorted(shown, key=lambda e: (_environment_order(e.environment), e.name)):
        groups.setdefault(e.environment, []).append(e)
    overall = Totals(
        sum(t.requests for t in totals.values()),
        sum(t.rows for t in totals.values()),
        sum(t.errors for t in totals.values()),
    )
    active = [e for e in every if e.status == "active"]
    return _console(request).render(
        request,
        "deployments.html",
        active="deployments",
        groups=list(groups.items()),
        traffic=traffic,
        totals=totals,
        overall=overall,
        units=units,
        total=len(every),
        active_count=len(active),
        production_count=sum(1 for e in active if e.environment == "production"),
        retired_count=len(every) - len(active),
        environments=sorted({*ENVIRONMENTS, *(e.environment for e in every)}, key=_environment_order),
        environment=environment,
        retired=retired,
        can_deploy=principal.can(Action.SERVING_DEPLOY),
        server=str(request.base_url).rstrip("/"),
    )


# --- an endpoint ------------------------------------------------------------------------------------------


def _hour_label(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")


def _merge(buckets: list[int], more: Sequence[Any] | None) -> list[int]:
    extra = [int(v) for v in more or []]
    size = max(len(buckets), len(extra))
    return [
        (buckets[i] if i < len(buckets) else 0) + (extra[i] if i < len(extra) else 0) for i in range(size)
    ]


@dataclass
class VersionWindow:
    """One version in one role over the window: the per-version table and the per-version chart series."""

    label: str
    role: str
    color: int
    requests: int = 0
    rows: int = 0
    errors: int = 0
    latency_sum_ms: float = 0.0
    buckets: list[int] = field(default_factory=list)
    by_hour: dict[int, list[float]] = field(default_factory=dict)  # hour -> [requests, rows, errors, ms]

    @property
    def error_rate(self) -> float | None:
        return 100.0 * self.errors / self.rows if self.rows else None

    @property
    def mean_ms(self) -> float | None:
        return self.latency_sum_ms / self.requests if self.requests else None

    @property
    def p50_ms(self) -> float | None:
        return _percentile(self.buckets, 0.5)

    @property
    def p99_ms(self) -> float | None:
        return _percentile(self.buckets, 0.99)


def hourly_view(
    rows: Sequence[PredictionHour],
    since: int,
    hours: int,
    labels: dict[tuple[str, int], str],
    colors: dict[tuple[str, int], int],
) -> dict[str, Any]:
    """Per-version totals and the three hourly charts (requests by version, error rate by version, p50/p99
    latency of the answered requests) over the window, every hour present (no requests: 0, or a gap)."""
    several = len({model for model, _ in labels} | {r.model_name for r in rows}) > 1
    versions: dict[tuple[str, int, str], VersionWindow] = {}
    answered: dict[int, list[int]] = {}
    for r in rows:
        key = (r.model_name, r.version, r.role)
        if key not in versions:
            base = labels.get((r.model_name, r.version)) or (
                f"{r.model_name} v{r.version}" if several else f"v{r.version}"
            )
            color = colors.setdefault((r.model_name, r.version), len(colors))
            versions[key] = VersionWindow(
                label=base + (" (shadow)" if r.role == "shadow" else ""), role=r.role, color=color
            )
        v = versions[key]
        v.requests += int(r.requests)
        v.rows += int(r.rows)
        v.errors += int(r.errors)
        v.latency_sum_ms += float(r.latency_sum_ms)
        v.buckets = _merge(v.buckets, r.latency_buckets)
        counts = v.by_hour.setdefault(int(r.hour_ms), [0, 0, 0, 0.0])
        counts[0] += int(r.requests)
        counts[1] += int(r.rows)
        counts[2] += int(r.errors)
        counts[3] += float(r.latency_sum_ms)
        if r.role == "primary":
            answered[int(r.hour_ms)] = _merge(answered.get(int(r.hour_ms), []), r.latency_buckets)
    ordered = sorted(versions.values(), key=lambda v: (v.role != "primary", v.color, v.label))
    hour_list = [since + i * HOUR_MS for i in range(hours)]
    x = [_hour_label(h) for h in hour_list]
    charts: list[tuple[str, str, dict[str, Any]]] = []
    if ordered:
        charts.append(
            (
                "Requests per hour",
                "by version; shadows score a copy",
                {
                    "kind": "line",
                    "x_title": "hour (UTC)",
                    "y_title": "requests",
                    "series": [
                        {
                            "name": v.label,
                            "x": x,
                            "y": [int(v.by_hour.get(h, [0])[0]) for h in hour_list],
                            "color": v.color,
                        }
                        for v in ordered
                    ],
                },
            )
        )

        def rate(counts: list[float] | None) -> float | None:
            return round(100.0 * counts[2] / counts[1], 3) if counts and counts[1] else None

        def mean(counts: list[float] | None) -> float | None:
            return round(counts[3] / counts[0], 2) if counts and counts[0] else None

        charts.append(
            (
                "Error rate",
                "% of rows in error, by version",
                {
                    "kind": "line",
                    "x_title": "hour (UTC)",
                    "y_title": "% of rows",
                    "series": [
                        {
                            "name": v.label,
                            "x": x,
                            "y": [rate(v.by_hour.get(h)) for h in hour_list],
                            "color": v.color,
                        }
                        for v in ordered
                    ],
                },
            )
        )
        charts.append(
            (
                "Latency",
                "p50 and p99 of answered requests, ms",
                {
                    "kind": "line",
                    "x_title": "hour (UTC)",
                    "y_title": "ms",
                    "series": [
                        {
                            "name": name,
                            "x": x,
                            "y": [_percentile(answered.get(h, []), q) for h in hour_list],
                            "color": color,
                        }
                        for name, q, color in (("p50", 0.5, 0), ("p99", 0.99, 5))
                    ],
                },
            )
        )
        charts.append(
            (
                "Latency by version",
                "mean per request, ms",
                {
                    "kind": "line",
                    "x_title": "hour (UTC)",
                    "y_title": "ms",
                    "series": [
                        {
                            "name": v.label,
                            "x": x,
                            "y": [mean(v.by_hour.get(h)) for h in hour_list],
                            "color": v.color,
                        }
                        for v in ordered
                    ],
                },
            )
        )
    primary = [v for v in ordered if v.role == "primary"]
    all_buckets: list[int] = []
    for hist in answered.values():
        all_buckets = _merge(all_buckets, hist)
    totals = Totals(
        sum(v.requests for v in primary), sum(v.rows for v in primary), sum(v.errors for v in primary)
    )
    return {
        "versions": ordered,
        "charts": charts,
        "totals": totals,
        "p50": _percentile(all_buckets, 0.5),
        "p99": _percentile(all_buckets, 0.99),
    }


def _clip(text: str, size: int = CLIP) -> str:
    return text if len(text) <= size else text[: size - 1] + "…"


def _output(text: str) -> tuple[str, str]:
    """A logged output for reading: (the prediction or the error, the top probability if any)."""
    try:
        value = json.loads(text)
    except ValueError:
        return _clip(text), ""
    if isinstance(value, dict) and "prediction" in value:
        probabilities = value.get("probabilities")
        top = ""
        if isinstance(probabilities, list) and probabilities:
            numbers = [p for p in probabilities if isinstance(p, int | float)]
            top = f"{max(numbers):.2f}" if numbers else ""
        return _clip(json.dumps(value["prediction"], ensure_ascii=False)), top
    if isinstance(value, dict) and "error" in value:
        return _clip(str(value["error"])), ""
    return _clip(text), ""


def _short_id(value: str) -> str:
    """A prediction id for reading: the request's first 8 characters and the row ("1f0c…" or "1f0c….3")."""
    request_id, dot, row = value.partition(".")
    return value if len(request_id) <= 12 else f"{request_id[:8]}…{dot}{row}"


def recent_predictions(request: Request, name: str, show_inputs: bool) -> tuple[list[dict[str, Any]], str]:
    """The newest rows of the prediction log, and a note when it cannot be read."""
    root = request.app.state.settings.resolved_prediction_log_dir
    try:
        found = predlog.recent(root, name, RECENT)
    except BridgeheadError as exc:
        return [], f"The prediction log could not be read: {exc.message}"
    rows = []
    for r in found:
        output, top = _output(str(r.get("outputs") or ""))
        ts = r.get("ts")
        rows.append(
            {
                "time": ts.strftime("%Y-%m-%d %H:%M:%S") if isinstance(ts, datetime) else str(ts),
                "id": r.get("request_id", ""),
                "short_id": _short_id(str(r.get("request_id", ""))),
                "model": r.get("model_name", ""),
                "version": r.get("version"),
                "role": r.get("role", ""),
                "status": r.get("status", ""),
                "latency_ms": r.get("latency_ms"),
                "inputs": _clip(str(r.get("inputs") or "")) if show_inputs else None,
                "output": output,
                "top": top,
            }
        )
    return rows, ""


def _feedback(session: Session, endpoint: Endpoint) -> dict[str, Any]:
    kinds = dict(
        session.execute(
            select(Feedback.kind, func.count())
            .where(Feedback.endpoint_id == endpoint.id)
            .group_by(Feedback.kind)
        )
        .tuples()
        .all()
    )
    rows = session.scalar(
        select(func.sum(PredictionHour.rows)).where(
            PredictionHour.endpoint_id == endpoint.id, PredictionHour.role == "primary"
        )
    )
    labels, overrides, predicted = int(kinds.get("label", 0)), int(kinds.get("override", 0)), int(rows or 0)
    return {
        "labels": labels,
        "overrides": overrides,
        "rows": predicted,
        "rate": 100.0 * labels / predicted if predicted else None,
    }


def _rollback_target(endpoint: Endpoint, history: Sequence[EndpointRevision]) -> EndpointRevision | None:
    """The revision whose configuration a rollback would restore (as service.rollback finds it)."""
    by_number = {r.revision: r for r in history}
    latest = by_number.get(endpoint.revision)
    source = latest.source_revision if latest is not None else 0
    previous = by_number.get(source - 1)
    return previous if previous is not None and previous.policy else None


def _challenger(traffic: Traffic) -> dict[str, Any] | None:
    """What promote without a version gives all the traffic to (as service.promote chooses)."""
    if len(traffic.routes) > 1:
        return min(traffic.routes, key=lambda r: r["weight"])
    return traffic.shadows[0] if traffic.shadows else None


def _endpoint_page(
    request: Request,
    principal: Principal,
    name: str,
    hours: int = 24,
    *,
    status: int = 200,
    error: str | None = None,
) -> Response:
    require(principal, Action.SERVING_READ)
    since = _since(hours)
    with db_of(request).session() as session:
        endpoint = service.get_endpoint(session, principal, name)
        routes = service.describe(session, endpoint.policy)
        traffic = traffic_view(routes)
        history = service.revisions(session, principal, name)
        summaries = {r.revision: _summary(session, r.policy) for r in history}
        rows = session.scalars(
            select(PredictionHour)
            .where(PredictionHour.endpoint_id == endpoint.id, PredictionHour.hour_ms >= since)
            .order_by(PredictionHour.hour_ms, PredictionHour.model_name, PredictionHour.version)
        ).all()
        feedback = _feedback(session, endpoint)
        units = _units(session)
        people = _people(session, [endpoint.owner_id, *(r.author_id for r in history)])
    serving = [*traffic.routes, *traffic.shadows]
    labels = {(item["model"], item["version"]): str(item["label"]) for item in serving}
    version_colors = {(item["model"], item["version"]): int(item["color"]) for item in serving}
    window = hourly_view(rows, since, hours, labels, version_colors)
    show_inputs = principal.can(Action.DATA_PII)
    predictions, log_note = recent_predictions(request, endpoint.name, show_inputs)
    if show_inputs and predictions:
        with db_of(request).session(write=True) as session:
            service.record_inputs_read(session, principal, endpoint, len(predictions))
    writable = can_deploy(principal, endpoint) and endpoint.status == "active"
    target = _rollback_target(endpoint, history)
    invokers = endpoint.invokers or {}
    return _console(request).render(
        request,
        "endpoint.html",
        status=status,
        active="deployments",
        endpoint=endpoint,
        url=f"/serve/{endpoint.name}/predict",
        traffic=traffic,
        history=history,
        summaries=summaries,
        people=people,
        unit_name=units.get(endpoint.business_unit_id, endpoint.business_unit_id),
        invoker_units=[units.get(u, u) for u in invokers.get("units", [])],
        invoker_roles=list(invokers.get("roles", [])),
        hours=hours,
        windows=WINDOWS,
        window_label=next((label for h, label in WINDOWS if h == hours), f"{hours} h"),
        window=window,
        feedback=feedback,
        predictions=predictions,
        log_note=log_note,
        show_inputs=show_inputs,
        can_deploy=writable,
        challenger=_challenger(traffic),
        candidates=serving,
        rollback_to=target,
        rollback_summary=summaries.get(target.revision, "") if target is not None else "",
        error=error,
        notice=request.query_params.get("notice") if not error else None,
    )


@router.get("/deployments/{name}")
def endpoint_page(
    request: Request, principal: PagePrincipal, name: EndpointName, hours: Hours = 24
) -> Response:
    return _endpoint_page(request, principal, name, hours)


def _confirmed(confirm: str) -> bool:
    return confirm == "yes"


@router.post("/deployments/{name}/promote")
def promote(
    request: Request,
    principal: PagePrincipal,
    name: EndpointName,
    version: Annotated[str, Form(max_length=400)] = "",
    reason: ReasonField = "",
    confirm: Confirm = "",
    csrf: Csrf = "",
) -> Response:
    """``version`` is "model:number" (a route or shadow of the endpoint), or empty for the challenger."""
    check_form_csrf(principal, csrf)
    require(principal, Action.SERVING_DEPLOY)
    if not _confirmed(confirm):
        return _endpoint_page(
            request, principal, name, status=400, error="Tick the confirmation box to promote."
        )
    model, _, number = version.rpartition(":")
    try:
        with db_of(request).session(write=True) as session:
            endpoint = service.promote(
                session,
                principal,
                hooks_of(request),
                name,
                model=model or None,
                version=number or None,
                reason=reason.strip(),
            )
            now = traffic_view(service.describe(session, endpoint.policy))
            revision = endpoint.revision
    except BridgeheadError as exc:
        if _refusal(exc):
            raise
        return _endpoint_page(request, principal, name, status=exc.status, error=exc.message)
    winner = now.routes[0]["label"] if now.routes else "the version"
    return _done(f"/deployments/{name}", f"Promoted {winner}: it answers all traffic (revision {revision}).")


@router.post("/deployments/{name}/rollback")
def rollback(
    request: Request,
    principal: PagePrincipal,
    name: EndpointName,
    reason: ReasonField = "",
    confirm: Confirm = "",
    csrf: Csrf = "",
) -> Response:
    check_form_csrf(principal, csrf)
    require(principal, Action.SERVING_DEPLOY)
    if not _confirmed(confirm):
        return _endpoint_page(
            request, principal, name, status=400, error="Tick the confirmation box to roll back."
        )
    try:
        with db_of(request).session(write=True) as session:
            endpoint = service.rollback(session, principal, hooks_of(request), name, reason=reason.strip())
            summary = traffic_view(service.describe(session, endpoint.policy)).summary
            revision = endpoint.revision
    except BridgeheadError as exc:
        if _refusal(exc):
            raise
        return _endpoint_page(request, principal, name, status=exc.status, error=exc.message)
    return _done(f"/deployments/{name}", f"Rolled back (revision {revision}): {summary}.")
