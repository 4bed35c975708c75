"""Datasets: registration, immutable versions, contracts and validation records.

Where the data is read: a client (SDK, CLI) profiles and validates files where they live and sends the
results; the server reads only files uploaded into its own artifact store. It never opens a path or URL a
caller names, which would let any caller read the server's files through samples and profiles.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import and_, delete, exists, func, or_, select
from sqlalchemy.orm import Session

from bridgehead.audit.service import record
from bridgehead.auth.roles import Action, Role
from bridgehead.auth.service import Principal, require
from bridgehead.data.contracts import Contract, ContractReport, parse_contract, standardize, validate_frame
from bridgehead.data.models import Dataset, DatasetDerivation, DatasetGrant, DatasetVersion, Validation
from bridgehead.data.pii import MASKED_TAGS, TAGS, detect_columns, detect_names, merge_tags
from bridgehead.data.profile import Profile, Profiler
from bridgehead.data.readers import FORMATS, open_source
from bridgehead.errors import AlreadyExists, BadRequest, NotFound, ValidationFailed
from bridgehead.org.models import BusinessUnit
from bridgehead.store.artifacts import ArtifactStore
from bridgehead.tracking import service as tracking

__all__ = [
    "create_dataset",
    "dataset_by_name",
    "derivations_of",
    "ensure_dataset_version",
    "expectation_count",
    "get_dataset",
    "get_version",
    "latest_version_numbers",
    "list_datasets",
    "list_validations",
    "list_versions",
    "load_profile",
    "record_validation",
    "register_version",
    "set_contract",
    "update_dataset",
    "upload_version",
    "validate_stored_version",
    "writable_dataset",
]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._\-]{0,249}$")
_DIGEST = re.compile(r"^[0-9a-f]{64}$")
# What tracking inputs carry: a SHA-256 from the SDK, or mlflow's shorter content hash.
_INPUT_DIGEST = re.compile(r"^[0-9a-f]{8,64}$")


def _visible(principal: Principal) -> Any:
    """Datasets the principal may read: its own unit's and, outside central staff, those shared with the
    organization or granted to its unit, unless the dataset's policy limits readers to other roles."""
    stmt = select(Dataset)
    if principal.sees_all_units:
        return stmt

    def grant(kind: str, value: str | None = None) -> Any:
        rule = (DatasetGrant.dataset_id == Dataset.id) & (DatasetGrant.kind == kind)
        return exists().where(rule if value is None else rule & (DatasetGrant.value == value))

    shared = or_(Dataset.visibility == "organization", grant("unit", principal.business_unit_id))
    role_ok = or_(~grant("role"), grant("role", principal.role.value))
    return stmt.where(or_(Dataset.business_unit_id == principal.business_unit_id, and_(shared, role_ok)))


def _check_name(name: str) -> str:
    name = name.strip()
    if not _NAME.match(name):
        raise ValidationFailed(
            "Dataset name must be 1 to 250 letters, digits, spaces, '.', '_' or '-', starting with a letter or "
            "digit.",
            details={"name": name[:100]},
        )
    return name


def get_dataset(session: Session, principal: Principal, dataset_id: str) -> Dataset:
    require(principal, Action.DATA_READ)
    dataset: Dataset | None = session.scalar(_visible(principal).where(Dataset.id == dataset_id))
    if dataset is None:
        raise NotFound(f"Dataset {dataset_id!r} not found.", details={"dataset_id": dataset_id})
    return dataset


def dataset_by_name(
    session: Session, principal: Principal, name: str, business_unit_id: str | None = None
) -> Dataset:
    """The visible dataset of that name: in the given unit, else the caller's own, else the only one."""
    require(principal, Action.DATA_READ)
    stmt = _visible(principal).where(Dataset.name == name)
    found = list(session.scalars(stmt))
    unit = business_unit_id or principal.business_unit_id
    for dataset in found:
        if dataset.business_unit_id == unit:
            return dataset  # type: ignore[no-any-return]
    if len(found) == 1 and business_unit_id is None:
        return found[0]  # type: ignore[no-any-return]
    raise NotFound(f"Dataset {name!r} not found.", details={"name": name})


def writable_dataset(session: Session, principal: Principal, dataset_id: str) -> Dataset:
    require(principal, Action.DATA_WRITE)
    dataset = get_dataset(session, principal, dataset_id)
    tracking.check_writable(principal, dataset.business_unit_id, "dataset")
    return dataset


def create_dataset(
    session: Session,
    principal: Principal,
    name: str,
    *,
    description: str = "",
    source_system: str = "",
    tags: dict[str, str] | None = None,
    business_unit_id: str | None = None,
    visibility: str = "private",
    contract: str | None = None,
) -> Dataset:
    require(principal, Action.DATA_WRITE)
    name = _check_name(name)
    unit = business_unit_id or principal.business_unit_id
    if not principal.can_see_unit(unit) or session.get(BusinessUnit, unit) is None:
        raise NotFound(f"Business unit {unit!r} does not exist.", details={"business_unit_id": unit})
    exists = AlreadyExists(
        f"A dataset named {name!r} already exists in this business unit.", details={"name": name}
    )
    if session.scalar(select(Dataset.id).where(Dataset.business_unit_id == unit, Dataset.name == name)):
        raise exists
    if contract:
        _parse(contract)
    ms = tracking.now_ms()
    dataset = Dataset(
        name=name,
        business_unit_id=unit,
        visibility=visibility,
        owner_id=principal.person_id,
        description=description,
        source_system=source_system,
        tags=dict(tags or {}),
        contract=contract or "",
        created_ms=ms,
        updated_ms=ms,
    )
    tracking.add_unique(session, dataset, exists)
    record(
        session,
        principal,
        "dataset.create",
        "dataset",
        dataset.id,
        business_unit_id=unit,
        changes={"name": name, "visibility": visibility},
    )
    return dataset


def update_dataset(session: Session, principal: Principal, dataset_id: str, **changes: Any) -> Dataset:
    dataset = writable_dataset(session, principal, dataset_id)
    applied: dict[str, Any] = {}
    for key in ("description", "source_system", "tags", "visibility"):
        value = changes.get(key)
        if value is not None and value != getattr(dataset, key):
            setattr(dataset, key, dict(value) if key == "tags" else value)
            applied[key] = value
    if changes.get("name") is not None and changes["name"] != dataset.name:
        name = _check_name(changes["name"])
        clash = session.scalar(
            select(Dataset.id).where(
                Dataset.business_unit_id == dataset.business_unit_id, Dataset.name == name
            )
        )
        if clash:
            raise AlreadyExists(f"A dataset named {name!r} already exists in this business unit.")
        dataset.name = applied["name"] = name
    if applied:
        dataset.updated_ms = tracking.now_ms()
        record(
            session, principal, "dataset.update", "dataset", dataset.id,
            business_unit_id=dataset.business_unit_id, changes=applied,
        )  # fmt: skip
    return dataset


def list_datasets(
    session: Session, principal: Principal, *, q: str | None = None, limit: int = 50, offset: int = 0
) -> tuple[Sequence[Dataset], int]:
    require(principal, Action.DATA_READ)
    stmt = _visible(principal)
    if q:
        pattern = f"%{q.lower()}%"
        stmt = stmt.where(
            or_(func.lower(Dataset.name).like(pattern), func.lower(Dataset.description).like(pattern))
        )
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.scalars(stmt.order_by(Dataset.name, Dataset.id).limit(limit).offset(offset)).all()
    return rows, int(total)


# -- versions ----------------------------------------------------------------------------------------------


def list_versions(session: Session, dataset: Dataset) -> Sequence[DatasetVersion]:
    return session.scalars(
        select(DatasetVersion)
        .where(DatasetVersion.dataset_id == dataset.id)
        .order_by(DatasetVersion.version.desc())
    ).all()


def get_version(session: Session, dataset: Dataset, version: int) -> DatasetVersion:
    found: DatasetVersion | None = session.scalar(
        select(DatasetVersion).where(
            DatasetVersion.dataset_id == dataset.id, DatasetVersion.version == version
        )
    )
    if found is None:
        raise NotFound(
            f"Dataset {dataset.name!r} has no version {version}.",
            details={"dataset_id": dataset.id, "version": version},
        )
    return found


def load_profile(version: DatasetVersion) -> Profile | None:
    return Profile.from_state(json.loads(version.profile)) if version.profile else None


def _checked_profile(state: dict[str, Any] | None) -> Profile | None:
    if state is None:
        return None
    try:
        return Profile.from_state(state)
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, OverflowError, AttributeError) as exc:
        # The sketches' own deserializers raise several kinds on damaged bytes; all of them mean "bad input".
        raise ValidationFailed(f"The profile is not a Bridgehead profile: {exc}") from exc


def register_version(
    session: Session,
    principal: Principal,
    dataset: Dataset,
    *,
    digest: str,
    location: str = "",
    format: str = "",
    schema: list[dict[str, Any]] | None = None,
    row_count: int | None = None,
    size_bytes: int | None = None,
    profile: dict[str, Any] | None = None,
    origin: str = "api",
    storage: str = "external",
    parents: Iterable[tuple[str, str]] = (),
    column_tags: dict[str, dict[str, Any]] | None = None,
) -> tuple[DatasetVersion, bool]:
    """Adds an immutable version identified by its content digest; the same digest again returns the
    existing version (False: nothing was created). ``parents`` are (version id, transformation) pairs."""
    tracking.check_writable(principal, dataset.business_unit_id, "dataset")
    digest = digest.lower()
    if not (_INPUT_DIGEST if origin == "tracking" else _DIGEST).match(digest):
        raise ValidationFailed(
            "digest must be the 64 hex digits of a SHA-256.", details={"digest": digest[:80]}
        )
    if format and format not in FORMATS:
        raise ValidationFailed(f"format must be one of {', '.join(FORMATS)}.", details={"format": format})
    existing: DatasetVersion | None = session.scalar(
        select(DatasetVersion).where(DatasetVersion.dataset_id == dataset.id, DatasetVersion.digest == digest)
    )
    if existing is not None:
        return existing, False
    parsed = _checked_profile(profile)
    if parsed is not None:
        if row_count is not None and row_count != parsed.row_count:
            raise ValidationFailed(
                f"row_count {row_count} disagrees with the profile's {parsed.row_count} rows.",
                details={"row_count": row_count},
            )
        row_count = parsed.row_count
        if schema is None:
            schema = [{"name": c.name, "type": c.type} for c in parsed.columns.values()]
    if row_count == 0:
        raise ValidationFailed("The data has no rows; a dataset version needs at least one.")
    parent_versions = []
    for parent_id, transformation in parents:
        parent = session.get(DatasetVersion, parent_id)
        if (
            parent is None
            or session.scalar(_visible(principal).where(Dataset.id == parent.dataset_id)) is None
        ):
            raise NotFound(f"Parent dataset version {parent_id!r} not found.", details={"parent": parent_id})
        parent_versions.append((parent, transformation))
    number = (
        session.scalar(
            select(func.max(DatasetVersion.version)).where(DatasetVersion.dataset_id == dataset.id)
        )
        or 0
    ) + 1
    version = DatasetVersion(
        dataset_id=dataset.id,
        version=number,
        digest=digest,
        location=location,
        storage=storage,
        format=format,
        schema=list(schema or []),
        row_count=row_count,
        size_bytes=size_bytes,
        profile=json.dumps(parsed.to_state(), separators=(",", ":")) if parsed is not None else "",
        # The server's own reading of the column names is a floor under whatever the client detected.
        column_tags=merge_tags(detect_names(c["name"] for c in schema or []), _clean_tags(column_tags)),
        origin=origin,
        author_id=principal.person_id,
        created_ms=tracking.now_ms(),
    )
    tracking.add_unique(
        session,
        version,
        AlreadyExists("Another version of this dataset was registered at the same time; retry."),
    )
    for parent, transformation in parent_versions:
        session.add(
            DatasetDerivation(version_id=version.id, parent_id=parent.id, transformation=transformation)
        )
    dataset.updated_ms = version.created_ms
    record(
        session,
        principal,
        "dataset.version.create",
        "dataset_version",
        version.id,
        business_unit_id=dataset.business_unit_id,
        changes={"dataset": dataset.name, "version": number, "digest": digest, "origin": origin},
    )
    return version, True


def _clean_tags(tags: dict[str, dict[str, Any]] | None) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for column, entry in (tags or {}).items():
        chosen = sorted(set(entry.get("tags", [])) & set(TAGS))
        if chosen:
            out[str(column)] = {
                "tags": chosen,
                "kinds": [str(k) for k in entry.get("kinds", [])][:20],
                "reasons": [str(r)[:500] for r in entry.get("reasons", [])][:20],
                "source": "detected",
            }
    return out


def ensure_dataset_version(
    session: Session,
    principal: Principal,
    *,
    business_unit_id: str,
    name: str,
    digest: str,
    source: str = "",
    schema: list[dict[str, Any]] | None = None,
    row_count: int | None = None,
) -> DatasetVersion | None:
    """Registers what a run logged as a dataset input (SDK or mlflow client) as a dataset version in the
    run's unit, creating the dataset on first sight. Inputs with a hex content digest (SHA-256, or shorter
    digests, e.g. mlflow's, are accepted too) make a version; anything else stays a plain run input."""
    if not _INPUT_DIGEST.match(digest.lower()) or not principal.can(Action.DATA_WRITE):
        return None
    try:
        name = _check_name(name)
    except ValidationFailed:
        return None
    if not principal.can_see_unit(business_unit_id):
        # A run in a shared experiment of another unit (e.g. the central default): the data is the
        # author's, so it is registered in the author's own unit.
        business_unit_id = principal.business_unit_id
    dataset = session.scalar(
        select(Dataset).where(Dataset.business_unit_id == business_unit_id, Dataset.name == name)
    )
    if dataset is None:
        try:
            dataset = create_dataset(session, principal, name, business_unit_id=business_unit_id)
        except (NotFound, AlreadyExists):
            return None
    try:
        version, _ = register_version(
            session,
            principal,
            dataset,
            digest=digest,
            location=source,
            schema=schema,
            row_count=row_count or None,
            origin="tracking",
        )
    except (ValidationFailed, NotFound):  # logging the input must not fail over its registration
        return None
    return version


def upload_version(
    session: Session,
    principal: Principal,
    dataset: Dataset,
    store: ArtifactStore,
    filename: str,
    chunks: Iterable[bytes],
    *,
    max_bytes: int,
    fmt: str | None = None,
) -> tuple[DatasetVersion, bool]:
    """Stores uploaded bytes in the artifact store, profiles them there and registers the version. If the file
    cannot be read (wrong format, truncated, no rows...), the stored bytes are removed and nothing is kept."""
    tracking.check_writable(principal, dataset.business_unit_id, "dataset")
    base = filename.replace("\\", "/").rsplit("/", 1)[-1].strip()
    if not base or base in (".", "..") or len(base) > 200:
        raise BadRequest(
            "The upload needs a file name such as data.parquet.", details={"filename": filename[:100]}
        )
    path = f"datasets/{dataset.id}/{uuid.uuid4().hex}/{base}"
    digest = hashlib.sha256()

    def hashed() -> Iterable[bytes]:
        for chunk in chunks:
            digest.update(chunk)
            yield chunk

    size = store.put_stream(path, hashed(), max_bytes=max_bytes)
    try:
        fs, full, local = store.locate(path)
        source = open_source(full, fmt or None, filesystem=None if local else fs)
        detected: dict[str, dict[str, Any]] = {}
        # One thread: an upload must not take the server's cores from the requests it is answering.
        with Profiler(source.schema, threads=1) as profiler:
            for batch in source.batches():
                if profiler.profile.row_count == 0:
                    detected = detect_columns(batch)
                profiler.update(batch)
        profile = profiler.profile
        if profile.row_count == 0:
            raise BadRequest(
                f"{base} has no rows; a dataset version needs at least one.", details={"file": base}
            )
        version, created = register_version(
            session,
            principal,
            dataset,
            digest=digest.hexdigest(),
            location=path,
            format=source.format,
            size_bytes=size,
            profile=profile.to_state(),
            origin="upload",
            storage="stored",
            column_tags=detected,
        )
    except BaseException:
        store.delete(path)
        raise
    if not created:
        store.delete(path)  # the same bytes are already stored under the existing version
    return version, created


# -- contracts and validations ------------------------------------------------------------------------------


def _parse(text: str) -> Contract:
    try:
        return parse_contract(text)
    except ValueError as exc:
        raise ValidationFailed(f"The contract is not valid: {exc}") from exc


def set_contract(session: Session, principal: Principal, dataset_id: str, text: str) -> Dataset:
    dataset = writable_dataset(session, principal, dataset_id)
    contract = _parse(text) if text.strip() else None
    dataset.contract = text if contract is not None else ""
    dataset.updated_ms = tracking.now_ms()
    record(
        session, principal, "dataset.contract.set", "dataset", dataset.id,
        business_unit_id=dataset.business_unit_id,
        changes={"expectations": contract.expectation_count() if contract else 0},
    )  # fmt: skip
    return dataset


def record_validation(
    session: Session,
    principal: Principal,
    dataset: Dataset,
    report: ContractReport,
    *,
    version: DatasetVersion | None = None,
    location: str = "",
    contract: str | None = None,
) -> Validation:
    tracking.check_writable(principal, dataset.business_unit_id, "dataset")
    validation = Validation(
        dataset_id=dataset.id,
        version_id=version.id if version else None,
        location=location or (version.location if version else ""),
        passed=report.passed,
        failed_count=len(report.failed),
        report=report.model_dump(mode="json"),
        contract=contract if contract is not None else dataset.contract,
        author_id=principal.person_id,
        created_ms=tracking.now_ms(),
    )
    session.add(validation)
    session.flush()
    record(
        session, principal, "dataset.validate", "dataset", dataset.id,
        business_unit_id=dataset.business_unit_id,
        changes={"passed": report.passed, "failed": len(report.failed), "version": version.version if version else None},
    )  # fmt: skip
    return validation


def validate_stored_version(
    session: Session, principal: Principal, dataset: Dataset, version: DatasetVersion, store: ArtifactStore
) -> Validation:
    """Validates an uploaded version against the dataset's contract, on the server, and records the report."""
    if not dataset.contract:
        raise BadRequest(
            f"Dataset {dataset.name!r} has no contract; declare one first (PUT .../contract).",
            details={"dataset_id": dataset.id},
        )
    if version.storage != "stored":
        raise BadRequest(
            "This version's data lives outside Bridgehead (on the registering client); validate it where it is "
            "with `bridgehead data validate PATH --dataset NAME`, which records the report here.",
            details={"location": version.location},
        )
    contract = _parse(dataset.contract)
    fs, full, local = store.locate(version.location)
    source = open_source(full, version.format or None, filesystem=None if local else fs)
    report = validate_frame(standardize(source.lazy(), contract), contract)
    return record_validation(session, principal, dataset, report, version=version)


def list_validations(session: Session, dataset: Dataset, *, limit: int = 50) -> Sequence[Validation]:
    return session.scalars(
        select(Validation)
        .where(Validation.dataset_id == dataset.id)
        .order_by(Validation.created_ms.desc(), Validation.id)
        .limit(limit)
    ).all()


def derivations_of(session: Session, version_ids: Sequence[str]) -> dict[str, list[DatasetDerivation]]:
    if not version_ids:
        return {}
    rows = session.scalars(
        select(DatasetDerivation).where(DatasetDerivation.version_id.in_(version_ids))
    ).all()
    out: dict[str, list[DatasetDerivation]] = {}
    for row in rows:
        out.setdefault(row.version_id, []).append(row)
    return out


def latest_version_numbers(session: Session, dataset_ids: Sequence[str]) -> dict[str, int]:
    if not dataset_ids:
        return {}
    rows = session.execute(
        select(DatasetVersion.dataset_id, func.max(DatasetVersion.version))
        .where(DatasetVersion.dataset_id.in_(dataset_ids))
        .group_by(DatasetVersion.dataset_id)
    ).all()
    return {dataset_id: int(number) for dataset_id, number in rows}


def expectation_count(dataset: Dataset) -> int:
    return _parse(dataset.contract).expectation_count() if dataset.contract else 0


# -- access policy ------------------------------------------------------------------------------------------


def policy_of(session: Session, dataset: Dataset) -> dict[str, list[str]]:
    rows = session.execute(
        select(DatasetGrant.kind, DatasetGrant.value).where(DatasetGrant.dataset_id == dataset.id)
    ).all()
    return {
        "units": sorted(v for k, v in rows if k == "unit"),
        "roles": sorted(v for k, v in rows if k == "role"),
    }


def set_policy(
    session: Session, principal: Principal, dataset_id: str, *, units: list[str], roles: list[str]
) -> Dataset:
    """Replaces who may read the dataset beyond its own unit and central staff: the units listed (besides
    everyone when it is shared with the organization), and of those readers only the roles listed (all if
    none)."""
    dataset = writable_dataset(session, principal, dataset_id)
    for unit in units:
        if session.get(BusinessUnit, unit) is None:
            raise NotFound(f"Business unit {unit!r} does not exist.", details={"business_unit_id": unit})
    known = {r.value for r in Role}
    for role in roles:
        if role not in known:
            raise ValidationFailed(f"Unknown role {role!r}.", details={"role": role, "roles": sorted(known)})
    session.execute(delete(DatasetGrant).where(DatasetGrant.dataset_id == dataset.id))
    for kind, values in (("unit", units), ("role", roles)):
        for value in sorted(set(values)):
            session.add(DatasetGrant(dataset_id=dataset.id, kind=kind, value=value))
    dataset.updated_ms = tracking.now_ms()
    record(
        session, principal, "dataset.policy.set", "dataset", dataset.id,
        business_unit_id=dataset.business_unit_id, changes={"units": sorted(set(units)), "roles": sorted(set(roles))},
    )  # fmt: skip
    return dataset


def record_denied(session: Session, principal: Principal, dataset_id: str, what: str) -> bool:
    """Audits a refused read of an existing dataset (the caller was answered "not found"). True if recorded."""
    dataset = session.get(Dataset, dataset_id)
    if dataset is None or session.scalar(_visible(principal).where(Dataset.id == dataset_id)) is not None:
        return False  # no such dataset, or visible (the "not found" was about something inside it)
    record(
        session, principal, "dataset.access.denied", "dataset", dataset.id,
        business_unit_id=dataset.business_unit_id, changes={"read": what},
    )  # fmt: skip
    return True


def record_read(
    session: Session, principal: Principal, dataset: Dataset, what: str, *, masked: list[str]
) -> None:
    """Audits a read of values (profile, sample rows), naming the columns that were masked."""
    record(
        session, principal, "dataset.access.read", "dataset", dataset.id,
        business_unit_id=dataset.business_unit_id, changes={"read": what, "masked": masked},
    )  # fmt: skip


# -- column tags and masking --------------------------------------------------------------------------------


def masked_columns(principal: Principal, version: DatasetVersion | None) -> list[str]:
    """The version's columns whose values this principal may not see (PII and sensitive, without data.pii)."""
    if version is None or principal.can(Action.DATA_PII):
        return []
    return sorted(
        c for c, entry in (version.column_tags or {}).items() if MASKED_TAGS & set(entry.get("tags", []))
    )


MASK = "•••"


def mask_summary(summary: dict[str, Any], masked: list[str]) -> dict[str, Any]:
    """A profile summary with the values of masked columns hidden (counts, nulls and lengths stay)."""
    for col in summary.get("columns", []):
        if col["name"] in masked:
            for key in ("min", "max", "mean", "std", "quantiles", "histogram"):
                col.pop(key, None)
            if "top_values" in col:
                col["top_values"] = [{"value": MASK, "count": v["count"]} for v in col["top_values"]]
            col["masked"] = True
    return summary


def mask_state(state: dict[str, Any], masked: list[str]) -> dict[str, Any]:
    """A profile's full state (sketches) with masked columns reduced to their counts."""
    for col in state.get("columns", []):
        if col["name"] in masked:
            for key in ("kll", "top", "min", "max"):
                col.pop(key, None)
            col["mean"] = col["m2"] = 0.0
            col["masked"] = True
    return state


def mask_report(report: dict[str, Any], masked: list[str]) -> dict[str, Any]:
    """A validation report with the masked columns' values replaced in sample rows and observations."""
    if not masked:
        return report
    for e in report.get("expectations", []):
        e["sample"] = [
            {k: (MASK if k in masked and v is not None else v) for k, v in row.items()} for row in e["sample"]
        ]
        if e.get("column") in masked and e.get("expectation") == "freshness":
            e["observed"] = MASK
    return report


def set_column_tags(
    session: Session,
    principal: Principal,
    dataset: Dataset,
    version: DatasetVersion,
    tags: dict[str, list[str]],
) -> DatasetVersion:
    """Sets the tags of the named columns by hand (an empty list clears them); other columns keep theirs."""
    tracking.check_writable(principal, dataset.business_unit_id, "dataset")
    columns = {c["name"] for c in version.schema or []}
    current = dict(version.column_tags or {})
    for column, values in tags.items():
        if columns and column not in columns:
            raise NotFound(f"Version {version.version} has no column {column!r}.", details={"column": column})
        unknown = set(values) - set(TAGS)
        if unknown:
            raise ValidationFailed(f"Unknown tag(s) {sorted(unknown)}; use {', '.join(TAGS)}.")
        if values:
            current[column] = {
                "tags": sorted(set(values)),
                "kinds": [],
                "reasons": ["set by hand"],
                "source": "manual",
            }
        else:
            current.pop(column, None)
    version.column_tags = current
    record(
        session, principal, "dataset.columns.tag", "dataset_version", version.id,
        business_unit_id=dataset.business_unit_id, changes={"tags": tags},
    )  # fmt: skip
    return version
