"""JSON API: /api/v1/registered-models (versions, aliases, files, lineage).

Reads need ``tracking.read``; creating, changing and deleting models and versions ``model.register``;
setting and removing aliases ``model.alias``. Visibility follows the owning business unit; a model shared
with the organization can be read and loaded by everyone, and changed only by its own unit.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from bridgehead.auth.deps import ApiPrincipal, db_of
from bridgehead.auth.roles import Action
from bridgehead.auth.service import Principal, require
from bridgehead.errors import BadRequest, NotFound, StoreUnavailable, error_responses
from bridgehead.hookspecs import flavors
from bridgehead.registry import service
from bridgehead.registry.models import ModelVersion, RegisteredModel
from bridgehead.registry.schemas import (
    AliasOut,
    AliasSet,
    Lineage,
    LineageDataset,
    LineageRun,
    ModelCreate,
    ModelDetail,
    ModelOut,
    ModelUpdate,
    VersionCreate,
    VersionFile,
    VersionFiles,
    VersionOut,
    VersionUpdate,
)
from bridgehead.schemas import Page
from bridgehead.store.artifacts import ArtifactStore, safe_relative_path
from bridgehead.tracking import service as tracking
from bridgehead.tracking.schemas import ms_to_datetime

router = APIRouter(prefix="/api/v1", tags=["registry"])
ERRORS = error_responses()
FILE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The file's bytes.",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}

Limit = Annotated[int, Query(ge=1, le=1000)]
Offset = Annotated[int, Query(ge=0, le=10_000_000)]
Name = Annotated[str, Path(min_length=1, max_length=250)]
Number = Annotated[int, Path(ge=1, le=2_147_483_647)]
AliasName = Annotated[str, Path(min_length=1, max_length=255)]


# --- helpers ----------------------------------------------------------------------------------


def _version_out(name: str, v: ModelVersion, aliases: dict[str, int]) -> VersionOut:
    return VersionOut(
        name=name,
        version=v.version,
        source=v.source,
        run_id=v.run_id,
        flavor=v.flavor,
        signature=v.signature or {},
        sha256=v.sha256,
        status=v.status,
        stage=v.stage,
        description=v.description,
        tags=v.tags or {},
        metrics=v.metrics or {},
        datasets=v.datasets or [],
        aliases=sorted(a for a, n in aliases.items() if n == v.version),
        user_name=v.user_name,
        created_at=ms_to_datetime(v.created_ms),
        updated_at=ms_to_datetime(v.updated_ms),
    )


def _model_out(model: RegisteredModel, overview: service.ModelOverview) -> ModelOut:
    return ModelOut(
        id=model.id,
        name=model.name,
        business_unit_id=model.business_unit_id,
        visibility=model.visibility,
        owner_id=model.owner_id,
        use_case_id=model.use_case_id,
        description=model.description,
        tags=model.tags or {},
        aliases=overview.aliases,
        latest_version=overview.latest.version if overview.latest else None,
        created_at=ms_to_datetime(model.created_ms),
        updated_at=ms_to_datetime(model.updated_ms),
    )


def _detail(session: Session, model: RegisteredModel) -> ModelDetail:
    aliases = service.aliases_of(session, model)
    versions = service.versions_of(session, model)
    overview = service.ModelOverview(
        versions=len(versions), latest=versions[0] if versions else None, aliases=aliases
    )
    return ModelDetail(
        **_model_out(model, overview).model_dump(),
        versions=[_version_out(model.name, v, aliases) for v in versions],
    )


def _store(request: Request) -> ArtifactStore:
    store: ArtifactStore = request.app.state.artifacts
    return store


def _version_dir(session: Session, principal: Principal, name: str, version: int) -> str:
    found = service.get_version(session, principal, name, version)
    if not found.artifact_path:
        raise BadRequest("This version's files are not in Bridgehead's artifact store.")
    return found.artifact_path


@contextlib.contextmanager
def _artifact_errors() -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise BadRequest("A part of the path is too long.") from exc
        raise StoreUnavailable("The artifact store failed; retry shortly.") from exc


# --- registered models ------------------------------------------------------------------------


@router.get("/registered-models", response_model=Page[ModelOut], responses=ERRORS)
def list_models(
    request: Request,
    principal: ApiPrincipal,
    name_like: Annotated[
        str | None, Query(max_length=250, description="Case-insensitive SQL LIKE pattern: %, _.")
    ] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[ModelOut]:
    """Registered models you may see, by name."""
    require(principal, Action.TRACKING_READ)
    with db_of(request).session() as session:
        rows = service.search_registered_models(
            session, principal, name_like=name_like, limit=limit, offset=offset
        )
        total = service.count_registered_models(session, principal, name_like=name_like)
        overview = service.model_overview(session, [m.id for m in rows])
        return Page[ModelOut](items=[_model_out(m, overview[m.id]) for m in rows], total=total)


@router.post("/registered-models", status_code=201, response_model=ModelDetail, responses=ERRORS)
def create_model(request: Request, principal: ApiPrincipal, body: ModelCreate) -> ModelDetail:
    """Create a registered model in your business unit (central staff may name another)."""
    require(principal, Action.MODEL_REGISTER)
    with db_of(request).session(write=True) as session:
        model = service.create_registered_model(
            session,
            principal,
            body.name,
            description=body.description,
            tags=body.tags,
            business_unit_id=body.business_unit_id,
            use_case_id=body.use_case_id,
            visibility=body.visibility,
        )
        return _detail(session, model)


@router.get("/registered-models/{name}", response_model=ModelDetail, responses=ERRORS)
def get_model(request: Request, principal: ApiPrincipal, name: Name) -> ModelDetail:
    """A registered model with its versions (newest first) and aliases."""
    require(principal, Action.TRACKING_READ)
    with db_of(request).session() as session:
        return _detail(session, service.get_registered_model(session, principal, name))


@router.patch("/registered-models/{name}", response_model=ModelDetail, responses=ERRORS)
def update_model(request: Request, principal: ApiPrincipal, name: Name, body: ModelUpdate) -> ModelDetail:
    """Change the description, the tags (replaced as a whole) or the use case."""
    require(principal, Action.MODEL_REGISTER)
    with db_of(request).session(write=True) as session:
        model = service.writable_model(session, principal, name)
        service.update_registered_model(
            session,
            principal,
            model.name,
            description=body.description,
            tags=None if body.tags is None else dict(body.tags),
            use_case_id=body.use_case_id,
        )
        session.flush()
        return _detail(session, model)


@router.delete("/registered-models/{name}", status_code=204, response_class=Response, responses=ERRORS)
def delete_model(request: Request, principal: ApiPrincipal, name: Name) -> Response:
    """Delete a registered model, its versions and aliases (the files stay in the artifact store)."""
    require(principal, Action.MODEL_REGISTER)
    with db_of(request).session(write=True) as session:
        model = service.writable_model(session, principal, name)
        service.delete_registered_model(session, principal, model.name)
    return Response(status_code=204)


# --- versions ---------------------------------------------------------------------------------


@router.post(
    "/registered-models/{name}/versions", status_code=201, response_model=VersionOut, responses=ERRORS
)
def create_version(request: Request, principal: ApiPrincipal, name: Name, body: VersionCreate) -> VersionOut:
    """Register a model directory as the next version: from a run (``run_id`` + ``artifact_path``) or a
    source URI. Records its flavor, signature, SHA-256, and the run's metrics and datasets (lineage)."""
    require(principal, Action.MODEL_REGISTER)
    if body.source is not None:
        source = body.source
    else:
        source = f"runs:/{body.run_id}/{safe_relative_path(str(body.artifact_path))}"
    with db_of(request).session(write=True) as session:
        model = service.writable_model(session, principal, name)
        version = service.create_model_version(
            session,
            principal,
            _store(request),
            model.name,
            source,
            run_id=body.run_id or _run_of(source),
            description=body.description,
            tags=body.tags,
        )
        return _version_out(model.name, version, service.aliases_of(session, model))


def _run_of(source: str) -> str | None:
    """The run named by a ``runs:/`` URI, so that its lineage is recorded."""
    if source.startswith("runs:/"):
        return source.removeprefix("runs:/").split("/", 1)[0] or None
    return None


@router.get("/registered-models/{name}/versions", response_model=Page[VersionOut], responses=ERRORS)
def list_versions(
    request: Request, principal: ApiPrincipal, name: Name, limit: Limit = 100, offset: Offset = 0
) -> Page[VersionOut]:
    """Versions of a model, newest first."""
    require(principal, Action.TRACKING_READ)
    with db_of(request).session() as session:
        model = service.get_registered_model(session, principal, name)
        versions = service.versions_of(session, model)
        aliases = service.aliases_of(session, model)
        return Page[VersionOut](
            items=[_version_out(model.name, v, aliases) for v in versions[offset : offset + limit]],
            total=len(versions),
        )


@router.get("/registered-models/{name}/versions/{version}", response_model=VersionOut, responses=ERRORS)
def get_version(request: Request, principal: ApiPrincipal, name: Name, version: Number) -> VersionOut:
    require(principal, Action.TRACKING_READ)
    with db_of(request).session() as session:
        model = service.get_registered_model(session, principal, name)
        found = service.get_version(session, principal, model.name, version)
        return _version_out(model.name, found, service.aliases_of(session, model))


@router.patch("/registered-models/{name}/versions/{version}", response_model=VersionOut, responses=ERRORS)
def update_version(
    request: Request, principal: ApiPrincipal, name: Name, version: Number, body: VersionUpdate
) -> VersionOut:
    """Change a version's description, or its tags (replaced as a whole)."""
    require(principal, Action.MODEL_REGISTER)
    with db_of(request).session(write=True) as session:
        model = service.writable_model(session, principal, name)
        found = service.update_version(session, principal, model.name, version, description=body.description)
        if body.tags is not None:
            for key in set(found.tags or {}) - set(body.tags):
                service.set_version_tag(session, principal, model.name, version, key, None)
            for key, value in body.tags.items():
                service.set_version_tag(session, principal, model.name, version, key, value)
        session.flush()
        return _version_out(model.name, found, service.aliases_of(session, model))


@router.delete(
    "/registered-models/{name}/versions/{version}", status_code=204, response_class=Response, responses=ERRORS
)
def delete_version(request: Request, principal: ApiPrincipal, name: Name, version: Number) -> Response:
    """Delete a version and the aliases pointing at it (its files stay in the artifact store)."""
    require(principal, Action.MODEL_REGISTER)
    with db_of(request).session(write=True) as session:
        model = service.writable_model(session, principal, name)
        service.delete_version(session, principal, model.name, version)
    return Response(status_code=204)


@router.get(
    "/registered-models/{name}/versions/{version}/artifacts", response_model=VersionFiles, responses=ERRORS
)
def list_version_files(
    request: Request,
    principal: ApiPrincipal,
    name: Name,
    version: Number,
    path: Annotated[str | None, Query(max_length=1024, description="A sub-directory; default: all.")] = None,
) -> VersionFiles:
    """Every file of the version's model directory (or of one sub-directory), with sizes."""
    require(principal, Action.TRACKING_READ)
    with db_of(request).session() as session:
        base = _version_dir(session, principal, name, version)
    rel = safe_relative_path(path) if path else ""
    with _artifact_errors():
        found = _store(request).walk(f"{base}/{rel}" if rel else base)
    return VersionFiles(files=[VersionFile(path=f"{rel}/{p}" if rel else p, size=size) for p, size in found])


@router.get(
    "/registered-models/{name}/versions/{version}/download",
    response_class=StreamingResponse,
    responses={**ERRORS, **FILE_RESPONSE},
)
def download_version_file(
    request: Request,
    principal: ApiPrincipal,
    name: Name,
    version: Number,
    path: Annotated[str, Query(min_length=1, max_length=1024, description="A file of the model directory.")],
) -> StreamingResponse:
    """One file of the version's model directory, streamed."""
    require(principal, Action.TRACKING_READ)
    with db_of(request).session() as session:
        base = _version_dir(session, principal, name, version)
    full = f"{base}/{safe_relative_path(path)}"
    store = _store(request)
    with _artifact_errors():
        if not store.is_file(full):
            raise NotFound("No such file in this model version.", details={"path": path})
    return StreamingResponse(
        store.iter_bytes(full),
        media_type="application/octet-stream",
        headers={"Content-Disposition": f"attachment; filename*=UTF-8''{quote(full.rsplit('/', 1)[-1])}"},
    )


@router.get("/registered-models/{name}/versions/{version}/lineage", response_model=Lineage, responses=ERRORS)
def version_lineage(request: Request, principal: ApiPrincipal, name: Name, version: Number) -> Lineage:
    """Where a version came from: the run that produced it and the datasets that run consumed."""
    require(principal, Action.TRACKING_READ)
    with db_of(request).session() as session:
        found = service.get_version(session, principal, name, version)
        run_out = None
        if found.run_id:
            try:
                run = tracking.get_run(session, principal, found.run_id)
            except NotFound:
                run = None
            if run is not None:
                try:
                    experiment_name: str | None = tracking.get_experiment(
                        session, principal, run.experiment_id
                    ).name
                except NotFound:
                    experiment_name = None
                data = tracking.run_data(session, [run.id])[run.id]
                run_out = LineageRun(
                    id=run.id,
                    name=run.name,
                    status=run.status,
                    experiment_id=run.experiment_id,
                    experiment_name=experiment_name,
                    start_time=ms_to_datetime(run.start_ms),
                    end_time=None if run.end_ms is None else ms_to_datetime(run.end_ms),
                    params=data.params,
                    metrics=found.metrics or {},
                )
        return Lineage(
            name=name,
            version=found.version,
            sha256=found.sha256,
            source=found.source,
            run_id=found.run_id,
            run=run_out,
            datasets=[
                LineageDataset(
                    name=str(d.get("name", "")),
                    digest=str(d.get("digest", "")),
                    source=str(d.get("source", "")),
                    context=str(d.get("context", "")),
                )
                for d in found.datasets or []
                if isinstance(d, dict)
            ],
            deployments=_deployments(session, principal, found.id),
        )


def _deployments(session: Session, principal: Principal, version_id: str) -> list[dict[str, Any]]:
    from bridgehead.serving.service import serving_version  # serving builds on the registry

    return [
        {"endpoint": s.endpoint, "environment": s.environment, "role": s.role, "weight": s.weight}
        for s in serving_version(session, principal, version_id)
    ]


@router.post(
    "/registered-models/{name}/versions/{version}/trusted-load",
    status_code=204,
    response_class=Response,
    responses=ERRORS,
)
def trusted_load(request: Request, principal: ApiPrincipal, name: Name, version: Number) -> Response:
    """Announce that you are about to load this version in a code-executing format (pickle). Refused
    (403) unless BRIDGEHEAD_TRUSTED_FLAVORS on the server names the format; recorded in the audit trail.
    The SDK calls this before it unpickles anything."""
    require(principal, Action.TRACKING_READ)
    trusted = frozenset(request.app.state.settings.trusted_flavors)
    safe = frozenset(n for n, f in flavors(request.app.state.plugins).items() if f.safe)
    with db_of(request).session(write=True) as session:
        service.record_trusted_load(session, principal, name, version, trusted, safe=safe)
    return Response(status_code=204)


# --- aliases ----------------------------------------------------------------------------------


@router.put("/registered-models/{name}/aliases/{alias}", response_model=AliasOut, responses=ERRORS)
def set_alias(
    request: Request, principal: ApiPrincipal, name: Name, alias: AliasName, body: AliasSet
) -> AliasOut:
    """Point an alias (e.g. ``champion``) at a version, moving it if it pointed elsewhere."""
    require(principal, Action.MODEL_ALIAS)
    with db_of(request).session(write=True) as session:
        model = service.writable_model(session, principal, name)
        service.set_alias(session, principal, model.name, alias, body.version)
    return AliasOut(name=name, alias=alias, version=body.version)


@router.get("/registered-models/{name}/aliases/{alias}", response_model=VersionOut, responses=ERRORS)
def resolve_alias(request: Request, principal: ApiPrincipal, name: Name, alias: AliasName) -> VersionOut:
    """The version an alias points at."""
    require(principal, Action.TRACKING_READ)
    with db_of(request).session() as session:
        model = service.get_registered_model(session, principal, name)
        aliases = service.aliases_of(session, model)
        if alias not in aliases:
            raise NotFound(f"Model {name} has no alias {alias!r}.", details={"alias": alias})
        found = service.get_version(session, principal, model.name, aliases[alias])
        return _version_out(model.name, found, aliases)


@router.delete(
    "/registered-models/{name}/aliases/{alias}", status_code=204, response_class=Response, responses=ERRORS
)
def delete_alias(request: Request, principal: ApiPrincipal, name: Name, alias: AliasName) -> Response:
    require(principal, Action.MODEL_ALIAS)
    with db_of(request).session(write=True) as session:
        model = service.writable_model(session, principal, name)
        service.delete_alias(session, principal, model.name, alias)
    return Response(status_code=204)
