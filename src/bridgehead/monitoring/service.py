"""Monitors, their runs, incidents and notification channels.

A run (`run_monitor`) resolves what the monitor compares: the endpoint's serving version (the primary route
with the largest weight), its inputs (the version's signature), the reference (the monitor's dataset version,
or the version's training dataset, found by the digest the run logged) and its stored profile, the labels and
overrides that came back, and the validation baseline recorded at registration. It then streams the window of
the prediction log into `monitoring.report`, evaluates the rules, records the run, and opens an incident (or
adds to the one open for the monitor), queueing one notification job per matching channel.

Runs are jobs (`monitoring.run`); `tick` queues the runs that are due and is itself a job that re-queues
itself every ``monitor_tick_seconds``. A run that cannot be computed (the endpoint was retired, no reference,
a damaged log file) is recorded as failed with the reason, and never stops other monitors.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from bridgehead.audit.service import ActorRef, record
from bridgehead.auth.roles import Action
from bridgehead.auth.service import Principal, require
from bridgehead.data.models import DatasetVersion
from bridgehead.data.profile import Profile
from bridgehead.errors import AlreadyExists, BridgeheadError, Conflict, NotFound, ValidationFailed
from bridgehead.jobs import service as jobs
from bridgehead.jobs.models import Job
from bridgehead.monitoring import rules as rules_mod
from bridgehead.monitoring.models import Incident, Monitor, MonitorRun, NotificationChannel
from bridgehead.monitoring.report import BASELINE_NAMES, ReportInputs, build_report
from bridgehead.monitoring.stats import DriftOverrides
from bridgehead.monitoring.windows import references_from_profile
from bridgehead.registry.models import ModelVersion, RegisteredModel
from bridgehead.serving import predlog
from bridgehead.serving.models import Endpoint, Feedback, PredictionHour
from bridgehead.serving.protocols import Signature
from bridgehead.settings import Settings

__all__ = [
    "NOTIFY_KIND",
    "RUN_KIND",
    "TICK_KIND",
    "acknowledge",
    "create_channel",
    "create_monitor",
    "delete_monitor",
    "get_incident",
    "get_monitor",
    "incident_deliveries",
    "list_incidents",
    "list_monitors",
    "resolve",
    "run_monitor",
    "tick",
    "update_monitor",
]

RUN_KIND = "monitoring.run"
TICK_KIND = "monitoring.tick"
NOTIFY_KIND = "monitoring.notify"
# Attempts of a notification when the caller does not pass BRIDGEHEAD_NOTIFICATION_MAX_ATTEMPTS: its default.
NOTIFY_ATTEMPTS: int = Settings.model_fields["notification_max_attempts"].default
SYSTEM = ActorRef("monitoring@bridgehead")
STATUSES = ("open", "acknowledged", "resolved")
_MINUTE = 60_000


def now_ms() -> int:
    return int(time.time() * 1000)


def _visible(principal: Principal, model: Any) -> Any:
    stmt = select(model)
    if not principal.sees_all_units:
        stmt = stmt.where(model.business_unit_id == principal.business_unit_id)
    return stmt


# --- monitors -----------------------------------------------------------------------------------------------


def _endpoint(session: Session, principal: Principal, name: str) -> Endpoint:
    found: Endpoint | None = session.scalar(_visible(principal, Endpoint).where(Endpoint.name == name))
    if found is None:
        raise NotFound(f"Endpoint {name!r} not found.", details={"endpoint": name})
    return found


def _check_schedule(every_minutes: int | None, every_rows: int | None, window_minutes: int) -> None:
    if (every_minutes is None) == (every_rows is None):
        raise ValidationFailed(
            "Give a monitor one schedule: every_minutes (e.g. 60 for hourly, 1440 for daily) or every_rows.",
            details={"every_minutes": every_minutes, "every_rows": every_rows},
        )
    if every_minutes is not None and not 1 <= every_minutes <= 60 * 24 * 31:
        raise ValidationFailed("every_minutes must be between 1 and 44640 (31 days).")
    if every_rows is not None and not 1 <= every_rows <= 10**12:
        raise ValidationFailed("every_rows must be between 1 and 10^12.")
    if not 1 <= window_minutes <= 60 * 24 * 366:
        raise ValidationFailed("window_minutes must be between 1 and 527040 (366 days).")


def _check_settings(settings: dict[str, Any]) -> dict[str, Any]:
    allowed = {"columns", "drift_share", "protected", "positive", "baseline", "task"}
    unknown = sorted(set(settings) - allowed)
    if unknown:
        raise ValidationFailed(
            f"Unknown monitor settings {unknown}; use {sorted(allowed)}.", details={"settings": unknown}
        )
    share = settings.get("drift_share", 0.5)
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share <= 1:
        raise ValidationFailed("drift_share must be a number in (0, 1].", details={"drift_share": share})
    for name, o in (settings.get("columns") or {}).items():
        if not isinstance(o, dict) or set(o) - {"test", "threshold"}:
            raise ValidationFailed(
                f"Column override for {name!r}: an object with 'test' and/or 'threshold'.",
                details={"column": name},
            )
        try:
            _overrides({"columns": {name: o}})
        except (TypeError, ValueError) as exc:
            raise ValidationFailed(f"Column override for {name!r}: {exc}", details={"column": name}) from exc
    if settings.get("task") not in (None, "classification", "regression"):
        raise ValidationFailed("task must be 'classification' or 'regression'.")
    protected = settings.get("protected")
    if protected is not None and (
        not isinstance(protected, list) or not all(isinstance(p, str) for p in protected)
    ):
        raise ValidationFailed("protected must be a list of column names.")
    baseline = settings.get("baseline")
    if baseline is not None and (
        not isinstance(baseline, dict)
        or not all(k in BASELINE_NAMES and isinstance(v, int | float) for k, v in baseline.items())
    ):
        raise ValidationFailed(f"baseline maps metric names ({', '.join(BASELINE_NAMES)}) to numbers.")
    return settings


def _overrides(settings: dict[str, Any]) -> dict[str, DriftOverrides]:
    from bridgehead.monitoring.stats import TESTS

    out = {}
    for name, o in (settings.get("columns") or {}).items():
        test = o.get("test")
        if test is not None and test not in TESTS:
            raise ValueError(f"unknown test {test!r}; use one of {', '.join(sorted(TESTS))}")
        threshold = o.get("threshold")
        if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, int | float)):
            raise ValueError("threshold must be a number")
        out[name] = DriftOverrides(test=test, threshold=threshold)
    return out


def _reference(session: Session, principal: Principal, version_id: str | None) -> DatasetVersion | None:
    if version_id is None:
        return None
    from bridgehead.data.models import Dataset

    found = session.get(DatasetVersion, version_id)
    dataset = session.get(Dataset, found.dataset_id) if found is not None else None
    if found is None or dataset is None or not principal.can_see_unit(dataset.business_unit_id):
        raise NotFound(
            f"Dataset version {version_id!r} not found.", details={"reference_version_id": version_id}
        )
    if not found.profile:
        raise ValidationFailed(
            "That dataset version has no stored profile to compare with; profile it first "
            "(`bridgehead data profile`).",
            details={"reference_version_id": version_id},
        )
    return found


def create_monitor(
    session: Session,
    principal: Principal,
    endpoint_name: str,
    *,
    name: str,
    description: str = "",
    every_minutes: int | None = 60,
    every_rows: int | None = None,
    window_minutes: int = 1440,
    reference_version_id: str | None = None,
    target_column: str | None = None,
    settings: dict[str, Any] | None = None,
    rules: Sequence[dict[str, Any]] | None = None,
    owner_id: str | None = None,
) -> Monitor:
    require(principal, Action.MONITORING_MANAGE)
    endpoint = _endpoint(session, principal, endpoint_name)
    if endpoint.status != "active":
        raise Conflict(f"Endpoint {endpoint_name!r} is retired: there is nothing to monitor.")
    _check_schedule(every_minutes, every_rows, window_minutes)
    _reference(session, principal, reference_version_id)
    clean_rules = rules_mod.validate_rules(rules_mod.DEFAULT_RULES if rules is None else rules)
    taken = session.scalar(select(Monitor.id).where(Monitor.endpoint_id == endpoint.id, Monitor.name == name))
    if taken:
        raise AlreadyExists(f"Endpoint {endpoint_name!r} already has a monitor named {name!r}.")
    ms = now_ms()
    monitor = Monitor(
        endpoint_id=endpoint.id,
        business_unit_id=endpoint.business_unit_id,
        name=name,
        description=description,
        every_minutes=every_minutes,
        every_rows=every_rows,
        window_minutes=window_minutes,
        reference_version_id=reference_version_id,
        target_column=target_column,
        settings=_check_settings(dict(settings or {})),
        rules=clean_rules,
        enabled=True,
        status="active",
        owner_id=owner_id or principal.person_id,
        created_by=principal.person_id,
        created_ms=ms,
        updated_ms=ms,
        next_run_ms=ms + every_minutes * _MINUTE if every_minutes else None,
        rows_at_last_run=_rows_predicted(session, endpoint.id),
    )
    session.add(monitor)
    session.flush()
    # Scheduling needs a tick waiting; normally queued at start-up, queued here if that failed (database away).
    ensure_tick(session, monitor.business_unit_id, 0)
    record(
        session,
        principal,
        "monitor.create",
        "monitor",
        monitor.id,
        business_unit_id=monitor.business_unit_id,
        changes={"endpoint": endpoint.name, "name": name, "rules": clean_rules, "settings": monitor.settings},
    )
    return monitor


def list_monitors(
    session: Session, principal: Principal, endpoint_name: str | None = None
) -> Sequence[Monitor]:
    require(principal, Action.MONITORING_READ)
    stmt = _visible(principal, Monitor).where(Monitor.status == "active")
    if endpoint_name is not None:
        stmt = stmt.where(Monitor.endpoint_id == _endpoint(session, principal, endpoint_name).id)
    return session.scalars(stmt.order_by(Monitor.created_ms)).all()


def get_monitor(session: Session, principal: Principal, monitor_id: str) -> Monitor:
    require(principal, Action.MONITORING_READ)
    found: Monitor | None = session.scalar(
        _visible(principal, Monitor).where(Monitor.id == monitor_id, Monitor.status == "active")
    )
    if found is None:
        raise NotFound(f"Monitor {monitor_id!r} not found.", details={"monitor_id": monitor_id})
    return found


# What a monitor always has; the other fields it may change can be cleared with None.
_NOT_NULL = ("description", "window_minutes", "rules", "enabled")


def update_monitor(session: Session, principal: Principal, monitor_id: str, **changes: Any) -> Monitor:
    require(principal, Action.MONITORING_MANAGE)
    monitor = get_monitor(session, principal, monitor_id)
    fields = {
        "description",
        "every_minutes",
        "every_rows",
        "window_minutes",
        "reference_version_id",
        "target_column",
        "settings",
        "rules",
        "enabled",
        "owner_id",
    }
    unknown = set(changes) - fields
    if unknown:
        raise ValidationFailed(f"Cannot change {sorted(unknown)}.")
    cleared = sorted(k for k in _NOT_NULL if k in changes and changes[k] is None)
    if cleared:
        raise ValidationFailed(
            f"{', '.join(cleared)} cannot be empty: send a value, or leave the field out to keep it.",
            details={"fields": cleared},
        )
    schedule = {
        k: changes.get(k, getattr(monitor, k)) for k in ("every_minutes", "every_rows", "window_minutes")
    }
    _check_schedule(schedule["every_minutes"], schedule["every_rows"], schedule["window_minutes"])
    if "rules" in changes:
        changes["rules"] = rules_mod.validate_rules(changes["rules"])
    if "settings" in changes:
        changes["settings"] = _check_settings(dict(changes["settings"] or {}))
    if "reference_version_id" in changes:
        _reference(session, principal, changes["reference_version_id"])
    before = {k: getattr(monitor, k) for k in changes}
    for key, value in changes.items():
        setattr(monitor, key, value)
    monitor.updated_ms = now_ms()
    if "every_minutes" in changes:
        monitor.next_run_ms = (
            monitor.updated_ms + monitor.every_minutes * _MINUTE if monitor.every_minutes else None
        )
    record(
        session,
        principal,
        "monitor.update",
        "monitor",
        monitor.id,
        business_unit_id=monitor.business_unit_id,
        changes={"before": before, "after": changes},
    )
    return monitor


def delete_monitor(session: Session, principal: Principal, monitor_id: str) -> Monitor:
    require(principal, Action.MONITORING_MANAGE)
    monitor = get_monitor(session, principal, monitor_id)
    monitor.status = "deleted"
    monitor.enabled = False
    monitor.next_run_ms = None
    monitor.updated_ms = now_ms()
    record(
        session, principal, "monitor.delete", "monitor", monitor.id, business_unit_id=monitor.business_unit_id
    )
    return monitor


def runs_of(session: Session, monitor: Monitor, limit: int = 50) -> Sequence[MonitorRun]:
    return session.scalars(
        select(MonitorRun)
        .where(MonitorRun.monitor_id == monitor.id)
        .order_by(MonitorRun.window_end_ms.desc(), MonitorRun.started_ms.desc())
        .limit(limit)
    ).all()


def get_run(session: Session, principal: Principal, run_id: str) -> tuple[MonitorRun, Monitor]:
    require(principal, Action.MONITORING_READ)
    run = session.get(MonitorRun, run_id)
    monitor = session.get(Monitor, run.monitor_id) if run is not None else None
    if run is None or monitor is None or not principal.can_see_unit(monitor.business_unit_id):
        raise NotFound(f"Monitor run {run_id!r} not found.", details={"run_id": run_id})
    return run, monitor


# --- running ------------------------------------------------------------------------------------------------


@dataclass
class Resolved:
    endpoint: Endpoint
    version: ModelVersion
    model_name: str
    features: list[str]
    reference: DatasetVersion
    profile: Profile


def _rows_predicted(session: Session, endpoint_id: str) -> int:
    total = session.scalar(
        select(func.coalesce(func.sum(PredictionHour.rows), 0)).where(
            PredictionHour.endpoint_id == endpoint_id, PredictionHour.role == "primary"
        )
    )
    return int(total or 0)


def _serving_version(session: Session, endpoint: Endpoint) -> ModelVersion:
    routes = sorted((endpoint.policy or {}).get("routes", []), key=lambda r: -float(r.get("weight", 0)))
    if not routes:
        raise ValidationFailed(f"Endpoint {endpoint.name!r} serves no model version.")
    version = session.get(ModelVersion, routes[0]["version_id"])
    if version is None:
        raise NotFound(f"The model version endpoint {endpoint.name!r} serves no longer exists.")
    return version


def _training_reference(session: Session, monitor: Monitor, version: ModelVersion) -> DatasetVersion:
    if monitor.reference_version_id:
        found = session.get(DatasetVersion, monitor.reference_version_id)
        if found is None:
            raise NotFound("The monitor's reference dataset version no longer exists; choose another.")
        return found
    logged = list(version.datasets or [])
    logged.sort(key=lambda d: 0 if str(d.get("context", "")).lower() in ("training", "train") else 1)
    for d in logged:
        digest = d.get("digest")
        if not digest:
            continue
        candidates = session.scalars(
            select(DatasetVersion).where(DatasetVersion.digest == digest).order_by(DatasetVersion.created_ms)
        ).all()
        for candidate in candidates:
            if candidate.profile:
                return candidate
    raise ValidationFailed(
        "No reference to compare with: the serving version's run logged no profiled training dataset. Set the "
        "monitor's reference_version_id to a profiled dataset version.",
        details={"monitor_id": monitor.id},
    )


def resolve(session: Session, monitor: Monitor) -> Resolved:
    """What a run of the monitor compares (see the module docstring); a clear error when something is missing."""
    endpoint = session.get(Endpoint, monitor.endpoint_id)
    if endpoint is None or endpoint.status != "active":
        raise Conflict(
            "The monitored endpoint was retired: this monitor has nothing to watch. Delete it or deploy again.",
            details={"monitor_id": monitor.id},
        )
    version = _serving_version(session, endpoint)
    model = session.get(RegisteredModel, version.model_id)
    reference = _training_reference(session, monitor, version)
    profile = Profile.from_state(json.loads(reference.profile))
    signature = Signature.from_stored(version.signature or {})
    features = list(signature.columns) if signature is not None else []
    if not features:
        target = monitor.target_column
        features = [c for c in profile.columns if c != target]
    return Resolved(endpoint, version, model.name if model else "", features, reference, profile)


def _labels(session: Session, endpoint_id: str, since_ms: int) -> tuple[dict[str, Any], int]:
    """Labels given since the window began (a label cannot precede its prediction), and overrides."""
    labels: dict[str, Any] = {}
    overrides = 0
    rows = session.execute(
        select(Feedback.request_id, Feedback.kind, Feedback.value).where(
            Feedback.endpoint_id == endpoint_id, Feedback.created_ms >= since_ms
        )
    )
    for request_id, kind, value in rows:
        if kind == "label":
            labels[request_id] = value
        else:
            overrides += 1
    return labels, overrides


def _baseline(version: ModelVersion, settings: dict[str, Any]) -> dict[str, float]:
    snapshot = version.metrics or {}
    out: dict[str, float] = {}
    for name, candidates in BASELINE_NAMES.items():
        for key in candidates:
            value = snapshot.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                out[name] = float(value)
                break
    out.update({k: float(v) for k, v in (settings.get("baseline") or {}).items()})
    return out


def _peeked(batches: Iterator[pa.RecordBatch]) -> tuple[pa.RecordBatch | None, Iterator[pa.RecordBatch]]:
    first = next(batches, None)

    def chain() -> Iterator[pa.RecordBatch]:
        if first is not None:
            yield first
        yield from batches

    return first, chain()


def _task(first: pa.RecordBatch | None, settings: dict[str, Any]) -> str:
    if settings.get("task"):
        return str(settings["task"])
    if first is None:
        return "classification"
    outputs = first.column("outputs")
    if pa.types.is_struct(outputs.type):
        names = {outputs.type.field(i).name for i in range(outputs.type.num_fields)}
        if "probabilities" in names:
            return "classification"
        if "prediction" in names and pa.types.is_floating(outputs.type.field("prediction").type):
            return "regression"
    return "classification"


def run_monitor(
    session: Session,
    monitor_id: str,
    *,
    log_root: Path,
    trigger: str = "schedule",
    end_ms: int | None = None,
    notify_attempts: int = NOTIFY_ATTEMPTS,
) -> MonitorRun:
    """Compute one run of the monitor over the window ending at ``end_ms`` (now), record it, and open or
    update the incident, in one session. Failures are recorded as a failed run with the reason (returned, not
    raised). Workers use `compute_run` in a read transaction and `record_run` in a short write one."""
    return record_run(
        session,
        compute_run(session, monitor_id, log_root=log_root, trigger=trigger, end_ms=end_ms),
        notify_attempts=notify_attempts,
    )


def compute_run(
    session: Session,
    monitor_id: str,
    *,
    log_root: Path,
    trigger: str = "schedule",
    end_ms: int | None = None,
) -> MonitorRun:
    """The run of the monitor over the window ending at ``end_ms`` (now), not yet added to any session: the
    report, its metrics and the breached rules, or the reason it failed. Reads only."""
    monitor = session.get(Monitor, monitor_id)
    if monitor is None or monitor.status != "active":
        raise NotFound(f"Monitor {monitor_id!r} not found (deleted?).", details={"monitor_id": monitor_id})
    started = now_ms()
    end = end_ms if end_ms is not None else started
    start = end - monitor.window_minutes * _MINUTE
    run = MonitorRun(
        monitor_id=monitor.id,
        trigger=trigger,
        window_start_ms=start,
        window_end_ms=end,
        started_ms=started,
    )
    try:
        resolved = resolve(session, monitor)
        settings = dict(monitor.settings or {})
        references = references_from_profile(resolved.profile)
        target_name = monitor.target_column
        if target_name is None:
            others = [c for c in references if c not in resolved.features]
            target_name = others[0] if len(others) == 1 else None
        target = references.get(target_name) if target_name else None
        tags = resolved.reference.column_tags or {}
        protected = settings.get("protected")
        if protected is None:
            protected = [c for c in resolved.features if "protected" in (tags.get(c, {}).get("tags") or [])]
        labels, overrides = _labels(session, resolved.endpoint.id, start)
        first, batches = _peeked(
            iter(
                predlog.read_log(
                    log_root,
                    resolved.endpoint.name,
                    start_ms=start,
                    end_ms=end,
                    columns=["request_id", "version", "role", "status", "inputs", "outputs"],
                )
            )
        )
        inputs = ReportInputs(
            references=references,
            features=resolved.features,
            target=target,
            labels=labels,
            overrides=overrides,
            protected=list(protected),
            task=_task(first, settings),
            positive=settings.get("positive", 1),
            baseline=_baseline(resolved.version, settings),
            column_overrides=_overrides(settings),
            drift_share=float(settings.get("drift_share", 0.5)),
        )
        report = build_report(inputs, batches)
        report["model"] = {"name": resolved.model_name, "version": resolved.version.version}
        report["reference"] = {
            "dataset_version_id": resolved.reference.id,
            "rows": resolved.reference.row_count,
            "target": target_name,
        }
        breaches, missing = rules_mod.evaluate_rules(monitor.rules or [], report["metrics"])
        report["rules"] = {"breaches": breaches, "not_evaluated": missing}
        run.status = "succeeded"
        run.rows = report["rows"]
        run.report = _json_safe(report)
        run.metrics = run.report["metrics"]
    except BridgeheadError as exc:
        run.status, run.error = "failed", exc.message
        breaches = []
    except (OSError, ValueError, KeyError, TypeError, pa.ArrowException) as exc:
        run.status, run.error = "failed", f"{type(exc).__name__}: {exc}"
        breaches = []
    run.finished_ms = now_ms()
    run.breaches = _json_safe(breaches)
    return run


def record_run(session: Session, run: MonitorRun, *, notify_attempts: int = NOTIFY_ATTEMPTS) -> MonitorRun:
    """Store a computed run, and open or update the monitor's incident when rules were breached."""
    monitor = session.get(Monitor, run.monitor_id)
    if monitor is None or monitor.status != "active":
        raise NotFound("The monitor was deleted while it ran.", details={"monitor_id": run.monitor_id})
    monitor.last_run_ms = run.window_end_ms
    session.add(run)
    session.flush()
    if run.breaches:
        incident = _open_or_update(session, monitor, run, list(run.breaches), notify_attempts)
        run.incident_id = incident.id
    return run


def _json_safe(value: Any) -> Any:
    """NaN and infinities as None, at any depth (JSON columns, PostgreSQL's above all, and browsers take no
    NaN); other values as JSON has them."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, str | int | bool):
        return value
    return json.loads(json.dumps(value, default=str))


def _title(monitor: Monitor, endpoint: Endpoint | None, breaches: list[dict[str, Any]]) -> str:
    what = ", ".join(sorted({b["metric"] for b in breaches}))
    return f"{endpoint.name if endpoint else '?'} / {monitor.name}: {what}"[:300]


def _open_or_update(
    session: Session, monitor: Monitor, run: MonitorRun, breaches: list[dict[str, Any]], notify_attempts: int
) -> Incident:
    severity = rules_mod.worst(breaches)
    endpoint = session.get(Endpoint, monitor.endpoint_id)
    incident: Incident | None = session.scalar(
        select(Incident)
        .where(Incident.monitor_id == monitor.id, Incident.status != "resolved")
        .order_by(Incident.opened_ms.desc())
        .limit(1)
    )
    ms = now_ms()
    if incident is None:
        incident = Incident(
            monitor_id=monitor.id,
            endpoint_id=monitor.endpoint_id,
            business_unit_id=monitor.business_unit_id,
            title=_title(monitor, endpoint, breaches),
            severity=severity,
            status="open",
            owner_id=monitor.owner_id,
            opened_ms=ms,
            run_ids=[run.id],
            breaches=breaches,
            occurrences=1,
            last_seen_ms=ms,
        )
        session.add(incident)
        session.flush()
        record(
            session,
            SYSTEM,
            "incident.open",
            "incident",
            incident.id,
            business_unit_id=incident.business_unit_id,
            changes={"monitor": monitor.id, "severity": severity, "breaches": breaches, "run": run.id},
        )
        _notify(session, incident, "incident.opened", notify_attempts)
        return incident
    escalated = rules_mod.SEVERITIES.index(severity) > rules_mod.SEVERITIES.index(incident.severity)
    incident.run_ids = [*(incident.run_ids or []), run.id][-200:]
    incident.breaches = breaches
    incident.occurrences += 1
    incident.last_seen_ms = ms
    if escalated:
        incident.severity = severity
        incident.title = _title(monitor, endpoint, breaches)
        record(
            session,
            SYSTEM,
            "incident.escalate",
            "incident",
            incident.id,
            business_unit_id=incident.business_unit_id,
            changes={"severity": severity, "run": run.id},
        )
        _notify(session, incident, "incident.escalated", notify_attempts)
    return incident


# --- scheduling ---------------------------------------------------------------------------------------------


def tick(session: Session, *, at_ms: int | None = None) -> list[str]:
    """Queue a run for each monitor that is due (its interval passed, or its row count was reached); return the
    monitor ids. Safe to run concurrently: a monitor is claimed by moving its next run time, conditionally."""
    ms = at_ms if at_ms is not None else now_ms()
    queued: list[str] = []
    due = session.scalars(select(Monitor).where(Monitor.status == "active", Monitor.enabled.is_(True))).all()
    for monitor in due:
        trigger = None
        if monitor.every_minutes and monitor.next_run_ms is not None and monitor.next_run_ms <= ms:
            step = monitor.every_minutes * _MINUTE
            missed = (ms - monitor.next_run_ms) // step + 1
            claimed = session.execute(
                update(Monitor)
                .where(Monitor.id == monitor.id, Monitor.next_run_ms == monitor.next_run_ms)
                .values(next_run_ms=monitor.next_run_ms + missed * step)
            )
            trigger = "schedule" if claimed.rowcount == 1 else None  # type: ignore[attr-defined]
        elif monitor.every_rows:
            rows = _rows_predicted(session, monitor.endpoint_id)
            if rows - monitor.rows_at_last_run >= monitor.every_rows:
                claimed = session.execute(
                    update(Monitor)
                    .where(Monitor.id == monitor.id, Monitor.rows_at_last_run == monitor.rows_at_last_run)
                    .values(rows_at_last_run=rows)
                )
                trigger = "rows" if claimed.rowcount == 1 else None  # type: ignore[attr-defined]
        if trigger:
            jobs.enqueue(
                session,
                SYSTEM,
                RUN_KIND,
                {"monitor_id": monitor.id, "trigger": trigger, "end_ms": ms},
                business_unit_id=monitor.business_unit_id,
                max_attempts=2,
                audit=False,
            )
            queued.append(monitor.id)
    return queued


def ensure_tick(session: Session, unit_id: str, every_s: float, *, exclude: str | None = None) -> Job | None:
    """Queue the next scheduling tick unless one is already waiting (``exclude``: the tick now running)."""
    waiting = select(Job.id).where(Job.kind == TICK_KIND, Job.status.in_(("queued", "running")))
    if exclude is not None:
        waiting = waiting.where(Job.id != exclude)
    if session.scalar(waiting.limit(1)):
        return None
    return jobs.enqueue(
        session,
        SYSTEM,
        TICK_KIND,
        {},
        business_unit_id=unit_id,
        max_attempts=1,
        audit=False,
        run_after=datetime.now(UTC) + timedelta(seconds=every_s),
    )


def run_now(session: Session, principal: Principal, monitor_id: str) -> Job:
    """Queue a run of the monitor now (a person asked for it)."""
    require(principal, Action.MONITORING_MANAGE)
    monitor = get_monitor(session, principal, monitor_id)
    return jobs.enqueue(
        session,
        principal,
        RUN_KIND,
        {"monitor_id": monitor.id, "trigger": "manual"},
        business_unit_id=monitor.business_unit_id,
        max_attempts=1,
    )


# --- incidents ----------------------------------------------------------------------------------------------


def list_incidents(
    session: Session,
    principal: Principal,
    *,
    status: str | None = None,
    endpoint_name: str | None = None,
    limit: int = 100,
) -> Sequence[Incident]:
    require(principal, Action.MONITORING_READ)
    stmt = _visible(principal, Incident)
    if status is not None:
        if status not in STATUSES:
            raise ValidationFailed(f"status must be one of {', '.join(STATUSES)}.")
        stmt = stmt.where(Incident.status == status)
    if endpoint_name is not None:
        stmt = stmt.where(Incident.endpoint_id == _endpoint(session, principal, endpoint_name).id)
    return session.scalars(stmt.order_by(Incident.opened_ms.desc()).limit(limit)).all()


def get_incident(session: Session, principal: Principal, incident_id: str) -> Incident:
    require(principal, Action.MONITORING_READ)
    found: Incident | None = session.scalar(_visible(principal, Incident).where(Incident.id == incident_id))
    if found is None:
        raise NotFound(f"Incident {incident_id!r} not found.", details={"incident_id": incident_id})
    return found


def acknowledge(session: Session, principal: Principal, incident_id: str, note: str = "") -> Incident:
    require(principal, Action.INCIDENT_HANDLE)
    incident = get_incident(session, principal, incident_id)
    if incident.status != "open":
        raise Conflict(f"Incident is {incident.status}; only an open incident can be acknowledged.")
    incident.status = "acknowledged"
    incident.acknowledged_ms = now_ms()
    incident.acknowledged_by = principal.person_id
    if incident.owner_id is None:
        incident.owner_id = principal.person_id
    record(
        session,
        principal,
        "incident.acknowledge",
        "incident",
        incident.id,
        business_unit_id=incident.business_unit_id,
        changes={
            "note": note,
            "seconds_to_acknowledge": (incident.acknowledged_ms - incident.opened_ms) / 1000,
        },
    )
    return incident


def resolve_incident(session: Session, principal: Principal, incident_id: str, resolution: str) -> Incident:
    require(principal, Action.INCIDENT_HANDLE)
    if not resolution.strip():
        raise ValidationFailed("Say how the incident was resolved (retrained, rolled back, false alarm...).")
    incident = get_incident(session, principal, incident_id)
    if incident.status == "resolved":
        raise Conflict("Incident is already resolved.")
    ms = now_ms()
    if incident.acknowledged_ms is None:
        incident.acknowledged_ms = ms
        incident.acknowledged_by = principal.person_id
    incident.status = "resolved"
    incident.resolved_ms = ms
    incident.resolved_by = principal.person_id
    incident.resolution = resolution.strip()
    record(
        session,
        principal,
        "incident.resolve",
        "incident",
        incident.id,
        business_unit_id=incident.business_unit_id,
        changes={"resolution": incident.resolution, "seconds_to_resolve": (ms - incident.opened_ms) / 1000},
    )
    return incident


def assign(session: Session, principal: Principal, incident_id: str, owner_id: str) -> Incident:
    require(principal, Action.INCIDENT_HANDLE)
    incident = get_incident(session, principal, incident_id)
    before = incident.owner_id
    incident.owner_id = owner_id
    record(
        session,
        principal,
        "incident.assign",
        "incident",
        incident.id,
        business_unit_id=incident.business_unit_id,
        changes={"before": before, "after": owner_id},
    )
    return incident


# --- notification channels ----------------------------------------------------------------------------------


def create_channel(
    session: Session,
    principal: Principal,
    *,
    name: str,
    kind: str,
    target: str,
    min_severity: str = "warning",
    server_key: str,
) -> tuple[NotificationChannel, str | None]:
    """A channel for the principal's unit; for a webhook, also its signing secret (shown once: it is derived
    from the server key and the channel id, never stored)."""
    from bridgehead.monitoring import notify

    require(principal, Action.MONITORING_MANAGE)
    if kind not in ("webhook", "email"):
        raise ValidationFailed("kind must be 'webhook' or 'email'.", details={"kind": kind})
    if min_severity not in rules_mod.SEVERITIES:
        raise ValidationFailed(f"min_severity must be one of {', '.join(rules_mod.SEVERITIES)}.")
    if kind == "webhook":
        notify.check_url(target)
    else:
        recipients = addresses(target)
        if not recipients:
            raise ValidationFailed("Give at least one e-mail address (comma-separated).")
        for address in recipients:
            notify.check_address(address)
    if session.scalar(
        select(NotificationChannel.id).where(
            NotificationChannel.business_unit_id == principal.business_unit_id,
            NotificationChannel.name == name,
        )
    ):
        raise AlreadyExists(f"Your unit already has a channel named {name!r}.")
    channel = NotificationChannel(
        business_unit_id=principal.business_unit_id,
        name=name,
        kind=kind,
        target=target,
        min_severity=min_severity,
        enabled=True,
        created_by=principal.person_id,
        created_ms=now_ms(),
    )
    session.add(channel)
    session.flush()
    record(
        session,
        principal,
        "channel.create",
        "notification_channel",
        channel.id,
        business_unit_id=channel.business_unit_id,
        changes={"name": name, "kind": kind, "target": target},
    )
    secret = notify.channel_secret(server_key, channel.id) if kind == "webhook" else None
    return channel, secret


def addresses(target: str) -> list[str]:
    return [a.strip() for a in target.split(",") if a.strip()]


def list_channels(session: Session, principal: Principal) -> Sequence[NotificationChannel]:
    require(principal, Action.MONITORING_READ)
    return session.scalars(_visible(principal, NotificationChannel).order_by(NotificationChannel.name)).all()


def delete_channel(session: Session, principal: Principal, channel_id: str) -> None:
    require(principal, Action.MONITORING_MANAGE)
    channel: NotificationChannel | None = session.scalar(
        _visible(principal, NotificationChannel).where(NotificationChannel.id == channel_id)
    )
    if channel is None:
        raise NotFound(f"Channel {channel_id!r} not found.")
    session.delete(channel)
    record(
        session,
        principal,
        "channel.delete",
        "notification_channel",
        channel_id,
        business_unit_id=channel.business_unit_id,
        changes={"name": channel.name},
    )


def _notify(session: Session, incident: Incident, event: str, attempts: int) -> list[Job]:
    """One delivery job per enabled channel of the incident's unit whose minimum severity it reaches (tried up
    to ``attempts`` times, with backoff, by the job queue)."""
    level = rules_mod.SEVERITIES.index(incident.severity)
    queued = []
    for channel in session.scalars(
        select(NotificationChannel).where(
            NotificationChannel.business_unit_id == incident.business_unit_id,
            NotificationChannel.enabled.is_(True),
        )
    ):
        if rules_mod.SEVERITIES.index(channel.min_severity) > level:
            continue
        queued.append(
            jobs.enqueue(
                session,
                SYSTEM,
                NOTIFY_KIND,
                {"channel_id": channel.id, "incident_id": incident.id, "event": event},
                business_unit_id=incident.business_unit_id,
                max_attempts=attempts,
                audit=False,
            )
        )
    return queued


@dataclass(frozen=True)
class Delivery:
    """One notification of an incident: its job, and the channel it was for (None once deleted)."""

    job: Job
    channel: NotificationChannel | None

    @property
    def channel_id(self) -> str:
        return _channel_of(self.job)

    @property
    def event(self) -> str:
        return str(self.job.params.get("event", ""))


def _channel_of(job: Job) -> str:
    return str(job.params.get("channel_id", ""))


def incident_deliveries(session: Session, incident: Incident) -> list[Delivery]:
    """The deliveries of the incident's notifications, oldest first: one delivery job per channel and event
    (``_notify``). Jobs past ``BRIDGEHEAD_JOBS_RETENTION_DAYS`` are purged, and their deliveries with them."""
    found = list(
        session.scalars(
            select(Job)
            .where(
                Job.kind == NOTIFY_KIND,
                Job.business_unit_id == incident.business_unit_id,
                Job.params["incident_id"].as_string() == incident.id,
            )
            .order_by(Job.created_at, Job.id)
        )
    )
    wanted = {_channel_of(j) for j in found}
    channels = {
        c.id: c
        for c in session.scalars(select(NotificationChannel).where(NotificationChannel.id.in_(wanted)))
    }
    return [Delivery(j, channels.get(_channel_of(j))) for j in found]


def incident_payload(session: Session, incident: Incident, event: str, base_url: str = "") -> dict[str, Any]:
    monitor = session.get(Monitor, incident.monitor_id)
    endpoint = session.get(Endpoint, incident.endpoint_id)
    return {
        "event": event,
        "incident": {
            "id": incident.id,
            "title": incident.title,
            "severity": incident.severity,
            "status": incident.status,
            "opened": datetime.fromtimestamp(incident.opened_ms / 1000, UTC).isoformat(),
            "occurrences": incident.occurrences,
            "breaches": incident.breaches,
            "url": f"{base_url}/incidents/{incident.id}" if base_url else f"/incidents/{incident.id}",
        },
        "monitor": {"id": monitor.id, "name": monitor.name} if monitor else None,
        "endpoint": endpoint.name if endpoint else None,
    }
