"""Tracking operations shared by the native API, the MLflow adapter, the console and the SDK."""

from __future__ import annotations

import json
import math
import operator
import random
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import (
    Connection,
    Row,
    Select,
    and_,
    case,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session, aliased

from bridgehead.audit.service import record
from bridgehead.auth.service import Principal
from bridgehead.errors import (
    AlreadyExists,
    BadRequest,
    BridgeheadError,
    Conflict,
    NotFound,
    PermissionDenied,
    ValidationFailed,
)
from bridgehead.org.models import BusinessUnit
from bridgehead.store.artifacts import safe_relative_path
from bridgehead.store.base import new_id
from bridgehead.store.db import translate_db_errors
from bridgehead.tracking.models import (
    DEFAULT_EXPERIMENT_ID,
    DatasetInput,
    Experiment,
    ExperimentTag,
    LatestMetric,
    LoggedModel,
    Metric,
    Param,
    Run,
    RunTag,
)
from bridgehead.tracking.search import Clause, OrderBy, parse_filter, parse_order_by

__all__ = [
    "DEFAULT_EXPERIMENT_ID",
    "MetricIn",
    "MetricPoint",
    "check_writable",
    "count_experiments",
    "count_metric_history",
    "count_runs",
    "create_experiment",
    "create_run",
    "get_experiment",
    "get_experiment_by_name",
    "get_run",
    "log_batch",
    "log_inputs",
    "log_points_on_driver",
    "metric_history",
    "now_ms",
    "run_artifact_root",
    "run_data",
    "search_experiments",
    "search_runs",
    "set_experiment_description",
    "update_run",
    "writable_experiment",
    "writable_run",
]

MAX_KEY = 250
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 8000
RUN_STATUSES = ("RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED")
_ADJ = (
    "amber",
    "brisk",
    "calm",
    "deft",
    "eager",
    "fleet",
    "grand",
    "keen",
    "lucid",
    "mellow",
    "nimble",
    "quiet",
    "rapid",
    "sunny",
    "tidy",
    "vivid",
    "witty",
    "zesty",
)
_NOUN = (
    "otter",
    "heron",
    "lynx",
    "finch",
    "koala",
    "marten",
    "orca",
    "panda",
    "quail",
    "robin",
    "seal",
    "tapir",
    "viper",
    "wren",
    "yak",
    "zebra",
)


def now_ms() -> int:
    return int(time.time() * 1000)


class MetricIn(NamedTuple):
    """One metric point to log. A tuple: ``log_batch`` takes up to 1,000 a call, and unpacks them fast."""

    key: str
    value: float
    timestamp_ms: int
    step: int = 0
    model_id: str | None = None


# What ``log_batch`` takes: a `MetricIn`, or the same fields as a plain tuple (the logging lane builds those).
MetricPoint = MetricIn | tuple[str, float, int, int, str | None]


@dataclass
class RunData:
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    metrics: list[LatestMetric] = field(default_factory=list)
    inputs: list[DatasetInput] = field(default_factory=list)


def add_unique(session: Session, obj: Any, error: BridgeheadError) -> None:
    """Insert ``obj`` now. When a concurrent transaction inserted the same unique name first, raise ``error``
    (e.g. AlreadyExists, which clients handle) rather than a generic conflict at commit."""
    try:
        with session.begin_nested(), translate_db_errors():
            session.add(obj)
            session.flush()
    except Conflict as exc:
        raise error from exc


def check_key(key: str, what: str) -> None:
    if not key or len(key) > MAX_KEY:
        raise ValidationFailed(
            f"{what} key must be 1 to {MAX_KEY} characters.", details={"key": key[:MAX_KEY]}
        )
    if ".." in key.split("/") or key.startswith("/"):
        raise ValidationFailed(f"{what} key {key!r} is not a valid name.", details={"key": key})


# --- visibility -------------------------------------------------------------------------------


def visible(stmt: Select[Any], model: Any, principal: Principal) -> Select[Any]:
    """Restrict a query on an owned table to what the principal may see."""
    if principal.sees_all_units:
        return stmt
    return stmt.where(
        or_(model.business_unit_id == principal.business_unit_id, model.visibility == "organization")
    )


def check_writable(
    principal: Principal, business_unit_id: str, what: str, *, author_id: str | None = None
) -> None:
    """Organization visibility shares reading only: changing an object takes its own unit (or central staff).
    The author of a run may always write to it (runs in the org-wide Default experiment belong to the
    central unit)."""
    if principal.can_see_unit(business_unit_id) or (
        author_id is not None and author_id == principal.person_id
    ):
        return
    raise PermissionDenied(
        f"This {what} belongs to another business unit; it is shared for reading only.",
        details={"business_unit_id": business_unit_id},
    )


def writable_experiment(session: Session, principal: Principal, experiment_id: str) -> Experiment:
    """An experiment the principal may change. Every write path (native API, MLflow API, console, SDK)
    passes here, so an organization-shared experiment stays read-only for other units whichever door
    is used."""
    exp = get_experiment(session, principal, experiment_id)
    check_writable(principal, exp.business_unit_id, "experiment")
    return exp


def writable_run(session: Session, principal: Principal, run_id: str) -> Run:
    """A run the principal may change (its unit's, central staff's, or its own author's)."""
    run = get_run(session, principal, run_id)
    check_writable(principal, run.business_unit_id, "run", author_id=run.author_id)
    return run


# --- experiments ------------------------------------------------------------------------------


def get_experiment(session: Session, principal: Principal, experiment_id: str) -> Experiment:
    exp: Experiment | None = session.scalar(
        visible(select(Experiment), Experiment, principal).where(Experiment.id == experiment_id)
    )
    if exp is None:
        raise NotFound(
            f"Experiment {experiment_id!r} does not exist.", details={"experiment_id": experiment_id}
        )
    return exp


def get_experiment_by_name(session: Session, principal: Principal, name: str) -> Experiment:
    exp: Experiment | None = session.scalar(
        visible(select(Experiment), Experiment, principal).where(Experiment.name == name)
    )
    if exp is None:
        raise NotFound(f"Experiment {name!r} does not exist.", details={"name": name})
    return exp


def create_experiment(
    session: Session,
    principal: Principal,
    name: str,
    *,
    tags: dict[str, str] | None = None,
    business_unit_id: str | None = None,
    use_case_id: str | None = None,
    description: str = "",
    visibility: str = "private",
) -> Experiment:
    name = name.strip()
    if not name or len(name) > 500:
        raise ValidationFailed("Experiment name must be 1 to 500 characters.", details={"name": name[:500]})
    unit = business_unit_id or principal.business_unit_id
    if not principal.can_see_unit(unit) or session.get(BusinessUnit, unit) is None:
        raise NotFound(f"Business unit {unit!r} does not exist.", details={"business_unit_id": unit})
    if session.scalar(select(Experiment.id).where(Experiment.name == name)) is not None or name == "Default":
        raise AlreadyExists(f"Experiment '{name}' already exists.", details={"name": name})
    ms = now_ms()
    exp = Experiment(
        id=new_id(),  # the artifact location below names it before the insert
        name=name,
        business_unit_id=unit,
        visibility=visibility,
        owner_id=principal.person_id,
        use_case_id=use_case_id,
        description=description,
        artifact_location="",
        created_ms=ms,
        updated_ms=ms,
    )
    exp.artifact_location = f"mlflow-artifacts:/{exp.id}"
    add_unique(session, exp, AlreadyExists(f"Experiment '{name}' already exists.", details={"name": name}))
    for key, value in (tags or {}).items():
        check_key(key, "Tag")
        session.add(ExperimentTag(experiment_id=exp.id, key=key, value=value))
    session.flush()
    record(
        session,
        principal,
        "experiment.create",
        "experiment",
        exp.id,
        business_unit_id=unit,
        changes={"name": name, "visibility": visibility},
    )
    return exp


def experiment_tags(session: Session, experiment_id: str) -> dict[str, str]:
    rows = session.scalars(select(ExperimentTag).where(ExperimentTag.experiment_id == experiment_id))
    return {t.key: t.value for t in rows}


def set_experiment_tag(
    session: Session, principal: Principal, experiment_id: str, key: str, value: str
) -> None:
    exp = writable_experiment(session, principal, experiment_id)
    check_key(key, "Tag")
    session.merge(ExperimentTag(experiment_id=exp.id, key=key, value=value))


def set_experiment_lifecycle(session: Session, principal: Principal, experiment_id: str, stage: str) -> None:
    exp = writable_experiment(session, principal, experiment_id)
    if exp.id == DEFAULT_EXPERIMENT_ID and stage == "deleted":
        raise BadRequest("The Default experiment cannot be deleted.")
    exp.lifecycle_stage = stage
    exp.updated_ms = now_ms()
    record(
        session,
        principal,
        "experiment.delete" if stage == "deleted" else "experiment.restore",
        "experiment",
        exp.id,
        business_unit_id=exp.business_unit_id,
    )


def rename_experiment(session: Session, principal: Principal, experiment_id: str, new_name: str) -> None:
    exp = writable_experiment(session, principal, experiment_id)
    if session.scalar(select(Experiment.id).where(Experiment.name == new_name)) is not None:
        raise AlreadyExists(f"Experiment '{new_name}' already exists.", details={"name": new_name})
    record(
        session,
        principal,
        "experiment.update",
        "experiment",
        exp.id,
        business_unit_id=exp.business_unit_id,
        changes={"name": {"from": exp.name, "to": new_name}},
    )
    exp.name = new_name
    exp.updated_ms = now_ms()


def set_experiment_description(
    session: Session, principal: Principal, experiment_id: str, description: str
) -> None:
    exp = writable_experiment(session, principal, experiment_id)
    if exp.description == description:
        return
    record(
        session,
        principal,
        "experiment.update",
        "experiment",
        exp.id,
        business_unit_id=exp.business_unit_id,
        changes={"description": {"from": exp.description, "to": description}},
    )
    exp.description = description
    exp.updated_ms = now_ms()


def count_experiments(
    session: Session, principal: Principal, *, name_like: str | None = None, view_type: str = "ACTIVE_ONLY"
) -> int:
    """How many experiments ``search_experiments`` finds with these filters and no limit."""
    stmt = visible(select(func.count()).select_from(Experiment), Experiment, principal)
    if view_type == "ACTIVE_ONLY":
        stmt = stmt.where(Experiment.lifecycle_stage == "active")
    elif view_type == "DELETED_ONLY":
        stmt = stmt.where(Experiment.lifecycle_stage == "deleted")
    if name_like:
        stmt = stmt.where(Experiment.name.like(name_like))
    return int(session.scalar(stmt) or 0)


_EXPERIMENT_COLUMNS = {
    "name": Experiment.name,
    "experiment_id": Experiment.id,
    "creation_time": Experiment.created_ms,
    "last_update_time": Experiment.updated_ms,
}


def search_experiments(
    session: Session,
    principal: Principal,
    *,
    name_like: str | None = None,
    view_type: str = "ACTIVE_ONLY",
    limit: int = 1000,
    offset: int = 0,
    filter_string: str | None = None,
    order_by: list[str] | None = None,
) -> Sequence[Experiment]:
    """Experiments the principal may see; ``filter_string`` and ``order_by`` use MLflow's grammar over
    ``name``, ``creation_time``, ``last_update_time``, ``experiment_id`` and ``tags.<key>``."""
    stmt = visible(select(Experiment), Experiment, principal)
    if view_type == "ACTIVE_ONLY":
        stmt = stmt.where(Experiment.lifecycle_stage == "active")
    elif view_type == "DELETED_ONLY":
        stmt = stmt.where(Experiment.lifecycle_stage == "deleted")
    if name_like:
        stmt = stmt.where(Experiment.name.like(name_like))
    for clause in parse_filter(filter_string, _EXPERIMENT_COLUMNS):
        if clause.entity == "attributes":
            value = clause.value
            if clause.key in ("creation_time", "last_update_time") and isinstance(value, str):
                raise BadRequest(f"{clause.key} needs a number.", details={"key": clause.key})
            stmt = stmt.where(_compare(_EXPERIMENT_COLUMNS[clause.key], clause.op, value))
        elif clause.entity == "tags":
            t = aliased(ExperimentTag)
            if clause.op == "!=":
                present = select(t.experiment_id).where(
                    t.experiment_id == Experiment.id, t.key == clause.key, t.value == clause.value
                )
                stmt = stmt.where(~present.exists())
            else:
                stmt = stmt.where(
                    select(t.experiment_id)
                    .where(
                        t.experiment_id == Experiment.id,
                        t.key == clause.key,
                        _compare(t.value, clause.op, clause.value),
                    )
                    .exists()
                )
        else:
            raise BadRequest(f"Experiments cannot be searched by {clause.entity}.")
    ordering: list[Any] = []
    for order in parse_order_by(order_by, _EXPERIMENT_COLUMNS):
        if order.entity != "attributes":
            raise BadRequest(f"Experiments cannot be ordered by {order.entity}.")
        column = _EXPERIMENT_COLUMNS[order.key]
        ordering.append(column.asc() if order.ascending else column.desc())
    ordering += [Experiment.created_ms.desc(), Experiment.id]
    return session.scalars(stmt.order_by(*ordering).limit(limit).offset(offset)).all()


def experiment_tags_for(session: Session, experiment_ids: list[str]) -> dict[str, dict[str, str]]:
    """Tags of several experiments in one query."""
    tags: dict[str, dict[str, str]] = {eid: {} for eid in experiment_ids}
    if experiment_ids:
        for t in session.scalars(
            select(ExperimentTag).where(ExperimentTag.experiment_id.in_(experiment_ids))
        ):
            tags[t.experiment_id][t.key] = t.value
    return tags


def delete_experiment_tag(session: Session, principal: Principal, experiment_id: str, key: str) -> None:
    exp = writable_experiment(session, principal, experiment_id)
    found = session.get(ExperimentTag, (exp.id, key))
    if found is None:
        raise NotFound(f"No tag with name: {key} in experiment {exp.id}.", details={"key": key})
    session.delete(found)


# --- runs -------------------------------------------------------------------------------------


def loggable_experiment(session: Session, principal: Principal, experiment_id: str) -> Experiment:
    """Where a new run or logged model may go: an active experiment of one's own unit, or the org-wide
    Default experiment, which anyone who may write logs to."""
    exp = get_experiment(session, principal, experiment_id or DEFAULT_EXPERIMENT_ID)
    if exp.id != DEFAULT_EXPERIMENT_ID:
        check_writable(principal, exp.business_unit_id, "experiment")
    if exp.lifecycle_stage != "active":
        raise BadRequest(f"Experiment '{exp.name}' is deleted; restore it before logging to it.")
    return exp


def random_name() -> str:
    rng = random.SystemRandom()
    return f"{rng.choice(_ADJ)}-{rng.choice(_NOUN)}-{rng.randint(100, 999)}"


def create_run(
    session: Session,
    principal: Principal,
    experiment_id: str,
    *,
    name: str | None = None,
    start_ms: int | None = None,
    tags: dict[str, str] | None = None,
) -> Run:
    exp = loggable_experiment(session, principal, experiment_id)
    tags = dict(tags or {})
    name = (name or tags.get("mlflow.runName") or random_name())[:250]
    tags["mlflow.runName"] = name
    parent = tags.get("mlflow.parentRunId")
    if parent:
        get_run(session, principal, parent)
    run = Run(
        id=new_id(),  # the artifact URI below names it before the insert
        experiment_id=exp.id,
        business_unit_id=exp.business_unit_id,
        name=name,
        status="RUNNING",
        start_ms=start_ms or now_ms(),
        author_id=principal.person_id,
        user_name=principal.email,
        source_name=tags.get("mlflow.source.name", "")[:1000],
        source_type=tags.get("mlflow.source.type", "")[:40],
        parent_run_id=parent,
        artifact_uri="",
    )
    run.artifact_uri = f"mlflow-artifacts:/{exp.id}/{run.id}/artifacts"
    session.add(run)
    session.flush()
    for key, value in tags.items():
        check_key(key, "Tag")
        session.add(RunTag(run_id=run.id, key=key, value=str(value)[:MAX_TAG_VALUE]))
    return run


def get_run(session: Session, principal: Principal, run_id: str) -> Run:
    stmt = select(Run).join(Experiment, Experiment.id == Run.experiment_id).where(Run.id == run_id)
    if not principal.sees_all_units:
        stmt = stmt.where(
            or_(Run.business_unit_id == principal.business_unit_id, Experiment.visibility == "organization")
        )
    run = session.scalar(stmt)
    if run is None:
        raise NotFound(f"Run '{run_id}' does not exist.", details={"run_id": run_id})
    return run


# The run check of the logging hot path, as driver SQL (the statement goes to the driver as it is, without
# SQLAlchemy's compilation or its parameter processing; a single log_metric spent a sixth of its time there).
_LOGGABLE_RUN = (
    "SELECT r.id, r.lifecycle_stage, r.business_unit_id, r.author_id, e.visibility FROM runs r "
    "JOIN experiments e ON e.id = r.experiment_id WHERE r.id = {p}"
)


def _loggable_run(session: Session, principal: Principal, run_id: str) -> Row[Any]:
    """The checks of ``writable_run`` and ``_active`` on four columns: the logging hot path loads no
    ORM object."""
    connection = session.connection()
    return _check_loggable(
        principal,
        run_id,
        connection.exec_driver_sql(_driver_sql(connection, _LOGGABLE_RUN), (run_id,)).one_or_none(),
    )


_RunRow = TypeVar("_RunRow", bound=Sequence[Any])


def _check_loggable(principal: Principal, run_id: str, run: _RunRow | None) -> _RunRow:
    """The run's row of `_LOGGABLE_RUN` (None: no such run) when ``principal`` may log to it."""
    if run is None:
        raise NotFound(f"Run '{run_id}' does not exist.", details={"run_id": run_id})
    _, lifecycle_stage, unit, author_id, visibility = run
    if not (principal.sees_all_units or unit == principal.business_unit_id or visibility == "organization"):
        raise NotFound(f"Run '{run_id}' does not exist.", details={"run_id": run_id})
    check_writable(principal, unit, "run", author_id=author_id)
    if lifecycle_stage != "active":
        raise BadRequest(
            f"The run {run_id} must be in the 'active' state. Current state is {lifecycle_stage}."
        )
    return run


def check_active(run: Run) -> None:
    if run.lifecycle_stage != "active":
        raise BadRequest(
            f"The run {run.id} must be in the 'active' state. Current state is {run.lifecycle_stage}."
        )


def update_run(
    session: Session,
    principal: Principal,
    run_id: str,
    *,
    status: str | None = None,
    end_ms: int | None = None,
    name: str | None = None,
) -> Run:
    run = writable_run(session, principal, run_id)
    check_active(run)
    if status is not None:
        if status not in RUN_STATUSES:
            raise ValidationFailed(f"Unknown run status {status!r}.", details={"status": status})
        run.status = status
    if end_ms is not None:
        run.end_ms = end_ms
    if name:
        run.name = name[:250]
        session.merge(RunTag(run_id=run.id, key="mlflow.runName", value=run.name))
    return run


def set_run_lifecycle(session: Session, principal: Principal, run_id: str, stage: str) -> None:
    run = writable_run(session, principal, run_id)
    run.lifecycle_stage = stage
    record(
        session,
        principal,
        "run.delete" if stage == "deleted" else "run.restore",
        "run",
        run.id,
        business_unit_id=run.business_unit_id,
    )


def run_artifact_root(run: Run) -> str:
    """The run's directory in the artifact store, relative to its root."""
    return run.artifact_uri.removeprefix("mlflow-artifacts:/").strip("/")


def delete_tag(session: Session, principal: Principal, run_id: str, key: str) -> None:
    run = writable_run(session, principal, run_id)
    check_active(run)
    found = session.get(RunTag, (run.id, key))
    if found is None:
        raise NotFound(f"No tag with name: {key} in run with id {run_id}", details={"key": key})
    session.delete(found)


# MLflow's semantics: a point identical to one already logged (key, timestamp, step, value) is stored once,
# so a retried batch is idempotent; sent again with a model id (as ``log_model`` does), the stored point is
# linked to that model. The table's key (the point) makes that one statement, with no read first.
_METRICS_UPSERT = (
    'INSERT INTO metrics (run_id, "key", value, is_nan, timestamp_ms, step, model_id) '
    "VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}) "
    'ON CONFLICT (run_id, "key", step, timestamp_ms, value, is_nan) DO UPDATE SET model_id = excluded.model_id '
    "WHERE metrics.model_id IS NULL AND excluded.model_id IS NOT NULL"
)
_DRIVER_SQL: dict[tuple[str, str], str] = {}


def _driver_sql(connection: Connection | sqlite3.Connection, template: str) -> str:
    """``template`` with the driver's positional placeholder (``?`` for sqlite3, ``%s`` for psycopg); given
    SQLAlchemy's connection or sqlite3's own."""
    style = (
        sqlite3.paramstyle if isinstance(connection, sqlite3.Connection) else connection.dialect.paramstyle
    )
    found = _DRIVER_SQL.get((style, template))
    if found is None:
        found = _DRIVER_SQL[(style, template)] = template.format(p="?" if style == "qmark" else "%s")
    return found


# The latest value per key moves only forward in (step, timestamp). Driver SQL like the points' upsert: the
# same text works on SQLite and PostgreSQL, and SQLAlchemy gives ON CONFLICT statements no cache key (the Core
# form was compiled again on every call).
_LATEST_METRIC_UPSERT = (
    'INSERT INTO latest_metrics (run_id, "key", value, is_nan, timestamp_ms, step) '
    "VALUES ({p}, {p}, {p}, {p}, {p}, {p}) "
    'ON CONFLICT (run_id, "key") DO UPDATE SET value = excluded.value, is_nan = excluded.is_nan, '
    "timestamp_ms = excluded.timestamp_ms, step = excluded.step "
    "WHERE excluded.step > latest_metrics.step OR "
    "(excluded.step = latest_metrics.step AND excluded.timestamp_ms >= latest_metrics.timestamp_ms)"
)
_STEP_THEN_TIME = operator.itemgetter(5, 4)


def log_batch(
    session: Session,
    principal: Principal,
    run_id: str,
    *,
    metrics: Iterable[MetricPoint] = (),
    params: dict[str, str] | None = None,
    tags: dict[str, str] | None = None,
) -> None:
    """Append metrics, params and tags atomically. A param's value may not change once logged."""
    run = _loggable_run(session, principal, run_id)
    params = params or {}
    for key, value in params.items():
        check_key(key, "Param")
        if len(value) > MAX_PARAM_VALUE:
            raise ValidationFailed(
                f"Param '{key}' value is longer than {MAX_PARAM_VALUE} characters.", details={"key": key}
            )
    if params:
        existing = {
            p.key: p.value
            for p in session.scalars(select(Param).where(Param.run_id == run.id, Param.key.in_(list(params))))
        }
        for key, value in params.items():
            if key in existing and existing[key] != value:
                raise BadRequest(
                    f"Changing param values is not allowed. Param with key='{key}' was already logged with "
                    f"value='{existing[key]}' for run ID='{run.id}'. Attempted logging new value '{value}'.",
                    details={"key": key},
                )
        new = [{"run_id": run.id, "key": k, "value": v} for k, v in params.items() if k not in existing]
        if new:
            session.execute(insert(Param), new)
    for key, value in (tags or {}).items():
        check_key(key, "Tag")
        session.merge(RunTag(run_id=run.id, key=key, value=str(value)[:MAX_TAG_VALUE]))
        if key == "mlflow.runName":
            session.execute(update(Run).where(Run.id == run.id).values(name=str(value)[:250]))
    rows, latest = _metric_rows(run.id, metrics)
    if rows:
        connection = session.connection()
        # Straight to the driver's executemany: SQLAlchemy's per-row parameter handling cost more than
        # SQLite's insert itself.
        connection.exec_driver_sql(_driver_sql(connection, _METRICS_UPSERT), rows)
        connection.exec_driver_sql(_driver_sql(connection, _LATEST_METRIC_UPSERT), latest)


def log_points_on_driver(
    driver: sqlite3.Connection, principal: Principal, run_id: str, metrics: Sequence[MetricPoint]
) -> None:
    """``log_batch`` for metric points alone, in a transaction of SQLite's own connection
    (``Database.driver_write``): the same checks, rows and statements, without SQLAlchemy's session and
    connection layers, which cost a single point four times what SQLite's work does."""
    _check_loggable(
        principal, run_id, driver.execute(_driver_sql(driver, _LOGGABLE_RUN), (run_id,)).fetchone()
    )
    rows, latest = _metric_rows(run_id, metrics)
    if rows:
        driver.executemany(_driver_sql(driver, _METRICS_UPSERT), rows)
        driver.executemany(_driver_sql(driver, _LATEST_METRIC_UPSERT), latest)


def _metric_rows(
    run_id: str, metrics: Iterable[MetricPoint]
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The rows of the metrics table for these points, and of latest_metrics (one per key)."""
    # Up to 1,000 points a call, so built with as little Python per point as possible. The values come from
    # the APIs' validation (floats and integers already); NaN is stored as 0.0 with its flag.
    rows = [
        (run_id, key, value, False, stamp, step, model_id) for key, value, stamp, step, model_id in metrics
    ]
    for name in {row[1] for row in rows}:
        check_key(name, "Metric")
    if any(row[2] != row[2] for row in rows):
        rows = [(*row[:2], 0.0, True, *row[4:]) if row[2] != row[2] else row for row in rows]
    # Each key's latest point by (step, timestamp); of equals, the last sent (a stable sort).
    latest = {row[1]: row[:6] for row in sorted(rows, key=_STEP_THEN_TIME)}
    return rows, list(latest.values())


def log_inputs(session: Session, principal: Principal, run_id: str, datasets: list[dict[str, Any]]) -> None:
    run = writable_run(session, principal, run_id)
    check_active(run)
    for d in datasets:
        name, digest = str(d.get("name", ""))[:500], str(d.get("digest", ""))[:64]
        if not name or not digest:
            raise ValidationFailed("Each dataset input needs a name and a digest.")
        exists = session.scalar(
            select(DatasetInput.id).where(
                DatasetInput.run_id == run.id,
                DatasetInput.name == name,
                DatasetInput.digest == digest,
                DatasetInput.context == str(d.get("context", "")),
            )
        )
        if exists is None:
            session.add(
                DatasetInput(
                    run_id=run.id,
                    name=name,
                    digest=digest,
                    source_type=str(d.get("source_type", ""))[:40],
                    source=str(d.get("source", "")),
                    schema_json=str(d.get("schema", "")),
                    profile_json=str(d.get("profile", "")),
                    context=str(d.get("context", "")),
                )
            )
            _register_input(session, principal, run.business_unit_id, name, digest, d)
    session.flush()


def _register_input(
    session: Session, principal: Principal, unit: str, name: str, digest: str, d: dict[str, Any]
) -> None:
    """A logged input becomes a version of the dataset of that name in the run's unit (created if new), so
    data logged by the SDK or the mlflow client shows up among the datasets and in lineage."""
    from bridgehead.data import service as data  # data builds on tracking; imported here to avoid a cycle

    columns, rows = input_shape(str(d.get("schema", "")), str(d.get("profile", "")))
    data.ensure_dataset_version(
        session, principal, business_unit_id=unit, name=name, digest=digest,
        source=str(d.get("source", "")), schema=columns, row_count=rows,
    )  # fmt: skip


def input_shape(schema_json: str, profile_json: str) -> tuple[list[dict[str, Any]] | None, int | None]:
    """Columns and row count of a dataset input, from the SDK's schema ({"columns", "rows"}) or mlflow's
    ({"mlflow_colspec": [...]} and a profile {"num_rows": n})."""
    columns: list[dict[str, Any]] | None = None
    rows: int | None = None
    try:
        schema = json.loads(schema_json) if schema_json else {}
        profile = json.loads(profile_json) if profile_json else {}
    except ValueError:
        return None, None
    if isinstance(schema, dict):
        specs = schema.get("columns") or schema.get("mlflow_colspec")
        if isinstance(specs, list):
            columns = [
                {"name": str(c.get("name", "")), "type": str(c.get("type", ""))}
                for c in specs
                if isinstance(c, dict)
            ]
        if isinstance(schema.get("rows"), int):
            rows = schema["rows"]
    if isinstance(profile, dict) and isinstance(profile.get("num_rows"), int):
        rows = profile["num_rows"]
    return columns, rows


def run_data(session: Session, run_ids: list[str]) -> dict[str, RunData]:
    """Params, tags, latest metrics and inputs for several runs, in four queries."""
    data = {rid: RunData() for rid in run_ids}
    if not run_ids:
        return data
    # Plain rows, not ORM objects: a search page of 500 runs carries thousands of params and tags, and
    # building an object for each was most of the cost of runs/search.
    for run_id, key, value in session.execute(
        select(Param.run_id, Param.key, Param.value).where(Param.run_id.in_(run_ids))
    ):
        data[run_id].params[key] = value
    for run_id, key, value in session.execute(
        select(RunTag.run_id, RunTag.key, RunTag.value).where(RunTag.run_id.in_(run_ids))
    ):
        data[run_id].tags[key] = value
    for m in session.scalars(select(LatestMetric).where(LatestMetric.run_id.in_(run_ids))):
        data[m.run_id].metrics.append(m)
    for d in session.scalars(select(DatasetInput).where(DatasetInput.run_id.in_(run_ids))):
        data[d.run_id].inputs.append(d)
    return data


def metric_value(value: float, is_nan: bool) -> float:
    return math.nan if is_nan else value


def json_number(value: float) -> float | str:
    """A metric for JSON, which has no NaN or infinities: those become "NaN", "Infinity", "-Infinity" (as in
    protobuf JSON and MLflow's wire format; ``float()`` reads them back)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def count_metric_history(session: Session, principal: Principal, run_id: str, key: str) -> int:
    run = get_run(session, principal, run_id)
    return int(session.scalar(select(func.count()).where(Metric.run_id == run.id, Metric.key == key)) or 0)


def metric_history(
    session: Session, principal: Principal, run_id: str, key: str, *, limit: int = 25000, offset: int = 0
) -> Sequence[Metric]:
    run = get_run(session, principal, run_id)
    return session.scalars(
        select(Metric)
        .where(Metric.run_id == run.id, Metric.key == key)
        .order_by(Metric.step, Metric.timestamp_ms, Metric.value, Metric.is_nan)
        .limit(limit)
        .offset(offset)
    ).all()


# --- run search -------------------------------------------------------------------------------

_ATTR_COLUMNS = {
    "run_id": Run.id,
    "run_uuid": Run.id,
    "run_name": Run.name,
    "status": Run.status,
    "start_time": Run.start_ms,
    "end_time": Run.end_ms,
    "user_id": Run.user_name,
    "artifact_uri": Run.artifact_uri,
    "lifecycle_stage": Run.lifecycle_stage,
    "experiment_id": Run.experiment_id,
    "name": Run.name,
    "created": Run.start_ms,
}


def compare(column: Any, op: str, value: Any) -> Any:
    """The SQL condition for one filter operator (=, !=, <, <=, >, >=, LIKE, ILIKE, IN, NOT IN)."""
    return _compare(column, op, value)


def _compare(column: Any, op: str, value: Any) -> Any:
    if op == "=":
        return column == value
    if op == "!=":
        return column != value
    if op == "<":
        return column < value
    if op == "<=":
        return column <= value
    if op == ">":
        return column > value
    if op == ">=":
        return column >= value
    if op == "LIKE":
        return column.like(value)
    if op == "ILIKE":
        return func.lower(column).like(str(value).lower())
    if op == "IN":
        return column.in_(list(value))
    if op == "NOT IN":
        return column.not_in(list(value))
    raise BadRequest(f"Unsupported operator {op!r}.")


_NUMERIC_ATTRIBUTES = ("start_time", "end_time", "created")


def _apply_clause(stmt: Select[Any], clause: Clause) -> Select[Any]:
    # Compare like with like: PostgreSQL refuses number-to-text comparisons that SQLite lets through.
    if clause.entity == "attributes":
        column = _ATTR_COLUMNS[clause.key]
        value = clause.value
        if clause.key in _NUMERIC_ATTRIBUTES:
            if clause.op in ("LIKE", "ILIKE", "IN", "NOT IN"):
                raise BadRequest(
                    f"{clause.op} is not supported on {clause.key}.", details={"key": clause.key}
                )
            if isinstance(value, str):
                try:
                    value = float(value)
                except ValueError as exc:
                    raise BadRequest(f"{clause.key} needs a number.") from exc
        elif isinstance(value, float):
            raise BadRequest(f"{clause.key} compares with a quoted string.", details={"key": clause.key})
        return stmt.where(_compare(column, clause.op, value))
    if clause.entity == "metrics" and clause.op in ("IN", "NOT IN"):
        raise BadRequest(f"{clause.op} is not supported on metrics.", details={"key": clause.key})
    if clause.entity == "datasets" and isinstance(clause.value, float):
        raise BadRequest(f"datasets.{clause.key} compares with a quoted string.", details={"key": clause.key})
    if clause.entity == "metrics":
        lm = aliased(LatestMetric)
        return stmt.where(
            select(lm.run_id)
            .where(
                lm.run_id == Run.id,
                lm.key == clause.key,
                lm.is_nan.is_(False),
                _compare(lm.value, clause.op, clause.value),
            )
            .exists()
        )
    if clause.entity == "params":
        p = aliased(Param)
        inner = select(p.run_id).where(
            p.run_id == Run.id, p.key == clause.key, _compare(p.value, clause.op, clause.value)
        )
    elif clause.entity == "tags":
        t = aliased(RunTag)
        if clause.op == "!=":
            # MLflow semantics: runs without the tag also satisfy "!=".
            present = select(t.run_id).where(t.run_id == Run.id, t.key == clause.key, t.value == clause.value)
            return stmt.where(~present.exists())
        inner = select(t.run_id).where(
            t.run_id == Run.id, t.key == clause.key, _compare(t.value, clause.op, clause.value)
        )
    else:
        d = aliased(DatasetInput)
        dcol: Any = {"name": d.name, "digest": d.digest, "context": d.context}.get(clause.key)
        if dcol is None:
            raise BadRequest(f"Invalid dataset key {clause.key!r}.")
        inner = select(d.run_id).where(d.run_id == Run.id, _compare(dcol, clause.op, clause.value))
    return stmt.where(inner.exists())


def _order_column(stmt: Select[Any], order: OrderBy, n: int) -> tuple[Select[Any], Any]:
    if order.entity == "attributes":
        return stmt, _ATTR_COLUMNS[order.key]
    table: Any = {"metrics": LatestMetric, "params": Param, "tags": RunTag}.get(order.entity)
    if table is None:
        raise BadRequest(f"Cannot order by {order.entity}.")
    alias = aliased(table, name=f"o{n}")
    stmt = stmt.outerjoin(alias, and_(alias.run_id == Run.id, alias.key == order.key))
    return stmt, alias.value


def _runs_query(
    principal: Principal, experiment_ids: list[str], filter_string: str | None, view_type: str
) -> Select[Any]:
    stmt = select(Run).join(Experiment, Experiment.id == Run.experiment_id)
    if experiment_ids:
        stmt = stmt.where(Run.experiment_id.in_(experiment_ids))
    if not principal.sees_all_units:
        stmt = stmt.where(
            or_(Run.business_unit_id == principal.business_unit_id, Experiment.visibility == "organization")
        )
    if view_type == "ACTIVE_ONLY":
        stmt = stmt.where(Run.lifecycle_stage == "active")
    elif view_type == "DELETED_ONLY":
        stmt = stmt.where(Run.lifecycle_stage == "deleted")
    for clause in parse_filter(filter_string):
        stmt = _apply_clause(stmt, clause)
    return stmt


def count_runs(
    session: Session,
    principal: Principal,
    experiment_ids: list[str],
    *,
    filter_string: str | None = None,
    view_type: str = "ACTIVE_ONLY",
) -> int:
    """How many runs ``search_runs`` finds with these filters and no limit."""
    inner = _runs_query(principal, experiment_ids, filter_string, view_type).subquery()
    return int(session.scalar(select(func.count()).select_from(inner)) or 0)


def search_runs(
    session: Session,
    principal: Principal,
    experiment_ids: list[str],
    *,
    filter_string: str | None = None,
    order_by: list[str] | None = None,
    view_type: str = "ACTIVE_ONLY",
    limit: int = 1000,
    offset: int = 0,
) -> Sequence[Run]:
    if limit < 1 or limit > 50000:
        raise BadRequest("max_results must be between 1 and 50000.", details={"max_results": limit})
    stmt = _runs_query(principal, experiment_ids, filter_string, view_type)
    ordering: list[Any] = []
    for n, order in enumerate(parse_order_by(order_by)):
        stmt, column = _order_column(stmt, order, n)
        # NULLs (runs without the metric) last in both directions, as MLflow does.
        ordering += [column.is_(None), column.asc() if order.ascending else column.desc()]
    ordering += [Run.start_ms.desc(), Run.id]
    return session.scalars(stmt.order_by(*ordering).limit(limit).offset(offset)).unique().all()


def purge_metrics(session: Session, run_id: str) -> None:
    session.execute(delete(Metric).where(Metric.run_id == run_id))
    session.execute(delete(LatestMetric).where(LatestMetric.run_id == run_id))


# --- artifacts --------------------------------------------------------------------------------


def artifact_experiment(session: Session, principal: Principal, path: str) -> str:
    """Normalise an artifact store path (``<experiment id>/...``, as in ``mlflow-artifacts:/`` URIs) and check
    that the principal may see its experiment; refuses traversal (see store.artifacts.safe_relative_path)."""
    safe = safe_relative_path(path)
    get_experiment(session, principal, safe.split("/", 1)[0])
    return safe


def artifact_write_path(session: Session, principal: Principal, path: str) -> str:
    """As ``artifact_experiment``, for writing and deleting: the experiment must be writable by the
    principal, or the path must lie in a run or logged model the principal created (as in the shared
    Default experiment)."""
    safe = artifact_experiment(session, principal, path)
    parts = safe.split("/")
    exp = get_experiment(session, principal, parts[0])
    if principal.can_see_unit(exp.business_unit_id):
        return safe
    if len(parts) > 2 and parts[1] == "models":
        model = session.get(LoggedModel, parts[2])
        if model is not None and model.experiment_id == exp.id and model.creator_id == principal.person_id:
            return safe
    elif len(parts) > 1:
        run = session.get(Run, parts[1])
        if run is not None and run.experiment_id == exp.id and run.author_id == principal.person_id:
            return safe
    raise PermissionDenied(
        "These artifacts belong to another business unit; they are shared for reading only.",
        details={"path": safe},
    )


# --- console read helpers (several runs or experiments at once; callers have checked visibility) -----


@dataclass
class ExperimentActivity:
    runs: int = 0
    running: int = 0
    last_ms: int | None = None


def experiment_activity(session: Session, experiment_ids: list[str]) -> dict[str, ExperimentActivity]:
    """Active-run counts and the latest run start or end per experiment, in one query."""
    found = {eid: ExperimentActivity() for eid in experiment_ids}
    if not experiment_ids:
        return found
    running = func.sum(case((Run.status == "RUNNING", 1), else_=0))
    rows = session.execute(
        select(Run.experiment_id, func.count(), running, func.max(Run.start_ms), func.max(Run.end_ms))
        .where(Run.experiment_id.in_(experiment_ids), Run.lifecycle_stage == "active")
        .group_by(Run.experiment_id)
    )
    for eid, count, busy, last_start, last_end in rows:
        last = max((t for t in (last_start, last_end) if t is not None), default=None)
        found[eid] = ExperimentActivity(runs=int(count), running=int(busy or 0), last_ms=last)
    return found


def experiment_keys(session: Session, experiment_id: str) -> tuple[list[str], list[str]]:
    """The metric keys and param keys logged by an experiment's active runs, sorted."""
    in_experiment = select(Run.id).where(Run.experiment_id == experiment_id, Run.lifecycle_stage == "active")
    metrics = session.scalars(
        select(LatestMetric.key)
        .where(LatestMetric.run_id.in_(in_experiment))
        .distinct()
        .order_by(LatestMetric.key)
    ).all()
    params = session.scalars(
        select(Param.key).where(Param.run_id.in_(in_experiment)).distinct().order_by(Param.key)
    ).all()
    return list(metrics), list(params)


def metric_histories(session: Session, run_ids: list[str]) -> dict[str, dict[str, list[Metric]]]:
    """Every metric's full history for several runs: {run id: {key: [points by step, time]}}."""
    found: dict[str, dict[str, list[Metric]]] = {rid: {} for rid in run_ids}
    if not run_ids:
        return found
    rows = session.scalars(
        select(Metric)
        .where(Metric.run_id.in_(run_ids))
        .order_by(Metric.run_id, Metric.key, Metric.step, Metric.timestamp_ms, Metric.value, Metric.is_nan)
    )
    for m in rows:
        found[m.run_id].setdefault(m.key, []).append(m)
    return found


def child_runs(session: Session, principal: Principal, run_id: str) -> Sequence[Run]:
    """Runs whose parent is ``run_id`` (nested runs), that the principal may see."""
    stmt = (
        select(Run)
        .join(Experiment, Experiment.id == Run.experiment_id)
        .where(Run.parent_run_id == run_id, Run.lifecycle_stage == "active")
    )
    if not principal.sees_all_units:
        stmt = stmt.where(
            or_(Run.business_unit_id == principal.business_unit_id, Experiment.visibility == "organization")
        )
    return session.scalars(stmt.order_by(Run.start_ms, Run.id)).all()


def run_names(session: Session, principal: Principal, run_ids: list[str]) -> dict[str, str]:
    """Names of the runs the principal may see, by id (invisible or unknown ids are left out)."""
    if not run_ids:
        return {}
    stmt = (
        select(Run.id, Run.name)
        .join(Experiment, Experiment.id == Run.experiment_id)
        .where(Run.id.in_(run_ids))
    )
    if not principal.sees_all_units:
        stmt = stmt.where(
            or_(Run.business_unit_id == principal.business_unit_id, Experiment.visibility == "organization")
        )
    return {rid: name for rid, name in session.execute(stmt)}
