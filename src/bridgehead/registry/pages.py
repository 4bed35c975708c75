"""Console: Models — registered models, their versions and aliases, a version's lineage (datasets → run →
version → deployments), signature and files. Visibility comes from the registry service (404 otherwise)."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from bridgehead.auth.deps import PagePrincipal, db_of
from bridgehead.auth.roles import Action
from bridgehead.auth.service import require
from bridgehead.errors import NotFound
from bridgehead.org import service as org
from bridgehead.registry import service
from bridgehead.store.artifacts import ArtifactStore, safe_relative_path
from bridgehead.tracking import service as tracking
from bridgehead.web import Console, file_response

router = APIRouter(include_in_schema=False)

MAX_FILES = 500
SNAPSHOT_METRICS = 3


def _console(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def _store(request: Request) -> ArtifactStore:
    store: ArtifactStore = request.app.state.artifacts
    return store


def _units(session: Any) -> dict[str, str]:
    return {u.id: u.name for u in org.list_units(session)}


def signature_columns(part: Any) -> list[dict[str, str]]:
    """One side of a signature (inputs, outputs, params) as rows of name / type / note.

    MLflow's MLmodel keeps each side as a JSON string of column specs ({"name", "type"}) or tensor specs
    ({"type": "tensor", "tensor-spec": {"dtype", "shape"}}); Bridgehead's manifest may hold the list itself."""
    if isinstance(part, str):
        try:
            part = json.loads(part)
        except ValueError:
            return [{"name": "", "type": part, "note": ""}]
    if isinstance(part, dict):
        # One tensor spec (the SDK's form for arrays), or a mapping of column name to type.
        tensor = part.get("type") == "tensor" or "dtype" in part or "tensor-spec" in part
        part = [part] if tensor else [{"name": k, "type": v} for k, v in part.items()]
    if not isinstance(part, list):
        return []
    rows = []
    for col in part:
        if not isinstance(col, dict):
            rows.append({"name": "", "type": str(col), "note": ""})
            continue
        kind = str(col.get("type", ""))
        note = ""
        spec: dict[str, Any] = col["tensor-spec"] if isinstance(col.get("tensor-spec"), dict) else col
        if kind == "tensor" or "dtype" in col:
            kind = f"tensor {spec.get('dtype', '')}".strip()
            if spec.get("shape") is not None:
                note = f"shape {tuple(spec.get('shape') or ())}"
        elif "default" in col:
            note = f"default {col['default']}"
        if col.get("required") is False:
            note = ", ".join(n for n in (note, "optional") if n)
        rows.append({"name": str(col.get("name", "")), "type": kind, "note": note})
    return rows


@router.get("/models")
def models_page(
    request: Request,
    principal: PagePrincipal,
    q: Annotated[str, Query(max_length=200)] = "",
) -> Response:
    require(principal, Action.TRACKING_READ)
    with db_of(request).session() as session:
        models = service.search_registered_models(session, principal, limit=5000)
        overview = service.model_overview(session, [m.id for m in models])
        units = _units(session)
    total = len(models)
    shown = sorted(
        (m for m in models if not q or q.lower() in m.name.lower()), key=lambda m: m.updated_ms, reverse=True
    )
    return _console(request).render(
        request,
        "models.html",
        active="models",
        models=shown,
        total=total,
        total_versions=sum(o.versions for o in overview.values()),
        with_alias=sum(1 for o in overview.values() if o.aliases),
        overview=overview,
        units=units,
        q=q,
        server=str(request.base_url).rstrip("/"),
    )


@router.get("/models/{name}")
def model_page(request: Request, principal: PagePrincipal, name: str) -> Response:
    require(principal, Action.TRACKING_READ)
    with db_of(request).session() as session:
        model = service.get_registered_model(session, principal, name)
        versions = service.versions_of(session, model)
        aliases = service.aliases_of(session, model)
        runs = tracking.run_names(session, principal, [v.run_id for v in versions if v.run_id])
        units = _units(session)
    by_version: dict[int, list[str]] = {}
    for alias, number in sorted(aliases.items()):
        by_version.setdefault(number, []).append(alias)
    return _console(request).render(
        request,
        "model.html",
        active="models",
        model=model,
        versions=versions,
        aliases=dict(sorted(aliases.items())),
        by_version=by_version,
        runs=runs,
        unit_name=units.get(model.business_unit_id, model.business_unit_id),
        snapshot=SNAPSHOT_METRICS,
    )


@router.get("/models/{name}/versions/{version}")
def version_page(
    request: Request, principal: PagePrincipal, name: str, version: str, verify: bool = False
) -> Response:
    require(principal, Action.TRACKING_READ)
    store = _store(request)
    with db_of(request).session() as session:
        model = service.get_registered_model(session, principal, name)
        found = service.get_version(session, principal, name, version)
        aliases = [a for a, v in sorted(service.aliases_of(session, model).items()) if v == found.version]
        run = experiment = None
        if found.run_id:
            try:
                run = tracking.get_run(session, principal, found.run_id)
                experiment = tracking.get_experiment(session, principal, run.experiment_id)
            except NotFound:
                run = None  # the run's experiment is private to another business unit
        units = _units(session)
        from bridgehead.serving.service import serving_version  # serving builds on the registry

        deployments = serving_version(session, principal, found.id)
    files = store.walk(found.artifact_path) if found.artifact_path else []
    verified = None
    if verify and found.artifact_path and found.sha256:
        verified = store.sha256_dir(found.artifact_path) == found.sha256
    signature = found.signature or {}
    return _console(request).render(
        request,
        "model_version.html",
        active="models",
        model=model,
        mv=found,
        aliases=aliases,
        run=run,
        experiment=experiment,
        unit_name=units.get(model.business_unit_id, model.business_unit_id),
        inputs=signature_columns(signature.get("inputs")),
        outputs=signature_columns(signature.get("outputs")),
        params=signature_columns(signature.get("params")),
        files=files[:MAX_FILES],
        more_files=max(0, len(files) - MAX_FILES),
        total_bytes=sum(size for _, size in files),
        verified=verified,
        metrics=sorted(found.metrics.items()),
        deployments=deployments,
    )


@router.get("/models/{name}/versions/{version}/files/{path:path}")
def download_file(request: Request, principal: PagePrincipal, name: str, version: str, path: str) -> Response:
    """One file of a model version. Visibility is checked through the registry; the path may not leave the
    version's directory (the artifact store refuses '..', absolute paths, encodings and escaping links)."""
    require(principal, Action.TRACKING_READ)
    relative = safe_relative_path(path)
    with db_of(request).session() as session:
        found = service.get_version(session, principal, name, version)
    if not found.artifact_path:
        raise NotFound("This version's files are not in Bridgehead's artifact store.")
    return file_response(_store(request), f"{found.artifact_path}/{relative}")
