"""Logged models (MLflow 3): a model logged from a run, with its own params, tags and metrics, before and
apart from any registered model version. Shared by the MLflow adapter and the registry (a version made from
a logged model links back to it)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bridgehead.auth.service import Principal
from bridgehead.errors import BadRequest, NotFound, ValidationFailed
from bridgehead.store.base import new_id
from bridgehead.tracking.models import Experiment, LoggedModel, Metric
from bridgehead.tracking.search import Clause, parse_filter
from bridgehead.tracking.service import (
    MAX_PARAM_VALUE,
    MAX_TAG_VALUE,
    check_active,
    check_key,
    check_writable,
    compare,
    loggable_experiment,
    now_ms,
    random_name,
    visible,
    writable_run,
)

__all__ = [
    "LOGGED_MODEL_STATUSES",
    "create_logged_model",
    "delete_logged_model_tag",
    "finalize_logged_model",
    "get_logged_model",
    "log_logged_model_params",
    "log_outputs",
    "logged_model_metrics",
    "run_outputs",
    "search_logged_models",
    "set_logged_model_tags",
    "writable_logged_model",
]


LOGGED_MODEL_STATUSES = ("LOGGED_MODEL_PENDING", "LOGGED_MODEL_READY", "LOGGED_MODEL_UPLOAD_FAILED")
_LOGGED_MODEL_COLUMNS = {
    "name": LoggedModel.name,
    "model_id": LoggedModel.id,
    "model_type": LoggedModel.model_type,
    "status": LoggedModel.status,
    "source_run_id": LoggedModel.source_run_id,
    "creation_timestamp": LoggedModel.created_ms,
    "creation_time": LoggedModel.created_ms,
    "last_updated_timestamp": LoggedModel.updated_ms,
}


def _check_values(values: dict[str, str], what: str, max_value: int) -> None:
    for key, value in values.items():
        check_key(key, what)
        if len(value) > max_value:
            raise ValidationFailed(
                f"{what} '{key}' value is longer than {max_value} characters.", details={"key": key}
            )


def create_logged_model(
    session: Session,
    principal: Principal,
    experiment_id: str,
    *,
    name: str | None = None,
    model_type: str = "",
    source_run_id: str | None = None,
    params: dict[str, str] | None = None,
    tags: dict[str, str] | None = None,
) -> LoggedModel:
    """A model logged from a run, before its files are uploaded (status pending until finalized)."""
    exp = loggable_experiment(session, principal, experiment_id)
    if source_run_id:
        writable_run(session, principal, source_run_id)
    params, tags = dict(params or {}), dict(tags or {})
    _check_values(params, "Param", MAX_PARAM_VALUE)
    _check_values(tags, "Tag", MAX_TAG_VALUE)
    ms = now_ms()
    model_id = f"m-{new_id()}"
    model = LoggedModel(
        id=model_id,
        experiment_id=exp.id,
        source_run_id=source_run_id or None,
        name=(name or random_name())[:500],
        model_type=model_type[:100],
        status="LOGGED_MODEL_PENDING",
        artifact_uri=f"mlflow-artifacts:/{exp.id}/models/{model_id}/artifacts",
        creator_id=principal.person_id,
        created_ms=ms,
        updated_ms=ms,
        tags=tags,
        params=params,
    )
    session.add(model)
    session.flush()
    return model


def get_logged_model(session: Session, principal: Principal, model_id: str) -> LoggedModel:
    stmt = select(LoggedModel).join(Experiment, Experiment.id == LoggedModel.experiment_id)
    model: LoggedModel | None = session.scalar(
        visible(stmt, Experiment, principal).where(LoggedModel.id == model_id)
    )
    if model is None:
        raise NotFound(f"Logged model with ID '{model_id}' not found.", details={"model_id": model_id})
    return model


def writable_logged_model(session: Session, principal: Principal, model_id: str) -> LoggedModel:
    """A logged model the principal may change (its experiment's unit, central staff, or its creator)."""
    model = get_logged_model(session, principal, model_id)
    unit = session.scalar(select(Experiment.business_unit_id).where(Experiment.id == model.experiment_id))
    check_writable(principal, str(unit), "logged model", author_id=model.creator_id)
    return model


def finalize_logged_model(session: Session, principal: Principal, model_id: str, status: str) -> LoggedModel:
    model = writable_logged_model(session, principal, model_id)
    if status not in LOGGED_MODEL_STATUSES:
        raise ValidationFailed(f"Unknown logged model status {status!r}.", details={"status": status})
    model.status = status
    model.updated_ms = now_ms()
    return model


def set_logged_model_tags(
    session: Session, principal: Principal, model_id: str, tags: dict[str, str]
) -> None:
    model = writable_logged_model(session, principal, model_id)
    _check_values(tags, "Tag", MAX_TAG_VALUE)
    model.tags = {**model.tags, **tags}
    model.updated_ms = now_ms()


def delete_logged_model_tag(session: Session, principal: Principal, model_id: str, key: str) -> None:
    model = writable_logged_model(session, principal, model_id)
    if key not in model.tags:
        raise NotFound(f"No tag with key {key!r} on logged model {model_id}.", details={"key": key})
    model.tags = {k: v for k, v in model.tags.items() if k != key}
    model.updated_ms = now_ms()


def log_logged_model_params(
    session: Session, principal: Principal, model_id: str, params: dict[str, str]
) -> None:
    """Add params to a logged model; as for runs, a param's value may not change once logged."""
    model = writable_logged_model(session, principal, model_id)
    _check_values(params, "Param", MAX_PARAM_VALUE)
    for key, value in params.items():
        if key in model.params and model.params[key] != value:
            raise BadRequest(
                f"Changing param values is not allowed. Param with key='{key}' was already logged with "
                f"value='{model.params[key]}' for logged model '{model_id}'.",
                details={"key": key},
            )
    model.params = {**model.params, **params}


def search_logged_models(
    session: Session,
    principal: Principal,
    experiment_ids: list[str],
    *,
    filter_string: str | None = None,
    order_by: list[tuple[str, bool]] | None = None,
    limit: int = 100,
    offset: int = 0,
) -> Sequence[LoggedModel]:
    """Logged models by MLflow's filter grammar over their attributes and ``tags.<key>``;
    ``order_by`` is (attribute, ascending) pairs."""
    stmt = visible(
        select(LoggedModel).join(Experiment, Experiment.id == LoggedModel.experiment_id),
        Experiment,
        principal,
    )
    if experiment_ids:
        stmt = stmt.where(LoggedModel.experiment_id.in_(experiment_ids))
    tag_clauses: list[Clause] = []
    for clause in parse_filter(filter_string, _LOGGED_MODEL_COLUMNS):
        if clause.entity == "attributes":
            stmt = stmt.where(compare(_LOGGED_MODEL_COLUMNS[clause.key], clause.op, clause.value))
        elif clause.entity == "tags" and clause.op in ("=", "!="):
            tag_clauses.append(clause)
        else:
            raise BadRequest(f"Logged models cannot be searched by {clause.entity} with {clause.op}.")
    ordering: list[Any] = []
    for field_name, ascending in order_by or []:
        column = _LOGGED_MODEL_COLUMNS.get(field_name)
        if column is None:
            raise BadRequest(f"Logged models cannot be ordered by {field_name!r}.")
        ordering.append(column.asc() if ascending else column.desc())
    stmt = stmt.order_by(*ordering, LoggedModel.created_ms.desc(), LoggedModel.id)
    if not tag_clauses:
        return session.scalars(stmt.limit(limit).offset(offset)).all()
    # Tags live in a JSON column: filter them here (logged models per experiment are few).
    rows = [
        m
        for m in session.scalars(stmt)
        if all((m.tags.get(c.key) == c.value) == (c.op == "=") for c in tag_clauses)
    ]
    return rows[offset : offset + limit]


def logged_model_metrics(session: Session, model_ids: list[str]) -> dict[str, list[Metric]]:
    """Metrics logged against several logged models, in one query."""
    found: dict[str, list[Metric]] = {mid: [] for mid in model_ids}
    if model_ids:
        for m in session.scalars(
            select(Metric).where(Metric.model_id.in_(model_ids)).order_by(Metric.step, Metric.timestamp_ms)
        ):
            found[str(m.model_id)].append(m)
    return found


def run_outputs(session: Session, run_ids: list[str]) -> dict[str, list[LoggedModel]]:
    """The logged models each run produced, in one query."""
    found: dict[str, list[LoggedModel]] = {rid: [] for rid in run_ids}
    if run_ids:
        for m in session.scalars(
            select(LoggedModel).where(LoggedModel.source_run_id.in_(run_ids)).order_by(LoggedModel.created_ms)
        ):
            found[str(m.source_run_id)].append(m)
    return found


def log_outputs(session: Session, principal: Principal, run_id: str, model_ids: list[str]) -> None:
    """Record that a run produced these logged models (a model without a source run gets this one)."""
    run = writable_run(session, principal, run_id)
    check_active(run)
    for model_id in model_ids:
        model = writable_logged_model(session, principal, model_id)
        if model.source_run_id is None:
            model.source_run_id = run.id
