"""MLflow's model registry REST routes (registered models, versions, aliases, stages) over registry.service.

Reads need ``tracking.read``; changes need ``model.register``; moving an alias or a stage, which changes what
``models:/name@alias`` or ``models:/name/Production`` loads downstream, needs ``model.alias``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import Field
from sqlalchemy.orm import Session

from bridgehead.auth.deps import ApiPrincipal
from bridgehead.auth.roles import Action
from bridgehead.auth.service import Principal, require
from bridgehead.errors import BadRequest
from bridgehead.registry import service as registry
from bridgehead.registry.models import ModelVersion, RegisteredModel
from bridgehead.tracking.mlflow_wire import (
    Body,
    KeyValue,
    artifacts_of,
    db,
    decode_page_token,
    kv_dict,
    model_version_json,
    ok,
    page,
    registered_model_json,
)

__all__ = ["router"]

router = APIRouter(prefix="/api/2.0/mlflow")

MAX_RESULTS_MODELS = 1000
MAX_RESULTS_VERSIONS = 200_000


class ModelName(Body):
    name: str


class CreateModel(ModelName):
    description: str = ""
    tags: list[KeyValue] = Field(default_factory=list)


class RenameModel(ModelName):
    new_name: str


class UpdateModel(ModelName):
    description: str | None = None


class ModelTag(ModelName):
    key: str
    value: str = ""


class LatestVersions(ModelName):
    stages: list[str] = Field(default_factory=list)


class AliasIn(ModelName):
    alias: str
    version: str = ""


class VersionRef(ModelName):
    version: str


class CreateVersion(ModelName):
    source: str
    run_id: str | None = None
    description: str = ""
    tags: list[KeyValue] = Field(default_factory=list)
    model_id: str | None = None


class UpdateVersion(VersionRef):
    description: str | None = None


class VersionTag(VersionRef):
    key: str
    value: str = ""


class TransitionStage(VersionRef):
    stage: str
    archive_existing_versions: bool = False


def _limit(value: int, most: int) -> int:
    if value < 1 or value > most:
        raise BadRequest(f"max_results must be between 1 and {most}, got {value}.")
    return value


def _models_json(session: Session, models: Sequence[RegisteredModel]) -> list[dict[str, Any]]:
    """Several registered models with their latest versions and aliases: two queries however many."""
    ids = [m.id for m in models]
    latest = registry.latest_versions_for(session, ids)
    aliases = registry.aliases_for(session, ids)
    return [registered_model_json(m, latest[m.id], aliases[m.id]) for m in models]


def _versions_json(session: Session, versions: Sequence[ModelVersion]) -> list[dict[str, Any]]:
    """Several versions with their model's name and aliases: two queries however many."""
    ids = sorted({v.model_id for v in versions})
    names = registry.model_names(session, ids)
    aliases = registry.aliases_for(session, ids)
    return [
        model_version_json(
            v, names[v.model_id], [a for a, n in aliases[v.model_id].items() if n == v.version]
        )
        for v in versions
    ]


def _model_answer(session: Session, model: RegisteredModel) -> JSONResponse:
    return ok({"registered_model": _models_json(session, [model])[0]})


def _version_answer(session: Session, version: ModelVersion) -> JSONResponse:
    return ok({"model_version": _versions_json(session, [version])[0]})


# --- registered models ------------------------------------------------------------------------


@router.post("/registered-models/create")
def create_registered_model(body: CreateModel, request: Request, principal: ApiPrincipal) -> JSONResponse:
    require(principal, Action.MODEL_REGISTER)
    with db(request).session(write=True) as session:
        model = registry.create_registered_model(
            session, principal, body.name, description=body.description, tags=kv_dict(body.tags, "tag")
        )
        return _model_answer(session, model)


@router.get("/registered-models/get")
def get_registered_model(request: Request, principal: ApiPrincipal, name: str) -> JSONResponse:
    require(principal, Action.TRACKING_READ)
    with db(request).session() as session:
        return _model_answer(session, registry.get_registered_model(session, principal, name))


@router.post("/registered-models/rename")
def rename_registered_model(body: RenameModel, request: Request, principal: ApiPrincipal) -> JSONResponse:
    require(principal, Action.MODEL_REGISTER)
    with db(request).session(write=True) as session:
        model = registry.rename_registered_model(session, principal, body.name, body.new_name)
        return _model_answer(session, model)


@router.patch("/registered-models/update")
def update_registered_model(body: UpdateModel, request: Request, principal: ApiPrincipal) -> JSONResponse:
    require(principal, Action.MODEL_REGISTER)
    with db(request).session(write=True) as session:
        model = registry.update_registered_model(session, principal, body.name, description=body.description)
        return _model_answer(session, model)


@router.delete("/registered-models/delete")
def delete_registered_model(body: ModelName, request: Request, principal: ApiPrincipal) -> JSONResponse:
    require(principal, Action.MODEL_REGISTER)
    with db(request).session(write=True) as session:
        registry.delete_registered_model(session, principal, body.name)
    return ok()


@router.get("/registered-models/search")
def search_registered_models(
    request: Request,
    principal: ApiPrincipal,
    filter: str | None = None,
    max_results: int = 100,
    order_by: Annotated[list[str] | None, Query()] = None,
    page_token: str | None = None,
) -> JSONResponse:
    require(principal, Action.TRACKING_READ)
    limit = _limit(max_results, MAX_RESULTS_MODELS)
    offset = decode_page_token(page_token)
    with db(request).session() as session:
        found = registry.search_registered_models(
            session, principal, filter_string=filter, order_by=order_by, limit=limit + 1, offset=offset
        )
        rows, token = page(list(found), limit, offset)
        answer: dict[str, Any] = {"registered_models": _models_json(session, rows)}
    if token:
        answer["next_page_token"] = token
    return ok(answer)


def _latest_versions(request: Request, principal: Principal, name: str, stages: list[str]) -> JSONResponse:
    require(principal, Action.TRACKING_READ)
    with db(request).session() as session:
        versions = registry.latest_versions(session, principal, name, stages)
        return ok({"model_versions": _versions_json(session, versions)})


@router.post("/registered-models/get-latest-versions")
def get_latest_versions(body: LatestVersions, request: Request, principal: ApiPrincipal) -> JSONResponse:
    return _latest_versions(request, principal, body.name, body.stages)


@router.get("/registered-models/get-latest-versions")
def get_latest_versions_get(
    request: Request, principal: ApiPrincipal, name: str, stages: Annotated[list[str] | None, Query()] = None
) -> JSONResponse:
    return _latest_versions(request, principal, name, stages or [])


@router.post("/registered-models/set-tag")
def set_registered_model_tag(body: ModelTag, request: Request, principal: ApiPrincipal) -> JSONResponse:
    require(principal, Action.MODEL_REGISTER)
    with db(request).session(write=True) as session:
        registry.set_model_tag(session, principal, body.name, body.key, body.value)
    return ok()


@router.delete("/registered-models/delete-tag")
def delete_registered_model_tag(body: ModelTag, request: Request, principal: ApiPrincipal) -> JSONResponse:
    require(principal, Action.MODEL_REGISTER)
    with db(request).session(write=True) as session:
        registry.set_model_tag(session, principal, body.name, body.key, None)
    return ok()


# --- aliases ----------------------------------------------------------------------------------


@router.post("/registered-models/alias")
def set_alias(body: AliasIn, request: Request, principal: ApiPrincipal) -> JSONResponse:
    require(principal, Action.MODEL_ALIAS)
    with db(request).session(write=True) as session:
        registry.set_alias(session, principal, body.name, body.alias, body.version)
    return ok()


@router.delete("/registered-models/alias")
def delete_alias(body: AliasIn, request: Request, principal: ApiPrincipal) -> JSONResponse:
    require(principal, Action.MODEL_ALIAS)
    with db(request).session(write=True) as session:
        registry.delete_alias(session, principal, body.name, body.alias)
    return ok()


@router.get("/registered-models/alias")
def get_version_by_alias(request: Request, principal: ApiPrincipal, name: str, alias: str) -> JSONResponse:
    require(principal, Action.TRACKING_READ)
    with db(request).session() as session:
        # An unknown alias is 400 INVALID_PARAMETER_VALUE, as in MLflow (the service raises BadRequest).
        return _version_answer(session, registry.get_version_by_alias(session, principal, name, alias))


# --- model versions ---------------------------------------------------------------------------


@router.post("/model-versions/create")
def create_model_version(body: CreateVersion, request: Request, principal: ApiPrincipal) -> JSONResponse:
    require(principal, Action.MODEL_REGISTER)
    with db(request).session(write=True) as session:
        version = registry.create_model_version(
            session,
            principal,
            artifacts_of(request),
            body.name,
            body.source,
            run_id=body.run_id or None,
            description=body.description,
            tags=kv_dict(body.tags, "tag"),
            logged_model_id=body.model_id or None,
        )
        return _version_answer(session, version)


@router.get("/model-versions/get")
def get_model_version(request: Request, principal: ApiPrincipal, name: str, version: str) -> JSONResponse:
    require(principal, Action.TRACKING_READ)
    with db(request).session() as session:
        return _version_answer(session, registry.get_version(session, principal, name, version))


@router.patch("/model-versions/update")
def update_model_version(body: UpdateVersion, request: Request, principal: ApiPrincipal) -> JSONResponse:
    require(principal, Action.MODEL_REGISTER)
    with db(request).session(write=True) as session:
        found = registry.update_version(
            session, principal, body.name, body.version, description=body.description
        )
        return _version_answer(session, found)


@router.delete("/model-versions/delete")
def delete_model_version(body: VersionRef, request: Request, principal: ApiPrincipal) -> JSONResponse:
    require(principal, Action.MODEL_REGISTER)
    with db(request).session(write=True) as session:
        registry.delete_version(session, principal, body.name, body.version)
    return ok()


@router.get("/model-versions/search")
def search_model_versions(
    request: Request,
    principal: ApiPrincipal,
    filter: str | None = None,
    max_results: int = 10000,
    order_by: Annotated[list[str] | None, Query()] = None,
    page_token: str | None = None,
) -> JSONResponse:
    require(principal, Action.TRACKING_READ)
    limit = _limit(max_results, MAX_RESULTS_VERSIONS)
    offset = decode_page_token(page_token)
    with db(request).session() as session:
        found = registry.search_versions(
            session, principal, filter_string=filter, order_by=order_by, limit=limit + 1, offset=offset
        )
        rows, token = page(list(found), limit, offset)
        answer: dict[str, Any] = {"model_versions": _versions_json(session, rows)}
    if token:
        answer["next_page_token"] = token
    return ok(answer)


@router.get("/model-versions/get-download-uri")
def get_download_uri(request: Request, principal: ApiPrincipal, name: str, version: str) -> JSONResponse:
    require(principal, Action.TRACKING_READ)
    with db(request).session() as session:
        found = registry.get_version(session, principal, name, version)
    # The directory registered (for a logged model, its artifacts), served by the artifact proxy.
    uri = f"mlflow-artifacts:/{found.artifact_path}" if found.artifact_path else found.source
    return ok({"artifact_uri": uri})


@router.post("/model-versions/transition-stage")
def transition_stage(body: TransitionStage, request: Request, principal: ApiPrincipal) -> JSONResponse:
    # A stage, like an alias, decides what models:/name/<stage> loads downstream.
    require(principal, Action.MODEL_ALIAS)
    with db(request).session(write=True) as session:
        found = registry.transition_stage(
            session,
            principal,
            body.name,
            body.version,
            body.stage,
            archive_existing=body.archive_existing_versions,
        )
        return _version_answer(session, found)


@router.post("/model-versions/set-tag")
def set_model_version_tag(body: VersionTag, request: Request, principal: ApiPrincipal) -> JSONResponse:
    require(principal, Action.MODEL_REGISTER)
    with db(request).session(write=True) as session:
        registry.set_version_tag(session, principal, body.name, body.version, body.key, body.value)
    return ok()


@router.delete("/model-versions/delete-tag")
def delete_model_version_tag(body: VersionTag, request: Request, principal: ApiPrincipal) -> JSONResponse:
    require(principal, Action.MODEL_REGISTER)
    with db(request).session(write=True) as session:
        registry.set_version_tag(session, principal, body.name, body.version, body.key, None)
    return ok()
