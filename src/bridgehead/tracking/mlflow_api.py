"""MLflow's REST API, so that unchanged ``mlflow`` client code logs to Bridgehead (docs/mlflow.md).

A thin adapter: every route checks the permission matrix, then calls the same service functions as the
native API, so what MLflow code logs is what the console and the native API read. Errors become MLflow's
``{"error_code", "message"}`` body in one place (``bridgehead.app.error_body``). This module holds the
tracking routes (experiments, runs, metrics, logged models) and assembles the registry routes
(``mlflow_registry``) and the artifact proxy (``mlflow_artifacts``) into one ``router``.
"""

from __future__ import annotations

import sqlite3
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import Field
from sqlalchemy.orm import Session

from bridgehead.auth.deps import ApiPrincipal
from bridgehead.auth.roles import Action
from bridgehead.auth.service import Principal, require
from bridgehead.errors import BadRequest
from bridgehead.tracking import logged_models
from bridgehead.tracking import service as tracking
from bridgehead.tracking.mlflow_artifacts import router as artifacts_router
from bridgehead.tracking.mlflow_registry import router as registry_router
from bridgehead.tracking.mlflow_wire import (
    MLFLOW_VERSION,
    Body,
    Int64,
    KeyValue,
    db,
    decode_page_token,
    experiment_json,
    kv_dict,
    logged_model_json,
    metric_json,
    ok,
    page,
    page_token,
    run_info_json,
    run_json,
)
from bridgehead.tracking.models import Run

__all__ = ["router"]

API = "/api/2.0/mlflow"
# MLflow's limits (mlflow/utils/validation.py): a client relying on them gets the same refusal here.
MAX_BATCH_METRICS = 1000
MAX_BATCH_PARAMS = 100
MAX_BATCH_TAGS = 100
MAX_RESULTS_RUNS = 50000
MAX_RESULTS_EXPERIMENTS = 50000
MAX_RESULTS_HISTORY = 25000
VIEW_TYPES = ("ACTIVE_ONLY", "DELETED_ONLY", "ALL")

router = APIRouter(include_in_schema=False)
tracking_router = APIRouter(prefix=API)


# --- request shapes ---------------------------------------------------------------------------


class RunRef(Body):
    run_id: str = ""
    run_uuid: str = ""

    @property
    def rid(self) -> str:
        rid = self.run_id or self.run_uuid
        if not rid:
            raise BadRequest("Missing value for required parameter 'run_id'.")
        return rid


class CreateExperiment(Body):
    name: str
    artifact_location: str = ""
    tags: list[KeyValue] = Field(default_factory=list)


class ExperimentRef(Body):
    experiment_id: str


class UpdateExperiment(Body):
    experiment_id: str
    new_name: str


class ExperimentTagIn(Body):
    experiment_id: str
    key: str
    value: str = ""


class SearchExperiments(Body):
    max_results: int = 1000
    page_token: str | None = None
    filter: str | None = None
    order_by: list[str] = Field(default_factory=list)
    view_type: str = "ACTIVE_ONLY"


class CreateRun(Body):
    experiment_id: str = tracking.DEFAULT_EXPERIMENT_ID
    run_name: str | None = None
    start_time: Int64 | None = None
    tags: list[KeyValue] = Field(default_factory=list)


class UpdateRun(RunRef):
    status: str | None = None
    end_time: Int64 | None = None
    run_name: str | None = None


class MetricBody(Body):
    key: str
    # The client's protobuf JSON sends NaN and infinities as "NaN", "Infinity", "-Infinity": parsed here.
    value: float
    timestamp: Int64 = 0
    step: Int64 = 0
    model_id: str | None = None

    def point(self) -> tracking.MetricIn:
        """MLflow's timestamp 0 (unset) means now."""
        return tracking.MetricIn(
            self.key, self.value, self.timestamp or tracking.now_ms(), self.step, self.model_id
        )


class LogMetric(RunRef, MetricBody):
    pass


class LogParam(RunRef):
    key: str
    value: str = ""


class SetTag(RunRef):
    key: str
    value: str = ""


class DeleteTag(RunRef):
    key: str


class LogBatch(RunRef):
    metrics: list[MetricBody] = Field(default_factory=list)
    params: list[KeyValue] = Field(default_factory=list)
    tags: list[KeyValue] = Field(default_factory=list)


class DatasetBody(Body):
    name: str
    digest: str
    source_type: str = ""
    source: str = ""
    schema_: str = Field(default="", alias="schema")
    profile: str = ""


class DatasetInputBody(Body):
    tags: list[KeyValue] = Field(default_factory=list)
    dataset: DatasetBody


class ModelRef(Body):
    model_id: str
    step: Int64 = 0


class LogInputs(RunRef):
    datasets: list[DatasetInputBody] = Field(default_factory=list)
    models: list[ModelRef] = Field(default_factory=list)


class LogOutputs(RunRef):
    models: list[ModelRef] = Field(default_factory=list)


class SearchRuns(Body):
    experiment_ids: list[str] = Field(default_factory=list)
    filter: str | None = None
    run_view_type: str = "ACTIVE_ONLY"
    max_results: int = 1000
    order_by: list[str] = Field(default_factory=list)
    page_token: str | None = None


class CreateLoggedModel(Body):
    experiment_id: str
    name: str | None = None
    model_type: str = ""
    source_run_id: str | None = None
    params: list[KeyValue] = Field(default_factory=list)
    tags: list[KeyValue] = Field(default_factory=list)


class FinalizeLoggedModel(Body):
    status: str


class LoggedModelTags(Body):
    tags: list[KeyValue] = Field(default_factory=list)


class LoggedModelParams(Body):
    params: list[KeyValue] = Field(default_factory=list)


class OrderByField(Body):
    field_name: str
    ascending: bool = True


class SearchLoggedModels(Body):
    experiment_ids: list[str] = Field(default_factory=list)
    filter: str | None = None
    max_results: int = 100
    order_by: list[OrderByField] = Field(default_factory=list)
    page_token: str | None = None


def _limit(value: int, most: int) -> int:
    if value < 1 or value > most:
        raise BadRequest(f"max_results must be between 1 and {most}, got {value}.")
    return value


def _view_type(value: str) -> str:
    if value not in VIEW_TYPES:
        raise BadRequest(f"Invalid view type {value!r}; use one of {', '.join(VIEW_TYPES)}.")
    return value


# --- experiments ------------------------------------------------------------------------------


@tracking_router.post("/experiments/create")
def create_experiment(body: CreateExperiment, request: Request, principal: ApiPrincipal) -> JSONResponse:
    require(principal, Action.TRACKING_WRITE)
    if body.artifact_location:
        # Artifacts of every experiment go through Bridgehead's store, where access is checked.
        raise BadRequest("Bridgehead chooses artifact locations; create the experiment without one.")
    with db(request).session(write=True) as session:
        exp = tracking.create_experiment(
            session, principal, body.name, tags=kv_dict(body.tags, "experiment tag")
        )
        return ok({"experiment_id": exp.id})


@tracking_router.get("/experiments/get")
def get_experiment(request: Request, principal: ApiPrincipal, experiment_id: str) -> JSONResponse:
    require(principal, Action.TRACKING_READ)
    with db(request).session() as session:
        exp = tracking.get_experiment(session, principal, experiment_id)
        return ok({"experiment": experiment_json(exp, tracking.experiment_tags(session, exp.id))})


@tracking_router.get("/experiments/get-by-name")
def get_experiment_by_name(request: Request, principal: ApiPrincipal, experiment_name: str) -> JSONResponse:
    require(principal, Action.TRACKING_READ)
    with db(request).session() as session:
        exp = tracking.get_experiment_by_name(session, principal, experiment_name)
        return ok({"experiment": experiment_json(exp, tracking.experiment_tags(session, exp.id))})


def _search_experiments(request: Request, principal: Principal, body: SearchExperiments) -> JSONResponse:
    require(principal, Action.TRACKING_READ)
    limit = _limit(body.max_results, MAX_RESULTS_EXPERIMENTS)
    offset = decode_page_token(body.page_token)
    with db(request).session() as session:
        found = tracking.search_experiments(
            session,
            principal,
            view_type=_view_type(body.view_type),
            limit=limit + 1,
            offset=offset,
            filter_string=body.filter,
            order_by=body.order_by,
        )
        rows, token = page(list(found), limit, offset)
        tags = tracking.experiment_tags_for(session, [e.id for e in rows])
        answer: dict[str, Any] = {"experiments": [experiment_json(e, tags[e.id]) for e in rows]}
    if token:
        answer["next_page_token"] = token
    return ok(answer)


@tracking_router.post("/experiments/search")
def search_experiments(body: SearchExperiments, request: Request, principal: ApiPrincipal) -> JSONResponse:
    return _search_experiments(request, principal, body)


@tracking_router.get("/experiments/search")
def search_experiments_get(
    request: Request,
    principal: ApiPrincipal,
    max_results: int = 1000,
    page_token: str | None = None,
    filter: str | None = None,
    order_by: Annotated[list[str] | None, Query()] = None,
    view_type: str = "ACTIVE_ONLY",
) -> JSONResponse:
    body = SearchExperiments(
        max_results=max_results,
        page_token=page_token,
        filter=filter,
        order_by=order_by or [],
        view_type=view_type,
    )
    return _search_experiments(request, principal, body)


def _lifecycle(request: Request, principal: Principal, experiment_id: str, stage: str) -> JSONResponse:
    require(principal, Action.TRACKING_WRITE)
    with db(request).session(write=True) as session:
        tracking.set_experiment_lifecycle(session, principal, experiment_id, stage)
    return ok()


@tracking_router.post("/experiments/delete")
def delete_experiment(body: ExperimentRef, request: Request, principal: ApiPrincipal) -> JSONResponse:
    return _lifecycle(request, principal, body.experiment_id, "deleted")


@tracking_router.post("/experiments/restore")
def restore_experiment(body: ExperimentRef, request: Request, principal: ApiPrincipal) -> JSONResponse:
    return _lifecycle(request, principal, body.experiment_id, "active")


@tracking_router.post("/experiments/update")
def update_experiment(body: UpdateExperiment, request: Request, principal: ApiPrincipal) -> JSONResponse:
    require(principal, Action.TRACKING_WRITE)
    with db(request).session(write=True) as session:
        tracking.rename_experiment(session, principal, body.experiment_id, body.new_name)
    return ok()


@tracking_router.post("/experiments/set-experiment-tag")
def set_experiment_tag(body: ExperimentTagIn, request: Request, principal: ApiPrincipal) -> JSONResponse:
    require(principal, Action.TRACKING_WRITE)
    with db(request).session(write=True) as session:
        tracking.set_experiment_tag(session, principal, body.experiment_id, body.key, body.value)
    return ok()


@tracking_router.post("/experiments/delete-experiment-tag")
def delete_experiment_tag(body: ExperimentTagIn, request: Request, principal: ApiPrincipal) -> JSONResponse:
    require(principal, Action.TRACKING_WRITE)
    with db(request).session(write=True) as session:
        tracking.delete_experiment_tag(session, principal, body.experiment_id, body.key)
    return ok()


# --- runs -------------------------------------------------------------------------------------


def _runs_json(session: Any, runs: list[Run]) -> list[dict[str, Any]]:
    """Several runs with their data and outputs: five queries however many runs."""
    ids = [r.id for r in runs]
    data = tracking.run_data(session, ids)
    outputs = logged_models.run_outputs(session, ids)
    return [run_json(r, data[r.id], outputs[r.id]) for r in runs]


@tracking_router.post("/runs/create")
def create_run(body: CreateRun, request: Request, principal: ApiPrincipal) -> JSONResponse:
    require(principal, Action.TRACKING_WRITE)
    with db(request).session(write=True) as session:
        # The run's user is the authenticated person; the client's user_id is not trusted.
        run = tracking.create_run(
            session,
            principal,
            body.experiment_id,
            name=body.run_name,
            start_ms=body.start_time,
            tags=kv_dict(body.tags, "tag"),
        )
        return ok({"run": _runs_json(session, [run])[0]})


@tracking_router.get("/runs/get")
def get_run(request: Request, principal: ApiPrincipal, run_id: str = "", run_uuid: str = "") -> JSONResponse:
    require(principal, Action.TRACKING_READ)
    rid = RunRef(run_id=run_id, run_uuid=run_uuid).rid
    with db(request).session() as session:
        run = tracking.get_run(session, principal, rid)
        return ok({"run": _runs_json(session, [run])[0]})


@tracking_router.post("/runs/update")
def update_run(body: UpdateRun, request: Request, principal: ApiPrincipal) -> JSONResponse:
    require(principal, Action.TRACKING_WRITE)
    with db(request).session(write=True) as session:
        run = tracking.update_run(
            session, principal, body.rid, status=body.status, end_ms=body.end_time, name=body.run_name
        )
        return ok({"run_info": run_info_json(run)})


@tracking_router.post("/runs/delete")
def delete_run(body: RunRef, request: Request, principal: ApiPrincipal) -> JSONResponse:
    require(principal, Action.TRACKING_WRITE)
    with db(request).session(write=True) as session:
        tracking.set_run_lifecycle(session, principal, body.rid, "deleted")
    return ok()


@tracking_router.post("/runs/restore")
def restore_run(body: RunRef, request: Request, principal: ApiPrincipal) -> JSONResponse:
    require(principal, Action.TRACKING_WRITE)
    with db(request).session(write=True) as session:
        tracking.set_run_lifecycle(session, principal, body.rid, "active")
    return ok()


def write_log(
    session: Session,
    principal: Principal,
    run_id: str,
    *,
    metrics: list[tracking.MetricPoint] | None = None,
    params: list[tuple[str, str]] | None = None,
    tags: list[tuple[str, str]] | None = None,
) -> None:
    """What ``runs/log-metric``, ``log-parameter``, ``set-tag`` and ``log-batch`` do, in the caller's write
    session; shared by these routes and their fast lane (``mlflow_lane``). Params and tags are (key, value)
    pairs."""
    metrics, params, tags = metrics or [], params or [], tags or []
    _check_log(principal, metrics, params, tags)
    tracking.log_batch(
        session,
        principal,
        run_id,
        metrics=metrics,
        params=kv_dict(params, "param"),
        tags=kv_dict(tags, "tag"),
    )


def write_points(
    driver: sqlite3.Connection, principal: Principal, run_id: str, metrics: list[tracking.MetricPoint]
) -> None:
    """``write_log`` for metric points alone, in a transaction of SQLite's own connection
    (``Database.driver_write``): the fast lane's way on SQLite."""
    _check_log(principal, metrics, [], [])
    tracking.log_points_on_driver(driver, principal, run_id, metrics)


def _check_log(
    principal: Principal,
    metrics: list[tracking.MetricPoint],
    params: list[tuple[str, str]],
    tags: list[tuple[str, str]],
) -> None:
    require(principal, Action.TRACKING_WRITE)
    if len(metrics) > MAX_BATCH_METRICS or len(params) > MAX_BATCH_PARAMS or len(tags) > MAX_BATCH_TAGS:
        raise BadRequest(
            f"A batch may hold at most {MAX_BATCH_METRICS} metrics, {MAX_BATCH_PARAMS} params and "
            f"{MAX_BATCH_TAGS} tags; got {len(metrics)}, {len(params)} and {len(tags)}."
        )


def _log(request: Request, principal: Principal, run_id: str, **batch: Any) -> JSONResponse:
    with db(request).session(write=True) as session:
        write_log(session, principal, run_id, **batch)
    return ok()


# A call that succeeds is answered by ``mlflow_lane.LoggingLane`` before it reaches
# these routes; they answer everything else (errors, a held write lock) and define what the lane follows.


@tracking_router.post("/runs/log-metric")
def log_metric(body: LogMetric, request: Request, principal: ApiPrincipal) -> JSONResponse:
    return _log(request, principal, body.rid, metrics=[body.point()])


@tracking_router.post("/runs/log-parameter")
def log_param(body: LogParam, request: Request, principal: ApiPrincipal) -> JSONResponse:
    return _log(request, principal, body.rid, params=[(body.key, body.value)])


@tracking_router.post("/runs/set-tag")
def set_tag(body: SetTag, request: Request, principal: ApiPrincipal) -> JSONResponse:
    return _log(request, principal, body.rid, tags=[(body.key, body.value)])


@tracking_router.post("/runs/log-batch")
def log_batch(body: LogBatch, request: Request, principal: ApiPrincipal) -> JSONResponse:
    return _log(
        request,
        principal,
        body.rid,
        metrics=[m.point() for m in body.metrics],
        params=[(p.key, p.value) for p in body.params],
        tags=[(t.key, t.value) for t in body.tags],
    )


@tracking_router.post("/runs/delete-tag")
def delete_tag(body: DeleteTag, request: Request, principal: ApiPrincipal) -> JSONResponse:
    require(principal, Action.TRACKING_WRITE)
    with db(request).session(write=True) as session:
        tracking.delete_tag(session, principal, body.rid, body.key)
    return ok()


@tracking_router.post("/runs/log-inputs")
def log_inputs(body: LogInputs, request: Request, principal: ApiPrincipal) -> JSONResponse:
    require(principal, Action.TRACKING_WRITE)
    datasets = [
        {
            "name": d.dataset.name,
            "digest": d.dataset.digest,
            "source_type": d.dataset.source_type,
            "source": d.dataset.source,
            "schema": d.dataset.schema_,
            "profile": d.dataset.profile,
            "context": kv_dict(d.tags, "dataset tag").get("mlflow.data.context", ""),
        }
        for d in body.datasets
    ]
    with db(request).session(write=True) as session:
        tracking.log_inputs(session, principal, body.rid, datasets)
        for model in body.models:
            logged_models.get_logged_model(session, principal, model.model_id)
    return ok()


@tracking_router.post("/runs/outputs")
def log_outputs(body: LogOutputs, request: Request, principal: ApiPrincipal) -> JSONResponse:
    require(principal, Action.TRACKING_WRITE)
    with db(request).session(write=True) as session:
        logged_models.log_outputs(session, principal, body.rid, [m.model_id for m in body.models])
    return ok()


@tracking_router.post("/runs/search")
def search_runs(body: SearchRuns, request: Request, principal: ApiPrincipal) -> JSONResponse:
    require(principal, Action.TRACKING_READ)
    limit = _limit(body.max_results, MAX_RESULTS_RUNS)
    offset = decode_page_token(body.page_token)
    with db(request).session() as session:
        found = tracking.search_runs(
            session,
            principal,
            body.experiment_ids,
            filter_string=body.filter,
            order_by=body.order_by,
            view_type=_view_type(body.run_view_type),
            limit=min(limit + 1, MAX_RESULTS_RUNS),
            offset=offset,
        )
        rows, token = page(list(found), limit, offset)
        if token is None and len(rows) == MAX_RESULTS_RUNS:
            # The service returns at most MAX_RESULTS_RUNS, so a full page may or may not have a next one.
            token = page_token(offset + limit)
        answer: dict[str, Any] = {"runs": _runs_json(session, rows)}
    if token:
        answer["next_page_token"] = token
    return ok(answer)


@tracking_router.get("/metrics/get-history")
def get_metric_history(
    request: Request,
    principal: ApiPrincipal,
    metric_key: str,
    run_id: str = "",
    run_uuid: str = "",
    max_results: int = MAX_RESULTS_HISTORY,
    page_token: str | None = None,
) -> JSONResponse:
    require(principal, Action.TRACKING_READ)
    rid = RunRef(run_id=run_id, run_uuid=run_uuid).rid
    limit = _limit(max_results, MAX_RESULTS_HISTORY)
    offset = decode_page_token(page_token)
    with db(request).session() as session:
        history = tracking.metric_history(session, principal, rid, metric_key, limit=limit + 1, offset=offset)
        rows, token = page(list(history), limit, offset)
        answer: dict[str, Any] = {"metrics": [metric_json(m, run_id=rid) for m in rows]}
    if token:
        answer["next_page_token"] = token
    return ok(answer)


# --- logged models (MLflow 3) -----------------------------------------------------------------


def _logged_model_answer(session: Any, model: Any) -> JSONResponse:
    metrics = logged_models.logged_model_metrics(session, [model.id])[model.id]
    return ok({"model": logged_model_json(model, metrics)})


@tracking_router.post("/logged-models")
def create_logged_model(body: CreateLoggedModel, request: Request, principal: ApiPrincipal) -> JSONResponse:
    require(principal, Action.TRACKING_WRITE)
    with db(request).session(write=True) as session:
        model = logged_models.create_logged_model(
            session,
            principal,
            body.experiment_id,
            name=body.name,
            model_type=body.model_type,
            source_run_id=body.source_run_id,
            params=kv_dict(body.params, "param"),
            tags=kv_dict(body.tags, "tag"),
        )
        return _logged_model_answer(session, model)


@tracking_router.post("/logged-models/search")
def search_logged_models(body: SearchLoggedModels, request: Request, principal: ApiPrincipal) -> JSONResponse:
    require(principal, Action.TRACKING_READ)
    limit = _limit(body.max_results, MAX_RESULTS_EXPERIMENTS)
    offset = decode_page_token(body.page_token)
    with db(request).session() as session:
        found = logged_models.search_logged_models(
            session,
            principal,
            body.experiment_ids,
            filter_string=body.filter,
            order_by=[(o.field_name, o.ascending) for o in body.order_by],
            limit=limit + 1,
            offset=offset,
        )
        rows, token = page(list(found), limit, offset)
        metrics = logged_models.logged_model_metrics(session, [m.id for m in rows])
        answer: dict[str, Any] = {"models": [logged_model_json(m, metrics[m.id]) for m in rows]}
    if token:
        answer["next_page_token"] = token
    return ok(answer)


@tracking_router.get("/logged-models/{model_id}")
def get_logged_model(model_id: str, request: Request, principal: ApiPrincipal) -> JSONResponse:
    require(principal, Action.TRACKING_READ)
    with db(request).session() as session:
        return _logged_model_answer(session, logged_models.get_logged_model(session, principal, model_id))


@tracking_router.patch("/logged-models/{model_id}")
def finalize_logged_model(
    model_id: str, body: FinalizeLoggedModel, request: Request, principal: ApiPrincipal
) -> JSONResponse:
    require(principal, Action.TRACKING_WRITE)
    with db(request).session(write=True) as session:
        model = logged_models.finalize_logged_model(session, principal, model_id, body.status)
        return _logged_model_answer(session, model)


@tracking_router.patch("/logged-models/{model_id}/tags")
def set_logged_model_tags(
    model_id: str, body: LoggedModelTags, request: Request, principal: ApiPrincipal
) -> JSONResponse:
    require(principal, Action.TRACKING_WRITE)
    with db(request).session(write=True) as session:
        logged_models.set_logged_model_tags(session, principal, model_id, kv_dict(body.tags, "tag"))
    return ok()


@tracking_router.delete("/logged-models/{model_id}/tags/{tag_key:path}")
def delete_logged_model_tag(
    model_id: str, tag_key: str, request: Request, principal: ApiPrincipal
) -> JSONResponse:
    require(principal, Action.TRACKING_WRITE)
    with db(request).session(write=True) as session:
        logged_models.delete_logged_model_tag(session, principal, model_id, tag_key)
    return ok()


@tracking_router.post("/logged-models/{model_id}/params")
def log_logged_model_params(
    model_id: str, body: LoggedModelParams, request: Request, principal: ApiPrincipal
) -> JSONResponse:
    require(principal, Action.TRACKING_WRITE)
    with db(request).session(write=True) as session:
        logged_models.log_logged_model_params(session, principal, model_id, kv_dict(body.params, "param"))
    return ok()


# --- plain routes -----------------------------------------------------------------------------


@router.get("/health", response_class=PlainTextResponse)
def health() -> str:
    """Liveness in MLflow's form (open, as in MLflow's own server with authentication on)."""
    return "OK"


@router.get("/version", response_class=PlainTextResponse)
def version(principal: ApiPrincipal) -> str:
    """The MLflow version whose REST API this server speaks."""
    return MLFLOW_VERSION


router.include_router(tracking_router)
router.include_router(registry_router)
router.include_router(artifacts_router)
