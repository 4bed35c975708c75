"""Registry operations shared by the native API, the MLflow adapter, the console and the SDK."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from bridgehead.audit.service import record
from bridgehead.auth.service import Principal
from bridgehead.errors import (
    AlreadyExists,
    BadRequest,
    Conflict,
    NotFound,
    PermissionDenied,
    ValidationFailed,
)
from bridgehead.org.models import BusinessUnit
from bridgehead.registry.flavors import Flavor, read_manifest
from bridgehead.registry.models import ModelAlias, ModelVersion, RegisteredModel
from bridgehead.store.artifacts import ArtifactStore
from bridgehead.tracking import logged_models
from bridgehead.tracking import service as tracking
from bridgehead.tracking.models import LoggedModel
from bridgehead.tracking.search import Clause, parse_filter, parse_order_by

__all__ = [
    "count_registered_models",
    "create_model_version",
    "create_registered_model",
    "delete_alias",
    "get_registered_model",
    "get_version",
    "get_version_by_alias",
    "load_version",
    "resolve_source",
    "search_registered_models",
    "search_versions",
    "set_alias",
    "writable_model",
]

ALIAS_MAX = 255
STAGES = ("None", "Staging", "Production", "Archived")


def _visible(principal: Principal) -> Any:
    return tracking.visible(select(RegisteredModel), RegisteredModel, principal)


def get_registered_model(
    session: Session, principal: Principal, name: str, *, lock: bool = False
) -> RegisteredModel:
    stmt = _visible(principal).where(RegisteredModel.name == name)
    if lock and session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    model: RegisteredModel | None = session.scalar(stmt)
    if model is None:
        raise NotFound(f"Registered Model with name={name} not found", details={"name": name})
    return model


def writable_model(
    session: Session, principal: Principal, name: str, *, lock: bool = False
) -> RegisteredModel:
    """A model the principal may change: every write path (native API, MLflow API, console) comes here,
    so organization-shared models stay read-only for other units whichever door is used."""
    model = get_registered_model(session, principal, name, lock=lock)
    tracking.check_writable(principal, model.business_unit_id, "registered model")
    return model


def create_registered_model(
    session: Session,
    principal: Principal,
    name: str,
    *,
    description: str = "",
    tags: dict[str, str] | None = None,
    business_unit_id: str | None = None,
    use_case_id: str | None = None,
    visibility: str = "private",
) -> RegisteredModel:
    name = name.strip()
    if not name or len(name) > 250 or "/" in name or ":" in name:
        raise ValidationFailed(
            "Model name must be 1 to 250 characters without '/' or ':'.", details={"name": name}
        )
    if session.scalar(select(RegisteredModel.id).where(RegisteredModel.name == name)) is not None:
        raise AlreadyExists(f"Registered Model (name={name}) already exists.", details={"name": name})
    unit = business_unit_id or principal.business_unit_id
    if not principal.can_see_unit(unit) or session.get(BusinessUnit, unit) is None:
        raise NotFound(f"Business unit {unit!r} does not exist.", details={"business_unit_id": unit})
    ms = tracking.now_ms()
    model = RegisteredModel(
        name=name,
        business_unit_id=unit,
        visibility=visibility,
        owner_id=principal.person_id,
        use_case_id=use_case_id,
        description=description,
        tags=dict(tags or {}),
        created_ms=ms,
        updated_ms=ms,
    )
    tracking.add_unique(
        session,
        model,
        AlreadyExists(f"Registered Model (name={name}) already exists.", details={"name": name}),
    )
    record(
        session,
        principal,
        "model.create",
        "registered_model",
        model.id,
        business_unit_id=unit,
        changes={"name": name, "visibility": visibility},
    )
    return model


_MODEL_COLUMNS = {
    "name": RegisteredModel.name,
    "creation_timestamp": RegisteredModel.created_ms,
    "timestamp": RegisteredModel.created_ms,
    "last_updated_timestamp": RegisteredModel.updated_ms,
}
_VERSION_COLUMNS = {
    "name": RegisteredModel.name,
    "run_id": ModelVersion.run_id,
    "version_number": ModelVersion.version,
    "source_path": ModelVersion.source,
    "current_stage": ModelVersion.stage,
    "creation_timestamp": ModelVersion.created_ms,
    "last_updated_timestamp": ModelVersion.updated_ms,
}


def _tag_condition(column: Any, clause: Clause) -> Any:
    """A tag clause over a JSON tags column, in SQL (``=`` and ``!=``; a missing tag satisfies ``!=``, as in
    MLflow)."""
    value = column[clause.key].as_string()
    if clause.op == "=":
        return value == str(clause.value)
    return or_(value.is_(None), value != str(clause.value))


def _conditions(filter_string: str | None, columns: dict[str, Any], tags: Any, what: str) -> list[Any]:
    """SQL conditions for a filter over attribute columns and the JSON ``tags`` column."""
    conditions: list[Any] = []
    for clause in parse_filter(filter_string, columns):
        if clause.entity == "attributes":
            value = clause.value
            if clause.key == "version_number" and isinstance(value, str):
                try:
                    value = int(value)
                except ValueError as exc:
                    raise BadRequest("version_number needs an integer.") from exc
            conditions.append(tracking.compare(columns[clause.key], clause.op, value))
        elif clause.entity == "tags" and clause.op in ("=", "!="):
            conditions.append(_tag_condition(tags, clause))
        else:
            raise BadRequest(f"{what} cannot be searched by {clause.entity} with {clause.op}.")
    return conditions


def _ordering(order_by: list[str] | None, columns: dict[str, Any], what: str) -> list[Any]:
    ordering: list[Any] = []
    for order in parse_order_by(order_by, columns):
        if order.entity != "attributes":
            raise BadRequest(f"{what} cannot be ordered by {order.entity}.")
        column = columns[order.key]
        ordering.append(column.asc() if order.ascending else column.desc())
    return ordering


def _models_query(
    principal: Principal, name_like: str | None, tags: dict[str, str] | None, filter_string: str | None
) -> Any:
    stmt = _visible(principal)
    if name_like:
        stmt = stmt.where(func.lower(RegisteredModel.name).like(name_like.lower()))
    conditions = _conditions(filter_string, _MODEL_COLUMNS, RegisteredModel.tags, "Registered models")
    conditions += [
        _tag_condition(RegisteredModel.tags, Clause("tags", k, "=", v)) for k, v in (tags or {}).items()
    ]
    return stmt.where(*conditions)


def search_registered_models(
    session: Session,
    principal: Principal,
    *,
    name_like: str | None = None,
    tags: dict[str, str] | None = None,
    limit: int = 100,
    offset: int = 0,
    filter_string: str | None = None,
    order_by: list[str] | None = None,
) -> Sequence[RegisteredModel]:
    """Registered models the principal may see. ``filter_string`` and ``order_by`` use MLflow's grammar
    (``name``, ``tags.<key>`` with = or !=; order by name, creation or last update time)."""
    stmt = _models_query(principal, name_like, tags, filter_string)
    ordering = _ordering(order_by, _MODEL_COLUMNS, "Registered models")
    return session.scalars(stmt.order_by(*ordering, RegisteredModel.name).limit(limit).offset(offset)).all()


def count_registered_models(
    session: Session,
    principal: Principal,
    *,
    name_like: str | None = None,
    tags: dict[str, str] | None = None,
    filter_string: str | None = None,
) -> int:
    """How many models ``search_registered_models`` finds with these filters and no limit."""
    stmt = _models_query(principal, name_like, tags, filter_string)
    return int(session.scalar(select(func.count()).select_from(stmt.subquery())) or 0)


def latest_versions_for(session: Session, model_ids: list[str]) -> dict[str, list[ModelVersion]]:
    """For several models, the newest version in each stage, in one query."""
    found: dict[str, list[ModelVersion]] = {mid: [] for mid in model_ids}
    if not model_ids:
        return found
    newest = (
        select(ModelVersion.model_id, ModelVersion.stage, func.max(ModelVersion.version).label("version"))
        .where(ModelVersion.model_id.in_(model_ids))
        .group_by(ModelVersion.model_id, ModelVersion.stage)
        .subquery()
    )
    rows = session.scalars(
        select(ModelVersion)
        .join(
            newest,
            and_(ModelVersion.model_id == newest.c.model_id, ModelVersion.version == newest.c.version),
        )
        .order_by(ModelVersion.version)
    )
    for version in rows:
        found[version.model_id].append(version)
    return found


def aliases_for(session: Session, model_ids: list[str]) -> dict[str, dict[str, int]]:
    """Aliases of several models (alias -> version number), in one query."""
    found: dict[str, dict[str, int]] = {mid: {} for mid in model_ids}
    if model_ids:
        for a in session.scalars(select(ModelAlias).where(ModelAlias.model_id.in_(model_ids))):
            found[a.model_id][a.alias] = a.version
    return found


def model_names(session: Session, model_ids: list[str]) -> dict[str, str]:
    if not model_ids:
        return {}
    rows = session.execute(
        select(RegisteredModel.id, RegisteredModel.name).where(RegisteredModel.id.in_(model_ids))
    )
    return {mid: name for mid, name in rows}


def latest_versions(
    session: Session, principal: Principal, name: str, stages: list[str] | None = None
) -> list[ModelVersion]:
    """The newest version in each of ``stages`` (every stage when empty)."""
    model = get_registered_model(session, principal, name)
    wanted = {_stage(s) for s in stages or []}
    versions = latest_versions_for(session, [model.id])[model.id]
    return [v for v in versions if not wanted or v.stage in wanted]


def _check_model_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > 250 or "/" in name or ":" in name:
        raise ValidationFailed(
            "Model name must be 1 to 250 characters without '/' or ':'.", details={"name": name}
        )
    return name


def rename_registered_model(
    session: Session, principal: Principal, name: str, new_name: str
) -> RegisteredModel:
    return update_registered_model(session, principal, name, name=_check_model_name(new_name))


def update_registered_model(
    session: Session, principal: Principal, name: str, /, **fields: Any
) -> RegisteredModel:
    """Change fields (``name``, ``description``, ...); ``name`` is positional-only so a rename can pass
    ``name=`` among the fields."""
    model = writable_model(session, principal, name)
    changes: dict[str, Any] = {}
    for key, value in fields.items():
        if value is None:
            continue
        if (
            key == "name"
            and value != model.name
            and session.scalar(select(RegisteredModel.id).where(RegisteredModel.name == value)) is not None
        ):
            raise AlreadyExists(f"Registered Model (name={value}) already exists.", details={"name": value})
        if getattr(model, key) != value:
            changes[key] = {"from": getattr(model, key), "to": value}
            setattr(model, key, value)
    if changes:
        model.updated_ms = tracking.now_ms()
        record(
            session,
            principal,
            "model.update",
            "registered_model",
            model.id,
            business_unit_id=model.business_unit_id,
            changes=changes,
        )
    return model


def set_model_tag(session: Session, principal: Principal, name: str, key: str, value: str | None) -> None:
    model = writable_model(session, principal, name)
    tags = dict(model.tags)
    if value is None:
        tags.pop(key, None)
    else:
        tags[key] = value
    model.tags = tags


def delete_registered_model(session: Session, principal: Principal, name: str) -> None:
    model = writable_model(session, principal, name)
    for alias in session.scalars(select(ModelAlias).where(ModelAlias.model_id == model.id)):
        session.delete(alias)
    for version in session.scalars(select(ModelVersion).where(ModelVersion.model_id == model.id)):
        session.delete(version)
    session.delete(model)
    record(
        session,
        principal,
        "model.delete",
        "registered_model",
        model.id,
        business_unit_id=model.business_unit_id,
        changes={"name": name},
    )


# --- versions ---------------------------------------------------------------------------------


def resolve_source(
    session: Session, principal: Principal, source: str, run_id: str | None
) -> tuple[str, str | None]:
    """Map a version's source URI to a directory in the artifact store, and the logged model it names."""
    # Each form checks that the principal may see where the files live: registering a version must not
    # become a way to read another unit's private artifacts.
    if source.startswith("models:/m-"):
        logged = logged_models.get_logged_model(session, principal, source.removeprefix("models:/"))
        return logged.artifact_uri.removeprefix("mlflow-artifacts:/"), logged.id
    if source.startswith("mlflow-artifacts:/"):
        path = source.removeprefix("mlflow-artifacts:/").strip("/")
        return tracking.artifact_experiment(session, principal, path), None
    if source.startswith("runs:/"):
        rid, _, sub = source.removeprefix("runs:/").partition("/")
        run = tracking.get_run(session, principal, rid)
        base = run.artifact_uri.removeprefix("mlflow-artifacts:/")
        return (f"{base}/{sub}".rstrip("/") if sub else base), None
    raise BadRequest(
        "Model sources must live in Bridgehead's artifact store (models:/m-…, runs:/…, mlflow-artifacts:/…).",
        details={"source": source},
    )


def create_model_version(
    session: Session,
    principal: Principal,
    store: ArtifactStore,
    name: str,
    source: str,
    *,
    run_id: str | None = None,
    description: str = "",
    tags: dict[str, str] | None = None,
    logged_model_id: str | None = None,
) -> ModelVersion:
    """Register the model directory at ``source`` as the next version; records flavor, signature, digest,
    the run's metrics and datasets (lineage: version <- run <- datasets)."""
    model = writable_model(session, principal, name, lock=True)
    path, logged = resolve_source(session, principal, source, run_id)
    logged_model_id = logged_model_id or logged
    if logged_model_id and not run_id:
        lm = session.get(LoggedModel, logged_model_id)
        run_id = lm.source_run_id if lm else None
    if not store.walk(path):
        raise BadRequest(f"No model files found at {source}.", details={"source": source})
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for file in ("bridgehead-model.json", "MLmodel"):
                if store.is_file(f"{path}/{file}"):
                    (Path(tmp) / file).write_bytes(store.get_bytes(f"{path}/{file}"))
            manifest = read_manifest(Path(tmp))
    except BadRequest:
        manifest = {"flavor": "", "meta": {}, "signature": {}}
    metrics: dict[str, Any] = {}
    datasets: list[Any] = []
    if run_id:
        run = tracking.get_run(session, principal, run_id)
        data = tracking.run_data(session, [run.id])[run.id]
        metrics = {
            m.key: tracking.json_number(tracking.metric_value(m.value, m.is_nan)) for m in data.metrics
        }
        datasets = [
            {"name": d.name, "digest": d.digest, "source": d.source, "context": d.context}
            for d in data.inputs
        ]
    # On PostgreSQL the registered model row is locked (FOR UPDATE above), so numbering is serial.
    latest = (
        session.scalar(select(func.max(ModelVersion.version)).where(ModelVersion.model_id == model.id)) or 0
    )
    ms = tracking.now_ms()
    version = ModelVersion(
        model_id=model.id,
        version=latest + 1,
        source=source,
        run_id=run_id,
        logged_model_id=logged_model_id,
        artifact_path=path,
        flavor=str(manifest.get("flavor", "")),
        signature=manifest.get("signature") or {},
        datasets=datasets,
        metrics=metrics,
        sha256=store.sha256_dir(path),
        author_id=principal.person_id,
        user_name=principal.email,
        status="READY",
        description=description,
        tags=dict(tags or {}),
        created_ms=ms,
        updated_ms=ms,
    )
    session.add(version)
    model.updated_ms = ms
    session.flush()
    record(
        session,
        principal,
        "model_version.create",
        "model_version",
        version.id,
        business_unit_id=model.business_unit_id,
        changes={
            "model": name,
            "version": version.version,
            "source": source,
            "sha256": version.sha256,
            "run_id": run_id,
        },
    )
    return version


def get_version(session: Session, principal: Principal, name: str, version: int | str) -> ModelVersion:
    model = get_registered_model(session, principal, name)
    try:
        number = int(version)
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"Model version must be an integer, got {version!r}.") from exc
    found = session.scalar(
        select(ModelVersion).where(ModelVersion.model_id == model.id, ModelVersion.version == number)
    )
    if found is None:
        raise NotFound(
            f"Model Version (name={name}, version={version}) not found",
            details={"name": name, "version": str(version)},
        )
    return found


def search_versions(
    session: Session,
    principal: Principal,
    *,
    name: str | None = None,
    run_id: str | None = None,
    limit: int = 1000,
    offset: int = 0,
    filter_string: str | None = None,
    order_by: list[str] | None = None,
) -> Sequence[ModelVersion]:
    """Versions the principal may see. ``filter_string`` and ``order_by`` use MLflow's grammar over
    ``name``, ``run_id``, ``version_number``, ``source_path``, ``current_stage`` and ``tags.<key>``."""
    stmt = select(ModelVersion).join(RegisteredModel, RegisteredModel.id == ModelVersion.model_id)
    if not principal.sees_all_units:
        stmt = stmt.where(
            or_(
                RegisteredModel.business_unit_id == principal.business_unit_id,
                RegisteredModel.visibility == "organization",
            )
        )
    if name:
        stmt = stmt.where(RegisteredModel.name == name)
    if run_id:
        stmt = stmt.where(ModelVersion.run_id == run_id)
    conditions = _conditions(filter_string, _VERSION_COLUMNS, ModelVersion.tags, "Model versions")
    ordering = _ordering(order_by, _VERSION_COLUMNS, "Model versions")
    stmt = stmt.where(*conditions).order_by(*ordering, RegisteredModel.name, ModelVersion.version.desc())
    return session.scalars(stmt.limit(limit).offset(offset)).all()


def _stage(stage: str) -> str:
    for known in STAGES:
        if stage.lower() == known.lower():
            return known
    raise BadRequest(f"Invalid model version stage {stage!r}; use one of {', '.join(STAGES)}.")


def update_version(
    session: Session, principal: Principal, name: str, version: int | str, *, description: str | None
) -> ModelVersion:
    model = writable_model(session, principal, name)
    found = get_version(session, principal, name, version)
    if description is not None and description != found.description:
        record(
            session,
            principal,
            "model_version.update",
            "model_version",
            found.id,
            business_unit_id=model.business_unit_id,
            changes={"description": {"from": found.description, "to": description}},
        )
        found.description = description
        found.updated_ms = tracking.now_ms()
    return found


def delete_version(session: Session, principal: Principal, name: str, version: int | str) -> None:
    """Delete one version and the aliases that point at it (its files stay in the artifact store)."""
    found = get_version(session, principal, name, version)
    model = writable_model(session, principal, name)
    for alias in session.scalars(
        select(ModelAlias).where(ModelAlias.model_id == model.id, ModelAlias.version == found.version)
    ):
        session.delete(alias)
    session.delete(found)
    record(
        session,
        principal,
        "model_version.delete",
        "model_version",
        found.id,
        business_unit_id=model.business_unit_id,
        changes={"model": name, "version": found.version, "sha256": found.sha256},
    )


def set_version_tag(
    session: Session, principal: Principal, name: str, version: int | str, key: str, value: str | None
) -> None:
    """Set a version's tag, or remove it when ``value`` is None."""
    writable_model(session, principal, name)
    found = get_version(session, principal, name, version)
    if not key or len(key) > 250:
        raise ValidationFailed("Tag key must be 1 to 250 characters.", details={"key": key[:250]})
    tags = dict(found.tags)
    if value is None:
        tags.pop(key, None)
    else:
        tags[key] = value
    found.tags = tags
    found.updated_ms = tracking.now_ms()


def transition_stage(
    session: Session,
    principal: Principal,
    name: str,
    version: int | str,
    stage: str,
    *,
    archive_existing: bool = False,
) -> ModelVersion:
    """MLflow's deprecated stages (None, Staging, Production, Archived). With ``archive_existing``, other
    versions in the target stage move to Archived."""
    target = _stage(stage)
    found = get_version(session, principal, name, version)
    model = writable_model(session, principal, name)
    archived: list[int] = []
    if archive_existing and target in ("Staging", "Production"):
        for other in session.scalars(
            select(ModelVersion).where(
                ModelVersion.model_id == model.id,
                ModelVersion.stage == target,
                ModelVersion.version != found.version,
            )
        ):
            other.stage = "Archived"
            archived.append(other.version)
    before = found.stage
    found.stage = target
    found.updated_ms = tracking.now_ms()
    record(
        session,
        principal,
        "model_version.transition_stage",
        "model_version",
        found.id,
        business_unit_id=model.business_unit_id,
        changes={"stage": {"from": before, "to": target}, "archived_versions": archived},
    )
    return found


def registered_path_visible(session: Session, principal: Principal, path: str) -> bool:
    """Whether ``path`` in the artifact store lies inside a model version the principal may see, so that a
    model shared with the organization can be downloaded even when its experiment is private to a unit."""
    stmt = select(ModelVersion.artifact_path).join(
        RegisteredModel, RegisteredModel.id == ModelVersion.model_id
    )
    if not principal.sees_all_units:
        stmt = stmt.where(
            or_(
                RegisteredModel.business_unit_id == principal.business_unit_id,
                RegisteredModel.visibility == "organization",
            )
        )
    prefixes = {path}
    parts = path.split("/")
    prefixes |= {"/".join(parts[:n]) for n in range(1, len(parts))}
    stmt = stmt.where(ModelVersion.artifact_path.in_(sorted(prefixes)), ModelVersion.artifact_path != "")
    return session.scalar(stmt.limit(1)) is not None


def versions_of(session: Session, model: RegisteredModel) -> Sequence[ModelVersion]:
    return session.scalars(
        select(ModelVersion).where(ModelVersion.model_id == model.id).order_by(ModelVersion.version.desc())
    ).all()


def aliases_of(session: Session, model: RegisteredModel) -> dict[str, int]:
    return {
        a.alias: a.version for a in session.scalars(select(ModelAlias).where(ModelAlias.model_id == model.id))
    }


def set_alias(session: Session, principal: Principal, name: str, alias: str, version: int | str) -> None:
    if (
        not alias
        or len(alias) > ALIAS_MAX
        or alias.lower() == "latest"
        or (alias.startswith("v") and alias[1:].isdigit())
    ):
        raise BadRequest(f"Invalid alias name {alias!r}.", details={"alias": alias})
    target = get_version(session, principal, name, version)
    model = writable_model(session, principal, name)
    existing = session.get(ModelAlias, (model.id, alias))
    before = existing.version if existing else None
    if existing:
        existing.version = target.version
    else:
        session.add(ModelAlias(model_id=model.id, alias=alias, version=target.version))
    record(
        session,
        principal,
        "model.set_alias",
        "registered_model",
        model.id,
        business_unit_id=model.business_unit_id,
        changes={"alias": alias, "version": {"from": before, "to": target.version}},
    )


def delete_alias(session: Session, principal: Principal, name: str, alias: str) -> None:
    model = writable_model(session, principal, name)
    existing = session.get(ModelAlias, (model.id, alias))
    if existing is None:
        raise NotFound(f"Registered model alias {alias} not found.", details={"alias": alias})
    session.delete(existing)
    record(
        session,
        principal,
        "model.delete_alias",
        "registered_model",
        model.id,
        business_unit_id=model.business_unit_id,
        changes={"alias": alias, "version": existing.version},
    )


def get_version_by_alias(session: Session, principal: Principal, name: str, alias: str) -> ModelVersion:
    model = get_registered_model(session, principal, name)
    existing = session.get(ModelAlias, (model.id, alias))
    if existing is None:
        raise BadRequest(f"Registered model alias {alias} not found.", details={"alias": alias})
    return get_version(session, principal, name, existing.version)


def resolve_uri(session: Session, principal: Principal, uri: str) -> ModelVersion:
    """``models:/name/3``, ``models:/name@alias`` or ``models:/name/latest``."""
    if not uri.startswith("models:/"):
        raise BadRequest("Model URIs look like models:/<name>/<version> or models:/<name>@<alias>.")
    rest = uri.removeprefix("models:/")
    if "@" in rest:
        name, alias = rest.split("@", 1)
        return get_version_by_alias(session, principal, name, alias)
    name, _, ref = rest.rpartition("/")
    if ref == "latest":
        model = get_registered_model(session, principal, name)
        versions = versions_of(session, model)
        if not versions:
            raise NotFound(f"Model {name} has no versions.")
        return versions[0]
    return get_version(session, principal, name, ref)


def record_trusted_load(
    session: Session,
    principal: Principal,
    name: str,
    version: int | str,
    trusted: frozenset[str],
    *,
    safe: frozenset[str] = frozenset(),
) -> ModelVersion:
    """A client (the SDK) is about to load a version in a code-executing format: refuse unless this
    installation trusts the format, and audit it. Loading happens in the client's process. ``safe`` names
    the flavors that need no trust."""
    found = get_version(session, principal, name, version)
    if found.flavor in safe:
        raise BadRequest(
            f"The '{found.flavor}' format does not execute code when loaded; it needs no trust.",
            details={"flavor": found.flavor},
        )
    if found.flavor not in trusted:
        raise PermissionDenied(
            f"This installation does not trust the '{found.flavor}' format, which executes code when loaded; "
            f"an administrator can allow it with BRIDGEHEAD_TRUSTED_FLAVORS.",
            details={"flavor": found.flavor},
        )
    record(
        session,
        principal,
        "model_version.trusted_load",
        "model_version",
        found.id,
        business_unit_id=get_registered_model(session, principal, name).business_unit_id,
        changes={"model": name, "version": found.version, "flavor": found.flavor, "sha256": found.sha256},
    )
    return found


def load_version(
    session: Session,
    principal: Principal,
    store: ArtifactStore,
    version: ModelVersion,
    flavors: dict[str, Flavor],
    trusted: frozenset[str],
    workdir: Path,
) -> Any:
    """Download, verify the SHA-256 and load with the version's flavor. Unsafe flavors need trust (audited)."""
    if not version.sha256 or not version.artifact_path:
        raise BadRequest(
            "This version's files are not in Bridgehead's artifact store; it cannot be loaded here."
        )
    if store.sha256_dir(version.artifact_path) != version.sha256:
        raise Conflict(
            "The model's files do not match the SHA-256 recorded at registration; refusing to load.",
            details={"expected": version.sha256},
        )
    store.download_dir(version.artifact_path, workdir)
    manifest = read_manifest(workdir)
    flavor = flavors.get(str(manifest.get("flavor")))
    if flavor is None:
        raise BadRequest(f"No flavor plugin can load {manifest.get('flavor')!r}.")
    if not flavor.safe:
        if flavor.name not in trusted:
            raise PermissionDenied(
                f"The '{flavor.name}' format executes code when loaded; set BRIDGEHEAD_TRUSTED_FLAVORS="
                f"{flavor.name} to allow it.",
                details={"flavor": flavor.name},
            )
        record(
            session,
            principal,
            "model_version.trusted_load",
            "model_version",
            version.id,
            changes={"flavor": flavor.name, "sha256": version.sha256},
        )
    return flavor.load(workdir, dict(manifest.get("meta") or {}))


# --- console read helpers -----------------------------------------------------------------------


@dataclass
class ModelOverview:
    versions: int = 0
    latest: ModelVersion | None = None
    aliases: dict[str, int] = field(default_factory=dict)


def model_overview(session: Session, model_ids: list[str]) -> dict[str, ModelOverview]:
    """Version count, latest version and aliases of several registered models, in three queries."""
    found = {mid: ModelOverview() for mid in model_ids}
    if not model_ids:
        return found
    counts = session.execute(
        select(ModelVersion.model_id, func.count(), func.max(ModelVersion.version))
        .where(ModelVersion.model_id.in_(model_ids))
        .group_by(ModelVersion.model_id)
    ).all()
    latest_keys = []
    for mid, count, top in counts:
        found[mid].versions = int(count)
        latest_keys.append((mid, top))
    if latest_keys:
        latest = session.scalars(
            select(ModelVersion).where(
                or_(
                    *(and_(ModelVersion.model_id == mid, ModelVersion.version == v) for mid, v in latest_keys)
                )
            )
        )
        for version in latest:
            found[version.model_id].latest = version
    for alias in session.scalars(select(ModelAlias).where(ModelAlias.model_id.in_(model_ids))):
        found[alias.model_id].aliases[alias.alias] = alias.version
    return found


def versions_from_run(session: Session, principal: Principal, run_id: str) -> list[tuple[str, ModelVersion]]:
    """(model name, version) for every visible model version registered from the run."""
    stmt = (
        select(RegisteredModel.name, ModelVersion)
        .join(RegisteredModel, RegisteredModel.id == ModelVersion.model_id)
        .where(ModelVersion.run_id == run_id)
    )
    if not principal.sees_all_units:
        stmt = stmt.where(
            or_(
                RegisteredModel.business_unit_id == principal.business_unit_id,
                RegisteredModel.visibility == "organization",
            )
        )
    rows = session.execute(stmt.order_by(RegisteredModel.name, ModelVersion.version.desc())).all()
    return [(name, version) for name, version in rows]
