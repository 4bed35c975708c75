"""Online inference: /serve/{endpoint}/predict (native), /serve/{endpoint}/invocations (MLflow's scoring
protocol), /v2/... (Open Inference Protocol v2: KServe, Triton, MLServer clients) and feedback.

One path does the work for all three: authenticate, find the endpoint the caller may invoke, parse the body,
route each row by the traffic policy (sticky by key), validate against the serving version's signature, score,
answer, and record every row in the prediction log off the request path. Shadow versions score a copy after
the answer is sent; their results are logged with role "shadow" and never returned.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections.abc import Generator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from fastapi import APIRouter, BackgroundTasks, Depends, Path, Query, Request
from fastapi.responses import PlainTextResponse
from starlette.concurrency import run_in_threadpool

from bridgehead.auth.deps import BEARER, ApiPrincipal, db_of, principal_for
from bridgehead.auth.service import Principal, TokenCache
from bridgehead.errors import BridgeheadError, NotFound, ValidationFailed, error_responses
from bridgehead.logs import current_request_id
from bridgehead.serving import protocols, service
from bridgehead.serving.batching import MicroBatcher
from bridgehead.serving.metrics import InferenceMetrics
from bridgehead.serving.predlog import FloatInputs, PredictionBatch, PredictionLog, row_ids
from bridgehead.serving.routing import assign_many
from bridgehead.serving.runtime import LoadedModel, ModelRuntime, Prediction
from bridgehead.serving.schemas import FeedbackIn, FeedbackOut, PredictOut

log = logging.getLogger("bridgehead.serving")
router = APIRouter(tags=["inference"])
ERRORS = error_responses(400, 401, 403, 404, 409, 413, 422)
EndpointName = Annotated[str, Path(min_length=1, max_length=100)]

JSON_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "application/vnd.apache.arrow.stream": {"schema": {"type": "string", "format": "binary"}},
            "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


@dataclass
class Scored:
    request_id: str
    ids: list[str]
    predictions: list[Any]
    probabilities: list[list[float]] | None
    classes: list[Any] | None
    model: str
    versions: list[int]


def _only(request: Request, name: str) -> None:
    """A standalone inference process (``bridgehead serve ENDPOINT``) answers for its endpoint only."""
    serving = request.app.state.settings.serve_endpoint
    if serving and name != serving:
        raise NotFound(f"Endpoint {name!r} is not served here (this process serves {serving!r}).")


def _runtime(request: Request) -> ModelRuntime:
    runtime: ModelRuntime = request.app.state.runtime
    return runtime


def _predlog(request: Request) -> PredictionLog:
    predlog: PredictionLog = request.app.state.predlog
    return predlog


def _json_value(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value


def _callers(request: Request) -> TokenCache:
    cache: TokenCache = request.app.state.token_cache
    return cache


Ready = tuple[Principal, service.EndpointView, list[LoadedModel], list[LoadedModel]]


def ready(request: Request, name: str) -> Ready | None:
    """Caller, endpoint and models when all are already in this process's caches (no database read, no
    model load is needed: the request can be scored without waiting on anything); else None."""
    principal = _callers(request).get(request.headers.get("authorization"))
    target = _endpoints(request).peek(name)
    if principal is None or target is None:
        return None
    runtime = _runtime(request)
    routes = [runtime.cached(r.version_id) for r in target.policy.routes]
    shadows = [runtime.cached(s.version_id) for s in target.policy.shadows]
    if any(m is None for m in routes) or any(m is None for m in shadows):
        return None
    # The permission check still runs on every request (on the cached entries).
    target = _endpoints(request).for_invoke(None, principal, name)
    return principal, target, [m for m in routes if m is not None], [m for m in shadows if m is not None]


def _endpoints(request: Request) -> service.EndpointCache:
    cache: service.EndpointCache = request.app.state.endpoint_cache
    return cache


def _refresh_ahead(
    request: Request, name: str, authorization: str | None, token: bool, endpoint: bool
) -> None:
    """Read the caller's token and/or the endpoint again, after the answer went out, and renew their cache
    entries before they expire (see `TokenCache`): a token revoked or expired elsewhere is dropped, so the
    caller's next request is refused; a failure leaves the entries to expire as they would have."""
    try:
        with db_of(request).session() as session:
            if token:
                stamp = _callers(request).stamp()
                try:
                    _callers(request).put(authorization, principal_for(request, session), stamp)
                except BridgeheadError:
                    _callers(request).forget(authorization)
            if endpoint:
                _endpoints(request).load(session, name)
    except Exception:
        log.warning("inference: could not refresh the cached caller or endpoint %r", name, exc_info=True)


# The steps of scoring one request: it yields (model, frame) for each model call and is sent the prediction, so
# the same code runs with a direct call (`score_request`) or awaiting a micro-batch (`score_batched`).
ScoreSteps = Generator[tuple[LoadedModel, pd.DataFrame], Prediction, "Scored"]


def score_request(
    request: Request,
    name: str,
    protocol: Literal["native", "mlflow", "v2"],
    body: bytes,
    background: BackgroundTasks,
    key_column: str | None,
) -> Scored:
    """Everything after reading the body, in one call (a worker thread, or the event loop when nothing needs
    loading): authenticate, find the endpoint (cached for a moment), parse, route, validate, score, log."""
    runtime = _runtime(request)
    steps = _score_steps(request, name, protocol, body, background, key_column)
    try:
        loaded, frame = next(steps)
        while True:
            loaded, frame = steps.send(runtime.predict(loaded, frame))
    except StopIteration as done:
        scored: Scored = done.value
        return scored


async def score_batched(
    request: Request,
    name: str,
    protocol: Literal["native", "mlflow", "v2"],
    body: bytes,
    background: BackgroundTasks,
    key_column: str | None,
) -> Scored:
    """`score_request` on the event loop, with each model call joining the micro-batch of its version
    (`serving.batching`). Only for requests whose caller, endpoint and models are cached (`ready`)."""
    batcher: MicroBatcher = request.app.state.micro_batcher
    steps = _score_steps(request, name, protocol, body, background, key_column)
    try:
        loaded, frame = next(steps)
        while True:
            loaded, frame = steps.send(await batcher.predict(loaded, frame))
    except StopIteration as done:
        scored: Scored = done.value
        return scored


def _score_steps(
    request: Request,
    name: str,
    protocol: Literal["native", "mlflow", "v2"],
    body: bytes,
    background: BackgroundTasks,
    key_column: str | None,
) -> ScoreSteps:
    started = time.perf_counter()
    received_ms = int(time.time() * 1000)
    runtime = _runtime(request)
    authorization = request.headers.get("authorization")
    cached = ready(request, name)
    if cached is not None:
        principal, target, loaded_routes, shadows = cached
        request.state.principal = principal
        token_due = _callers(request).claim_refresh(authorization)
        endpoint_due = _endpoints(request).claim_refresh(name)
        if token_due or endpoint_due:
            background.add_task(_refresh_ahead, request, name, authorization, token_due, endpoint_due)
    else:
        with db_of(request).session() as session:
            stamp = _callers(request).stamp()
            principal = principal_for(request, session)
            _callers(request).put(authorization, principal, stamp)
            target = _endpoints(request).for_invoke(session, principal, name)
            # Every version the policy names, loaded once per process (a cache hit after the first request).
            loaded_routes = [runtime.get(session, principal, r.version_id) for r in target.policy.routes]
            shadows = [runtime.get(session, principal, s.version_id) for s in target.policy.shadows]
    policy = target.policy
    first = loaded_routes[0].signature
    parsed = protocols.parse_body(
        request.headers.get("content-type", ""),
        body,
        protocol,
        first.columns if first is not None and protocol != "native" else None,
        signature=first,
        max_rows=request.app.state.settings.max_predict_rows,
    )
    if key_column is not None:
        parsed = _keys_from_column(parsed, key_column)
    request_id = parsed.request_id or current_request_id() or uuid.uuid4().hex
    frame = parsed.frame
    n = len(frame)
    keys = parsed.keys if policy.sticky else None
    chosen = assign_many(policy, keys if keys is not None else [None] * n, salt=target.salt)
    predictions: list[Any] = [None] * n
    probabilities: list[list[float]] | None = None
    classes: list[Any] | None = None
    versions = [0] * n
    used = sorted(set(chosen))
    # What the log keeps: the model's arrays when one version answered every row.
    logged_probabilities: Any = None
    logged_predictions: Any = predictions
    for route_index in used:
        loaded = loaded_routes[route_index]
        if len(used) == 1:
            positions, part = list(range(n)), frame
        else:
            rows = np.flatnonzero(np.asarray(chosen) == route_index)
            positions, part = rows.tolist(), frame.iloc[rows].reset_index(drop=True)
        if loaded.signature is not None:
            part = protocols.validate_frame(part, loaded.signature)
        result = yield loaded, part
        for j, at in enumerate(positions):
            predictions[at] = result.predictions[j]
            versions[at] = loaded.version
        if len(used) == 1 and result.labels is not None:
            logged_predictions = result.labels
        if result.probabilities is not None:
            if len(used) == 1:
                probabilities = result.probabilities
                logged_probabilities = result.matrix if result.matrix is not None else probabilities
            else:
                if probabilities is None:
                    probabilities = [[] for _ in range(n)]
                for j, at in enumerate(positions):
                    probabilities[at] = result.probabilities[j]
                logged_probabilities = probabilities
            classes = result.classes
    latency_ms = (time.perf_counter() - started) * 1000
    ids = row_ids(request_id, n)
    if not request.app.state.settings.prediction_log_disabled:
        # One version answered every row (the common case): the log keeps the request id, model and version
        # once, not a hundred strings a request until the flush.
        _predlog(request).record(
            [
                PredictionBatch(
                    ids=request_id,
                    endpoint=target.name,
                    model_names=[loaded_routes[c].model_name for c in chosen]
                    if len(used) > 1
                    else loaded_routes[used[0]].model_name,
                    versions=versions if len(used) > 1 else versions[0],
                    role="primary",
                    ts_ms=received_ms,
                    latency_ms=latency_ms,
                    # The parser's array when it has one (an all-float request), else the frame.
                    inputs=FloatInputs(frame.columns, parsed.values) if parsed.values is not None else frame,
                    predictions=logged_predictions,
                    probabilities=logged_probabilities,
                    keys=[str(k) if k is not None else "" for k in keys] if keys is not None else None,
                )
            ]
        )
        if shadows:
            background.add_task(
                _run_shadows, _predlog(request), runtime, shadows, frame, request_id, target.name, received_ms
            )
    distinct = sorted(set(versions))
    _metrics(request).observe(
        target.name, str(distinct[0]) if len(distinct) == 1 else "mixed", time.perf_counter() - started, n
    )
    model_names = {loaded_routes[i].model_name for i in used}
    return Scored(
        request_id=request_id,
        ids=ids,
        predictions=[_json_value(p) for p in predictions],
        probabilities=probabilities,
        classes=classes,
        model=model_names.pop() if len(model_names) == 1 else ",".join(sorted(model_names)),
        versions=versions,
    )


def answer(protocol: Literal["native", "mlflow", "v2"], name: str, scored: Scored) -> dict[str, Any]:
    """The response body of each protocol."""
    single = scored.versions[0] if len(set(scored.versions)) == 1 else None
    if protocol == "mlflow":
        return protocols.mlflow_response(scored.predictions)
    if protocol == "v2":
        return protocols.v2_response(
            model_name=name,
            model_version=None if single is None else str(single),
            request_id=scored.request_id,
            predictions=scored.predictions,
            probabilities=scored.probabilities,
        )
    return {
        "request_id": scored.request_id,
        "ids": scored.ids,
        "predictions": scored.predictions,
        "probabilities": scored.probabilities,
        "classes": scored.classes,
        "model": scored.model,
        "version": single,
        "versions": scored.versions,
    }


def _metrics(request: Request) -> InferenceMetrics:
    metrics: InferenceMetrics = request.app.state.inference_metrics
    return metrics


async def _scored(
    request: Request,
    name: str,
    protocol: Literal["native", "mlflow", "v2"],
    background: BackgroundTasks,
    key_column: str | None = None,
) -> Scored:
    """Read the body, then score in one worker thread; failures are counted per endpoint and error code
    before they are answered."""
    try:
        _only(request, name)
        body = await request.body()
        return await run_in_threadpool(score_request, request, name, protocol, body, background, key_column)
    except BridgeheadError as exc:
        _metrics(request).failed(name, exc.status, exc.code)
        raise


def _keys_from_column(parsed: protocols.ParsedRequest, column: str) -> protocols.ParsedRequest:
    if column not in parsed.frame.columns:
        raise ValidationFailed(
            f"The key column {column!r} is not in the body.", details={"column": column, "problem": "missing"}
        )
    keys = [None if v is None or v != v else str(v) for v in parsed.frame[column].tolist()]
    return dataclasses.replace(parsed, frame=parsed.frame.drop(columns=[column]), keys=keys, values=None)


def _run_shadows(
    predlog: PredictionLog,
    runtime: ModelRuntime,
    shadows: list[LoadedModel],
    frame: pd.DataFrame,
    request_id: str,
    endpoint: str,
    received_ms: int,
) -> None:
    """Score the copy with each shadow and log it; a failing shadow is logged as errors, never raised."""
    for loaded in shadows:
        started = time.perf_counter()
        predictions: Any = None  # the model's array, or a list
        probabilities: Any = None  # an array (rows x classes) or a list per row
        error = None
        try:
            part = (
                protocols.validate_frame(frame, loaded.signature) if loaded.signature is not None else frame
            )
            result = runtime.predict(loaded, part)
            # As for the primary: the model's arrays, converted at flush in one step.
            predictions = (
                result.labels if result.labels is not None else [_json_value(p) for p in result.predictions]
            )
            probabilities = result.matrix if result.matrix is not None else result.probabilities
        except BridgeheadError as exc:
            error = exc.message
        predlog.record(
            [
                PredictionBatch(
                    ids=request_id,
                    endpoint=endpoint,
                    model_names=loaded.model_name,
                    versions=loaded.version,
                    role="shadow",
                    ts_ms=received_ms,
                    latency_ms=(time.perf_counter() - started) * 1000,
                    inputs=frame,
                    predictions=predictions,
                    probabilities=probabilities,
                    status="ok" if error is None else "error",
                    error=error,
                )
            ]
        )


@router.post(
    "/serve/{name}/predict",
    response_model=PredictOut,
    responses=ERRORS,
    openapi_extra=JSON_BODY,
    dependencies=[Depends(BEARER)],
)
async def predict(
    request: Request,
    name: EndpointName,
    background: BackgroundTasks,
    key_column: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=250,
            description="A column of the body that carries the routing key (sticky A/B assignment); it is "
            "not passed to the model. For Arrow and Parquet bodies, which have no `keys` field.",
        ),
    ] = None,
) -> PredictOut:
    """Score records: JSON ``{"records": [{...}], "keys": [...]}`` (keys make A/B assignment sticky), or an
    Arrow IPC stream / Parquet file for batches. Answers predictions, class probabilities for classifiers, the
    version that answered each row and one id per row for feedback."""
    scored = await _scored(request, name, "native", background, key_column)
    return PredictOut(**answer("native", name, scored))


@router.post(
    "/serve/{name}/invocations", responses=ERRORS, openapi_extra=JSON_BODY, dependencies=[Depends(BEARER)]
)
async def invocations(request: Request, name: EndpointName, background: BackgroundTasks) -> dict[str, Any]:
    """MLflow's scoring protocol, as ``mlflow models serve`` answers it: ``dataframe_split``,
    ``dataframe_records``, ``instances`` or ``inputs`` (JSON), or CSV. Answers ``{"predictions": [...]}``."""
    scored = await _scored(request, name, "mlflow", background)
    return answer("mlflow", name, scored)


@router.get("/metrics", tags=["inference"], response_class=PlainTextResponse)
def metrics(request: Request) -> PlainTextResponse:
    """Prometheus metrics: inference requests, rows, errors and latency per endpoint and version."""
    from prometheus_client import CONTENT_TYPE_LATEST

    return PlainTextResponse(_metrics(request).render(), media_type=CONTENT_TYPE_LATEST)


# --- Open Inference Protocol v2 ---------------------------------------------------------------------------


@router.get("/v2/health/live", tags=["inference"])
def v2_live() -> dict[str, bool]:
    """OIP v2 server liveness."""
    return {"live": True}


@router.get("/v2/health/ready", tags=["inference"])
def v2_ready(request: Request) -> dict[str, bool]:
    """OIP v2 server readiness: the database answers."""
    db_of(request).ping()
    return {"ready": True}


@router.get("/v2", tags=["inference"])
def v2_server_metadata() -> dict[str, Any]:
    """OIP v2 server metadata."""
    from bridgehead import __version__

    return {"name": "bridgehead", "version": __version__, "extensions": []}


def _endpoint_and_primary(
    request: Request, principal: Principal, name: str
) -> tuple[service.EndpointView, LoadedModel]:
    _only(request, name)
    with db_of(request).session() as session:
        endpoint = _endpoints(request).for_invoke(session, principal, name)
        loaded = _runtime(request).get(session, principal, endpoint.policy.routes[0].version_id)
        return endpoint, loaded


@router.get("/v2/models/{name}", responses=ERRORS, tags=["inference"])
def v2_model_metadata(request: Request, principal: ApiPrincipal, name: EndpointName) -> dict[str, Any]:
    """OIP v2 model metadata: the endpoint's inputs from the serving version's signature."""
    endpoint, loaded = _endpoint_and_primary(request, principal, name)
    return protocols.v2_metadata(endpoint.name, [str(loaded.version)], loaded.signature)


@router.get("/v2/models/{name}/ready", responses=ERRORS, tags=["inference"])
def v2_model_ready(request: Request, principal: ApiPrincipal, name: EndpointName) -> dict[str, Any]:
    """OIP v2 model readiness: the serving version is loaded."""
    endpoint, _ = _endpoint_and_primary(request, principal, name)
    return {"name": endpoint.name, "ready": True}


@router.post(
    "/v2/models/{name}/infer",
    responses=ERRORS,
    openapi_extra=JSON_BODY,
    tags=["inference"],
    dependencies=[Depends(BEARER)],
)
async def v2_infer(request: Request, name: EndpointName, background: BackgroundTasks) -> dict[str, Any]:
    """OIP v2 inference: one tensor per input column, or one 2-D tensor in the signature's column order.
    Answers ``predict`` (and ``predict_proba`` for classifiers)."""
    scored = await _scored(request, name, "v2", background)
    return answer("v2", name, scored)


# --- feedback ----------------------------------------------------------------------------------------------


@router.post("/serve/{name}/feedback", response_model=FeedbackOut, responses=ERRORS)
def feedback(request: Request, principal: ApiPrincipal, name: EndpointName, body: FeedbackIn) -> FeedbackOut:
    """Attach ground truth (``kind: label``) or a human override with a reason (``kind: override``) to
    prediction ids, any time after the prediction. A later item for the same id and kind replaces the earlier
    one. Ids not (yet) in the prediction log are kept; monitoring reports them as unmatched."""
    _only(request, name)
    with db_of(request).session(write=True) as session:
        created, updated = service.add_feedback(
            session, principal, name, [item.model_dump() for item in body.items]
        )
    return FeedbackOut(created=created, updated=updated)
