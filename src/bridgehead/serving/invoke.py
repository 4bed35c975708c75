"""Online inference: /serve/{endpoint}/predict (native), /serve/{endpoint}/invocations (MLflow's scoring
protocol), /v2/... (Open Inference Protocol v2: KServe, Triton, MLServer clients) and feedback.

One path does the work for all three: authenticate, find the endpoint the caller may invoke, parse the body,
route each row by the traffic policy (sticky by key), validate against the serving version's signature, score,
answer, and record every row in the prediction log off the request path. Shadow versions score a copy after
the answer is sent; their results are logged with role "shadow" and never returned.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from fastapi import APIRouter, BackgroundTasks, Path, Query, Request
from fastapi.responses import PlainTextResponse
from starlette.concurrency import run_in_threadpool

from bridgehead.auth.deps import ApiPrincipal, db_of
from bridgehead.auth.service import Principal
from bridgehead.errors import BridgeheadError, NotFound, PayloadTooLarge, ValidationFailed, error_responses
from bridgehead.logs import current_request_id
from bridgehead.serving import protocols, service
from bridgehead.serving.metrics import InferenceMetrics
from bridgehead.serving.models import Endpoint
from bridgehead.serving.predlog import PredictionLog, PredictionRecord
from bridgehead.serving.routing import Route, TrafficPolicy, assign_many
from bridgehead.serving.runtime import LoadedModel, ModelRuntime
from bridgehead.serving.schemas import FeedbackIn, FeedbackOut, PredictOut

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


def _rows_json(frame: pd.DataFrame) -> list[str]:
    import json

    columns = [str(c) for c in frame.columns]
    return [
        json.dumps({c: _json_value(v) for c, v in zip(columns, row, strict=True)}, default=str)
        for row in frame.itertuples(index=False, name=None)
    ]


def _score(
    request: Request,
    principal: Principal,
    name: str,
    parsed: protocols.ParsedRequest,
    background: BackgroundTasks,
) -> Scored:
    started = time.perf_counter()
    received_ms = int(time.time() * 1000)
    request_id = parsed.request_id or current_request_id() or uuid.uuid4().hex
    runtime = _runtime(request)
    limit = request.app.state.settings.max_predict_rows
    if len(parsed.frame) > limit:
        raise PayloadTooLarge(
            f"{len(parsed.frame):,} rows in one request; the limit is {limit:,}. Use `bridgehead score` for "
            f"batches.",
            details={"rows": len(parsed.frame), "limit": limit},
        )
    with db_of(request).session() as session:
        endpoint = service.endpoint_for_invoke(session, principal, name)
        policy = TrafficPolicy.from_config(endpoint.policy)
        keys = parsed.keys if policy.sticky else None
        chosen = assign_many(policy, keys if keys is not None else [None] * len(parsed.frame))
        frame = parsed.frame
        n = len(frame)
        predictions: list[Any] = [None] * n
        probabilities: list[list[float]] | None = None
        classes: list[Any] | None = None
        versions = [0] * n
        loaded_by_route: dict[int, LoadedModel] = {}
        index = np.asarray(chosen)
        for route_index in sorted(set(chosen)):
            rows = np.flatnonzero(index == route_index)
            route = policy.routes[route_index]
            loaded = runtime.get(session, principal, route.version_id)
            loaded_by_route[route_index] = loaded
            part = frame.iloc[rows].reset_index(drop=True)
            if loaded.signature is not None:
                part = protocols.validate_frame(part, loaded.signature)
            result = runtime.predict(loaded, part)
            for j, at in enumerate(rows.tolist()):
                predictions[at] = result.predictions[j]
                versions[at] = loaded.version
            if result.probabilities is not None:
                if probabilities is None:
                    probabilities = [[] for _ in range(n)]
                for j, at in enumerate(rows.tolist()):
                    probabilities[at] = result.probabilities[j]
                classes = result.classes
        shadows = [(s, runtime.get(session, principal, s.version_id)) for s in policy.shadows]
        endpoint_name = endpoint.name
    latency_ms = (time.perf_counter() - started) * 1000
    ids = [request_id] if n == 1 else [f"{request_id}.{i}" for i in range(n)]
    logging_on = not request.app.state.settings.prediction_log_disabled
    inputs = _rows_json(frame) if logging_on else []
    records = []
    for i in range(n if logging_on else 0):
        loaded = loaded_by_route[int(index[i])]
        output: dict[str, Any] = {"prediction": _json_value(predictions[i])}
        if probabilities is not None and probabilities[i]:
            output["probabilities"] = probabilities[i]
        records.append(
            PredictionRecord(
                request_id=ids[i],
                endpoint=endpoint_name,
                model_name=loaded.model_name,
                version=loaded.version,
                role="primary",
                ts_ms=received_ms,
                latency_ms=latency_ms,
                inputs=inputs[i],
                outputs=_json(output),
                key=str(keys[i]) if keys is not None and keys[i] is not None else "",
                row=i,
            )
        )
    if records:
        _predlog(request).record(records)
    if shadows and logging_on:
        background.add_task(
            _run_shadows, _predlog(request), runtime, shadows, frame, ids, inputs, endpoint_name, received_ms
        )
    distinct = sorted(set(versions))
    _metrics(request).observe(
        endpoint_name, str(distinct[0]) if len(distinct) == 1 else "mixed", time.perf_counter() - started, n
    )
    model_names = {loaded.model_name for loaded in loaded_by_route.values()}
    return Scored(
        request_id=request_id,
        ids=ids,
        predictions=[_json_value(p) for p in predictions],
        probabilities=probabilities,
        classes=classes,
        model=model_names.pop() if len(model_names) == 1 else ",".join(sorted(model_names)),
        versions=versions,
    )


def _metrics(request: Request) -> InferenceMetrics:
    metrics: InferenceMetrics = request.app.state.inference_metrics
    return metrics


async def _scored(
    request: Request,
    principal: Principal,
    name: str,
    protocol: Literal["native", "mlflow", "v2"],
    background: BackgroundTasks,
    key_column: str | None = None,
) -> Scored:
    """Parse and score; failures are counted per endpoint and error code before they are answered."""
    try:
        _only(request, name)
        columns = None
        if protocol != "native":
            columns = await run_in_threadpool(_columns_hint, request, principal, name)
        parsed = await _parse(request, protocol, columns)
        if key_column is not None:
            parsed = _keys_from_column(parsed, key_column)
        return await run_in_threadpool(_score, request, principal, name, parsed, background)
    except BridgeheadError as exc:
        _metrics(request).failed(name, exc.status, exc.code)
        raise


def _keys_from_column(parsed: protocols.ParsedRequest, column: str) -> protocols.ParsedRequest:
    if column not in parsed.frame.columns:
        raise ValidationFailed(
            f"The key column {column!r} is not in the body.", details={"column": column, "problem": "missing"}
        )
    keys = [None if v is None or v != v else str(v) for v in parsed.frame[column].tolist()]
    return dataclasses.replace(parsed, frame=parsed.frame.drop(columns=[column]), keys=keys)


def _json(value: Any) -> str:
    import json

    return json.dumps(value, default=str)


def _run_shadows(
    predlog: PredictionLog,
    runtime: ModelRuntime,
    shadows: list[tuple[Route, LoadedModel]],
    frame: pd.DataFrame,
    ids: list[str],
    inputs: list[str],
    endpoint: str,
    received_ms: int,
) -> None:
    """Score the copy with each shadow and log it; a failing shadow is logged as errors, never raised."""
    for _, loaded in shadows:
        started = time.perf_counter()
        try:
            part = (
                protocols.validate_frame(frame, loaded.signature) if loaded.signature is not None else frame
            )
            result = runtime.predict(loaded, part)
            outputs = [
                {"prediction": _json_value(p)}
                | ({"probabilities": result.probabilities[i]} if result.probabilities is not None else {})
                for i, p in enumerate(result.predictions)
            ]
            status = "ok"
        except BridgeheadError as exc:
            outputs = [{"error": exc.message}] * len(frame)
            status = "error"
        latency_ms = (time.perf_counter() - started) * 1000
        predlog.record(
            PredictionRecord(
                request_id=ids[i],
                endpoint=endpoint,
                model_name=loaded.model_name,
                version=loaded.version,
                role="shadow",
                ts_ms=received_ms,
                latency_ms=latency_ms,
                inputs=inputs[i],
                outputs=_json(outputs[i]),
                status=status,
                row=i,
            )
            for i in range(len(frame))
        )


async def _parse(
    request: Request, protocol: Literal["native", "mlflow", "v2"], columns: list[str] | None
) -> protocols.ParsedRequest:
    body = await request.body()
    return protocols.parse_body(
        request.headers.get("content-type", ""),
        body,
        protocol,
        columns,
        max_rows=request.app.state.settings.max_predict_rows,
    )


def _columns_hint(request: Request, principal: Principal, name: str) -> list[str] | None:
    """The primary version's input columns, for bodies that carry values without names (OIP v2 2-D tensors,
    MLflow "instances" as lists)."""
    with db_of(request).session() as session:
        endpoint = service.endpoint_for_invoke(session, principal, name)
        policy = TrafficPolicy.from_config(endpoint.policy)
        loaded = _runtime(request).get(session, principal, policy.routes[0].version_id)
        return loaded.signature.columns if loaded.signature is not None else None


@router.post("/serve/{name}/predict", response_model=PredictOut, responses=ERRORS, openapi_extra=JSON_BODY)
async def predict(
    request: Request,
    principal: ApiPrincipal,
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
    scored = await _scored(request, principal, name, "native", background, key_column)
    return PredictOut(
        request_id=scored.request_id,
        ids=scored.ids,
        predictions=scored.predictions,
        probabilities=scored.probabilities,
        classes=scored.classes,
        model=scored.model,
        version=scored.versions[0] if len(set(scored.versions)) == 1 else None,
        versions=scored.versions,
    )


@router.post("/serve/{name}/invocations", responses=ERRORS, openapi_extra=JSON_BODY)
async def invocations(
    request: Request, principal: ApiPrincipal, name: EndpointName, background: BackgroundTasks
) -> dict[str, Any]:
    """MLflow's scoring protocol, as ``mlflow models serve`` answers it: ``dataframe_split``,
    ``dataframe_records``, ``instances`` or ``inputs`` (JSON), or CSV. Answers ``{"predictions": [...]}``."""
    scored = await _scored(request, principal, name, "mlflow", background)
    return protocols.mlflow_response(scored.predictions)


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


def _endpoint_and_primary(request: Request, principal: Principal, name: str) -> tuple[Endpoint, LoadedModel]:
    _only(request, name)
    with db_of(request).session() as session:
        endpoint = service.endpoint_for_invoke(session, principal, name)
        policy = TrafficPolicy.from_config(endpoint.policy)
        loaded = _runtime(request).get(session, principal, policy.routes[0].version_id)
        session.expunge(endpoint)
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


@router.post("/v2/models/{name}/infer", responses=ERRORS, openapi_extra=JSON_BODY, tags=["inference"])
async def v2_infer(
    request: Request, principal: ApiPrincipal, name: EndpointName, background: BackgroundTasks
) -> dict[str, Any]:
    """OIP v2 inference: one tensor per input column, or one 2-D tensor in the signature's column order.
    Answers ``predict`` (and ``predict_proba`` for classifiers)."""
    scored = await _scored(request, principal, name, "v2", background)
    return protocols.v2_response(
        model_name=name,
        model_version=str(scored.versions[0]) if len(set(scored.versions)) == 1 else None,
        request_id=scored.request_id,
        predictions=scored.predictions,
        probabilities=scored.probabilities,
    )


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
