"""JSON API: /api/v1/datasets (versions, profiles, uploads, contracts, validations).

Reads need ``data.read``; everything that registers or changes ``data.write``. Visibility follows the owning
business unit; a dataset shared with the organization is readable by all and writable by its own unit.
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from bridgehead.auth.deps import ApiPrincipal, db_of
from bridgehead.auth.roles import Action
from bridgehead.auth.service import Principal, require
from bridgehead.data import lineage, service
from bridgehead.data.contracts import ContractReport
from bridgehead.data.models import Dataset, DatasetVersion, Validation
from bridgehead.data.schemas import (
    ColumnSchema,
    ColumnTagsIn,
    ContractIn,
    ContractOut,
    DatasetCreate,
    DatasetDetail,
    DatasetOut,
    DatasetUpdate,
    Derivation,
    Format,
    LineageGraph,
    PolicyIn,
    PolicyOut,
    ProfileOut,
    ValidationIn,
    ValidationOut,
    VersionCreate,
    VersionCreated,
    VersionOut,
)
from bridgehead.errors import NotFound, PayloadTooLarge, error_responses
from bridgehead.schemas import Page
from bridgehead.store.artifacts import ArtifactStore, blocking_chunks
from bridgehead.tracking.schemas import ms_to_datetime

router = APIRouter(prefix="/api/v1", tags=["data"])
ERRORS = error_responses()
UPLOAD_ERRORS = error_responses(400, 401, 403, 404, 409, 413, 422)

DatasetId = Annotated[str, Path(min_length=1, max_length=32)]
Number = Annotated[int, Path(ge=1, le=2_147_483_647)]
Limit = Annotated[int, Query(ge=1, le=1000)]
Offset = Annotated[int, Query(ge=0, le=10_000_000)]


def _out(dataset: Dataset, latest: int | None = None) -> DatasetOut:
    return DatasetOut(
        id=dataset.id,
        name=dataset.name,
        business_unit_id=dataset.business_unit_id,
        visibility=dataset.visibility,
        owner_id=dataset.owner_id,
        description=dataset.description,
        source_system=dataset.source_system,
        tags=dataset.tags or {},
        has_contract=bool(dataset.contract),
        latest_version=latest,
        created_at=ms_to_datetime(dataset.created_ms),
        updated_at=ms_to_datetime(dataset.updated_ms),
    )


def _version_out(session: Session, v: DatasetVersion) -> VersionOut:
    parents = service.derivations_of(session, [v.id]).get(v.id, [])
    return VersionOut(
        id=v.id,
        dataset_id=v.dataset_id,
        version=v.version,
        digest=v.digest,
        location=v.location,
        storage=v.storage,
        format=v.format,
        columns=[ColumnSchema(name=c["name"], type=c["type"]) for c in v.schema or []],
        row_count=v.row_count,
        size_bytes=v.size_bytes,
        has_profile=bool(v.profile),
        column_tags=v.column_tags or {},
        origin=v.origin,
        author_id=v.author_id,
        parents=[Derivation(version_id=p.parent_id, transformation=p.transformation) for p in parents],
        created_at=ms_to_datetime(v.created_ms),
    )


def _detail(session: Session, dataset: Dataset) -> DatasetDetail:
    versions = [_version_out(session, v) for v in service.list_versions(session, dataset)]
    base = _out(dataset, versions[0].version if versions else None)
    return DatasetDetail(**base.model_dump(), versions=versions)


def _validation_out(session: Session, v: Validation, principal: Principal) -> ValidationOut:
    found = session.get(DatasetVersion, v.version_id) if v.version_id else None
    number = found.version if found is not None else None
    masked = service.masked_columns(principal, found)
    return ValidationOut(
        id=v.id,
        dataset_id=v.dataset_id,
        version=number,
        location=v.location,
        passed=v.passed,
        failed_count=v.failed_count,
        report=ContractReport.model_validate(service.mask_report(copy.deepcopy(v.report), masked)),
        masked=masked,
        created_at=ms_to_datetime(v.created_ms),
        author_id=v.author_id,
    )


@contextlib.contextmanager
def _audit_denials(request: Request, principal: Principal, dataset_id: str, what: str) -> Iterator[None]:
    """A read refused with "not found" for a dataset that exists is an access decision: audit it (in its own
    transaction, since the refusal rolls the reader's back)."""
    try:
        yield
    except NotFound as exc:
        if exc.details.get("dataset_id") == dataset_id:
            with db_of(request).session(write=True) as session:
                service.record_denied(session, principal, dataset_id, what)
        raise


@router.get("/datasets", response_model=Page[DatasetOut], responses=ERRORS)
def list_datasets(
    request: Request,
    principal: ApiPrincipal,
    q: Annotated[str | None, Query(max_length=250, description="Part of the name or description.")] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page[DatasetOut]:
    """Datasets you may see, by name."""
    require(principal, Action.DATA_READ)
    with db_of(request).session() as session:
        rows, total = service.list_datasets(session, principal, q=q, limit=limit, offset=offset)
        latest = service.latest_version_numbers(session, [d.id for d in rows])
        return Page(items=[_out(d, latest.get(d.id)) for d in rows], total=total)


@router.post("/datasets", status_code=201, response_model=DatasetDetail, responses=ERRORS)
def create_dataset(request: Request, principal: ApiPrincipal, body: DatasetCreate) -> DatasetDetail:
    """Create a dataset in your business unit (central staff may name another), optionally with a contract."""
    require(principal, Action.DATA_WRITE)
    with db_of(request).session(write=True) as session:
        dataset = service.create_dataset(
            session,
            principal,
            body.name,
            description=body.description,
            source_system=body.source_system,
            tags=body.tags,
            business_unit_id=body.business_unit_id,
            visibility=body.visibility,
            contract=body.contract,
        )
        return _detail(session, dataset)


@router.get("/datasets/{dataset_id}", response_model=DatasetDetail, responses=ERRORS)
def get_dataset(request: Request, principal: ApiPrincipal, dataset_id: DatasetId) -> DatasetDetail:
    """A dataset with its versions, newest first."""
    require(principal, Action.DATA_READ)
    with _audit_denials(request, principal, dataset_id, "dataset"), db_of(request).session() as session:
        return _detail(session, service.get_dataset(session, principal, dataset_id))


@router.patch("/datasets/{dataset_id}", response_model=DatasetDetail, responses=ERRORS)
def update_dataset(
    request: Request, principal: ApiPrincipal, dataset_id: DatasetId, body: DatasetUpdate
) -> DatasetDetail:
    """Rename, describe, retag or share a dataset."""
    require(principal, Action.DATA_WRITE)
    with db_of(request).session(write=True) as session:
        dataset = service.update_dataset(session, principal, dataset_id, **body.model_dump(exclude_none=True))
        return _detail(session, dataset)


@router.post(
    "/datasets/{dataset_id}/versions", status_code=201, response_model=VersionCreated, responses=ERRORS
)
def register_version(
    request: Request, principal: ApiPrincipal, dataset_id: DatasetId, body: VersionCreate
) -> VersionCreated:
    """Register a version from its metadata and profile, computed where the data lives (SDK, CLI). The same
    digest again returns the existing version with ``created: false``."""
    require(principal, Action.DATA_WRITE)
    with db_of(request).session(write=True) as session:
        dataset = service.writable_dataset(session, principal, dataset_id)
        version, created = service.register_version(
            session,
            principal,
            dataset,
            digest=body.digest,
            location=body.location,
            format=body.format or "",
            schema=[c.model_dump() for c in body.columns] if body.columns is not None else None,
            row_count=body.row_count,
            size_bytes=body.size_bytes,
            profile=body.profile,
            origin="client",
            parents=[(p.version_id, p.transformation) for p in body.parents],
            column_tags={k: v.model_dump() for k, v in (body.column_tags or {}).items()},
        )
        return VersionCreated(**_version_out(session, version).model_dump(), created=created)


def _upload(
    request: Request,
    principal: Principal,
    dataset_id: str,
    filename: str,
    body: Iterator[bytes],
    limit: int,
    fmt: str | None,
) -> VersionCreated:
    store: ArtifactStore = request.app.state.artifacts
    with db_of(request).session(write=True) as session:
        dataset = service.writable_dataset(session, principal, dataset_id)
        version, created = service.upload_version(
            session,
            principal,
            dataset,
            store,
            filename,
            body,
            max_bytes=limit,
            fmt=fmt,
        )
        return VersionCreated(**_version_out(session, version).model_dump(), created=created)


@router.put(
    "/datasets/{dataset_id}/upload/{filename}",
    status_code=201,
    response_model=VersionCreated,
    responses=UPLOAD_ERRORS,
)
async def upload_version(
    request: Request,
    principal: ApiPrincipal,
    dataset_id: DatasetId,
    filename: Annotated[str, Path(min_length=1, max_length=200)],
    format: Annotated[Format | None, Query(description="Default: from the file name or its bytes.")] = None,
) -> VersionCreated:
    """Upload a file (the raw request body) as a new version: it is kept in Bridgehead's artifact store and
    profiled there. Over BRIDGEHEAD_MAX_ARTIFACT_BYTES answers 413; an unreadable file answers 400; in both
    cases nothing is kept."""
    require(principal, Action.DATA_WRITE)
    limit: int = request.app.state.settings.max_artifact_bytes
    announced = request.headers.get("content-length", "")
    if announced.isdigit() and int(announced) > limit:
        raise PayloadTooLarge(
            f"The file is larger than {limit} bytes (BRIDGEHEAD_MAX_ARTIFACT_BYTES).",
            details={"limit_bytes": limit},
        )
    body = blocking_chunks(request.stream())
    return await run_in_threadpool(_upload, request, principal, dataset_id, filename, body, limit, format)


@router.get("/datasets/{dataset_id}/versions/{version}", response_model=VersionOut, responses=ERRORS)
def get_version(
    request: Request, principal: ApiPrincipal, dataset_id: DatasetId, version: Number
) -> VersionOut:
    """One version's metadata."""
    require(principal, Action.DATA_READ)
    with db_of(request).session() as session:
        dataset = service.get_dataset(session, principal, dataset_id)
        return _version_out(session, service.get_version(session, dataset, version))


@router.get("/datasets/{dataset_id}/versions/{version}/profile", response_model=ProfileOut, responses=ERRORS)
def get_profile(
    request: Request,
    principal: ApiPrincipal,
    dataset_id: DatasetId,
    version: Number,
    sketches: Annotated[
        bool, Query(description="Include the mergeable sketches (for drift references).")
    ] = False,
    unmasked: Annotated[
        bool, Query(description="Require personal data unmasked (needs data.pii; 403 otherwise).")
    ] = False,
) -> ProfileOut:
    """A version's profile: per column counts, nulls, distinct estimate, range, quantiles, histogram, top
    values and string lengths. Columns tagged pii or sensitive are masked for readers without data.pii.
    Every read is audited, with the columns that were masked."""
    require(principal, Action.DATA_READ)
    if unmasked:
        require(principal, Action.DATA_PII)
    with (
        _audit_denials(request, principal, dataset_id, "profile"),
        db_of(request).session(write=True) as session,
    ):
        dataset = service.get_dataset(session, principal, dataset_id)
        found = service.get_version(session, dataset, version)
        masked = service.masked_columns(principal, found)
        profile = service.load_profile(found)
        body: dict[str, Any]
        if profile is None:
            body = {"row_count": found.row_count, "columns": []}
        elif sketches:
            body = service.mask_state(profile.to_state(), masked)
        else:
            body = service.mask_summary(profile.summary(), masked)
        service.record_read(session, principal, dataset, f"profile of version {found.version}", masked=masked)
        return ProfileOut(
            dataset_id=dataset.id, version=found.version, profile=json.loads(json.dumps(body)), masked=masked
        )


@router.put(
    "/datasets/{dataset_id}/versions/{version}/column-tags", response_model=VersionOut, responses=ERRORS
)
def set_column_tags(
    request: Request, principal: ApiPrincipal, dataset_id: DatasetId, version: Number, body: ColumnTagsIn
) -> VersionOut:
    """Tag columns by hand (pii, sensitive, protected); the tags given replace that column's, [] clears them.
    "protected" marks the attributes fairness audits group by."""
    require(principal, Action.DATA_WRITE)
    with db_of(request).session(write=True) as session:
        dataset = service.writable_dataset(session, principal, dataset_id)
        found = service.get_version(session, dataset, version)
        service.set_column_tags(
            session, principal, dataset, found, {k: list(v) for k, v in body.columns.items()}
        )
        return _version_out(session, found)


@router.get("/datasets/{dataset_id}/policy", response_model=PolicyOut, responses=ERRORS)
def get_policy(request: Request, principal: ApiPrincipal, dataset_id: DatasetId) -> PolicyOut:
    """Who may read the dataset beyond its own unit and central staff."""
    require(principal, Action.DATA_READ)
    with db_of(request).session() as session:
        dataset = service.get_dataset(session, principal, dataset_id)
        return PolicyOut(
            dataset_id=dataset.id, visibility=dataset.visibility, **service.policy_of(session, dataset)
        )


@router.put("/datasets/{dataset_id}/policy", response_model=PolicyOut, responses=ERRORS)
def set_policy(request: Request, principal: ApiPrincipal, dataset_id: DatasetId, body: PolicyIn) -> PolicyOut:
    """Grant reading to more business units and/or limit readers outside the owning unit to some roles."""
    require(principal, Action.DATA_WRITE)
    with db_of(request).session(write=True) as session:
        dataset = service.set_policy(session, principal, dataset_id, units=body.units, roles=body.roles)
        return PolicyOut(
            dataset_id=dataset.id, visibility=dataset.visibility, **service.policy_of(session, dataset)
        )


@router.get("/datasets/{dataset_id}/contract", response_model=ContractOut, responses=ERRORS)
def get_contract(request: Request, principal: ApiPrincipal, dataset_id: DatasetId) -> ContractOut:
    """The dataset's data contract (YAML), empty if none."""
    require(principal, Action.DATA_READ)
    with db_of(request).session() as session:
        dataset = service.get_dataset(session, principal, dataset_id)
        return ContractOut(
            dataset_id=dataset.id, contract=dataset.contract, expectations=service.expectation_count(dataset)
        )


@router.put("/datasets/{dataset_id}/contract", response_model=ContractOut, responses=ERRORS)
def set_contract(
    request: Request, principal: ApiPrincipal, dataset_id: DatasetId, body: ContractIn
) -> ContractOut:
    """Declare or replace the data contract; an invalid contract answers 422 saying what is wrong."""
    require(principal, Action.DATA_WRITE)
    with db_of(request).session(write=True) as session:
        dataset = service.set_contract(session, principal, dataset_id, body.contract)
        return ContractOut(
            dataset_id=dataset.id, contract=dataset.contract, expectations=service.expectation_count(dataset)
        )


@router.get("/datasets/{dataset_id}/validations", response_model=Page[ValidationOut], responses=ERRORS)
def list_validations(
    request: Request, principal: ApiPrincipal, dataset_id: DatasetId, limit: Limit = 50
) -> Page[ValidationOut]:
    """Validation reports, newest first."""
    require(principal, Action.DATA_READ)
    with (
        _audit_denials(request, principal, dataset_id, "validations"),
        db_of(request).session(write=True) as session,
    ):
        dataset = service.get_dataset(session, principal, dataset_id)
        rows = service.list_validations(session, dataset, limit=limit)
        items = [_validation_out(session, v, principal) for v in rows]
        masked = sorted({c for item in items for c in item.masked})
        service.record_read(session, principal, dataset, "validation reports", masked=masked)
        return Page(items=items, total=len(rows))


@router.post(
    "/datasets/{dataset_id}/validations", status_code=201, response_model=ValidationOut, responses=ERRORS
)
def record_validation(
    request: Request, principal: ApiPrincipal, dataset_id: DatasetId, body: ValidationIn
) -> ValidationOut:
    """Record a validation report computed where the data lives (``bridgehead data validate``)."""
    require(principal, Action.DATA_WRITE)
    with db_of(request).session(write=True) as session:
        dataset = service.writable_dataset(session, principal, dataset_id)
        version = service.get_version(session, dataset, body.version) if body.version else None
        row = service.record_validation(
            session, principal, dataset, body.report, version=version, location=body.location
        )
        return _validation_out(session, row, principal)


@router.post(
    "/datasets/{dataset_id}/versions/{version}/validate",
    status_code=201,
    response_model=ValidationOut,
    responses=ERRORS,
)
def validate_version(
    request: Request, principal: ApiPrincipal, dataset_id: DatasetId, version: Number
) -> ValidationOut:
    """Validate an uploaded version against the dataset's contract on the server and record the report."""
    require(principal, Action.DATA_WRITE)
    store: ArtifactStore = request.app.state.artifacts
    with db_of(request).session(write=True) as session:
        dataset = service.writable_dataset(session, principal, dataset_id)
        found = service.get_version(session, dataset, version)
        row = service.validate_stored_version(session, principal, dataset, found, store)
        return _validation_out(session, row, principal)


NodeRef = Annotated[
    str,
    Query(
        min_length=3,
        max_length=100,
        pattern=r"^(dataset|dataset_version|run|model_version|endpoint):[A-Za-z0-9_\-]{1,64}$",
        description="type:id, e.g. dataset:3f2a..., dataset_version:..., run:..., model_version:..., endpoint:...",
    ),
]
Depth = Annotated[int, Query(ge=1, le=10, description="How many edges away to go, up and down.")]


@router.get("/lineage", response_model=LineageGraph, responses=ERRORS)
def get_lineage(request: Request, principal: ApiPrincipal, node: NodeRef, depth: Depth = 3) -> LineageGraph:
    """Upstream and downstream of a node: dataset versions (and what they were derived from), the runs that
    used them, the model versions those runs produced. Only what you may see."""
    require(principal, Action.DATA_READ)
    kind, _, ident = node.partition(":")
    with db_of(request).session() as session:
        return LineageGraph.model_validate(
            lineage.lineage(session, principal, kind, ident, depth=depth).as_dict()
        )


@router.get("/lineage/openlineage", response_model=list[dict[str, Any]], responses=ERRORS)
def export_openlineage(
    request: Request, principal: ApiPrincipal, node: NodeRef, depth: Depth = 3
) -> list[dict[str, Any]]:
    """The same graph as OpenLineage RunEvents (spec 2-0-2), for Marquez or any OpenLineage consumer."""
    require(principal, Action.DATA_READ)
    kind, _, ident = node.partition(":")
    with db_of(request).session() as session:
        graph = lineage.lineage(session, principal, kind, ident, depth=depth)
        return lineage.openlineage_events(session, graph)
