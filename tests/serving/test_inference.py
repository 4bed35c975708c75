"""Inference through the app with the request shapes real clients send: MLflow's scoring protocol (bodies built
by mlflow's own helpers), the Open Inference Protocol v2 (per the KServe spec), Arrow and Parquet batches;
Prometheus metrics; the prediction log switch."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from bridgehead.serving.predlog import read_log
from bridgehead.settings import Settings
from tests.serving.conftest import FEATURES, Registered, deploy


@pytest.fixture
def served(client: TestClient, registered: Registered) -> Registered:
    deploy(client, registered.engineer, "credit", "2", environment="production")  # gradient boosting
    return registered


def test_mlflow_scoring_protocol_bodies_from_mlflow_itself(client: TestClient, served: Registered) -> None:
    from mlflow.models.utils import convert_input_example_to_serving_input

    h = served.engineer.headers
    x = served.frame.head(7)
    expected = served.v2.predict(x).tolist()
    with warnings.catch_warnings():  # mlflow 3.17 compares an index with a range, which pandas 3 deprecates
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        split = convert_input_example_to_serving_input(x)  # what `mlflow models predict` and the docs send
    assert split is not None and "dataframe_split" in json.loads(split)
    answer = client.post(
        "/serve/credit/invocations", content=split, headers={**h, "content-type": "application/json"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"predictions": expected}
    records = {"dataframe_records": x.to_dict(orient="records")}
    assert client.post("/serve/credit/invocations", json=records, headers=h).json()["predictions"] == expected
    instances = {"instances": x.to_numpy().tolist()}  # lists of values, in the signature's column order
    assert (
        client.post("/serve/credit/invocations", json=instances, headers=h).json()["predictions"] == expected
    )
    inputs = {"inputs": {c: x[c].tolist() for c in FEATURES}}
    assert client.post("/serve/credit/invocations", json=inputs, headers=h).json()["predictions"] == expected
    csv = x.to_csv(index=False).encode()
    as_csv = client.post("/serve/credit/invocations", content=csv, headers={**h, "content-type": "text/csv"})
    assert as_csv.status_code == 200 and as_csv.json()["predictions"] == expected
    two_keys = {"dataframe_records": [], "instances": []}
    refused = client.post("/serve/credit/invocations", json=two_keys, headers=h)
    assert refused.status_code == 400 and "dataframe_split" in refused.json()["error"]["message"]


def test_open_inference_protocol_v2(client: TestClient, served: Registered) -> None:
    h = served.engineer.headers
    x = served.frame.head(5)
    # One tensor per column, as KServe's v2 examples do.
    body = {
        "id": "req-42",
        "inputs": [{"name": c, "shape": [5], "datatype": "FP64", "data": x[c].tolist()} for c in FEATURES],
    }
    answer = client.post("/v2/models/credit/infer", json=body, headers=h)
    assert answer.status_code == 200, answer.text
    out = answer.json()
    assert out["model_name"] == "credit" and out["model_version"] == "2" and out["id"] == "req-42"
    predict = next(o for o in out["outputs"] if o["name"] == "predict")
    assert predict["shape"] == [5] and predict["data"] == served.v2.predict(x).tolist()
    proba = next(o for o in out["outputs"] if o["name"] == "predict_proba")
    assert proba["shape"] == [5, 2] and proba["datatype"] == "FP64"
    np.testing.assert_allclose(np.array(proba["data"]).reshape(5, 2), served.v2.predict_proba(x), atol=1e-5)
    # One [n, k] tensor in the signature's column order (Triton-style), data flattened row-major.
    matrix = {
        "inputs": [
            {"name": "input-0", "shape": [5, 4], "datatype": "FP32", "data": x.to_numpy().ravel().tolist()}
        ]
    }
    flat = client.post("/v2/models/credit/infer", json=matrix, headers=h)
    assert flat.status_code == 200, flat.text
    assert (
        next(o for o in flat.json()["outputs"] if o["name"] == "predict")["data"]
        == served.v2.predict(x).tolist()
    )
    short = {"inputs": [{"name": "input-0", "shape": [5, 4], "datatype": "FP32", "data": [1.0, 2.0]}]}
    wrong = client.post("/v2/models/credit/infer", json=short, headers=h)
    assert wrong.status_code == 422 and "input-0" in wrong.json()["error"]["message"]
    meta = client.get("/v2/models/credit", headers=h).json()
    assert meta["name"] == "credit" and [i["name"] for i in meta["inputs"]] == FEATURES
    assert client.get("/v2/models/credit/ready", headers=h).json()["ready"] is True
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2/models/nowhere", headers=h).status_code == 404


def test_arrow_and_parquet_batches_with_a_key_column(client: TestClient, served: Registered) -> None:
    h = served.engineer.headers
    x = served.frame.head(300)
    table = pa.Table.from_pandas(x.assign(customer=[f"c{i}" for i in range(300)]), preserve_index=False)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as stream:
        stream.write_table(table)
    arrow = client.post(
        "/serve/credit/predict?key_column=customer",
        content=sink.getvalue().to_pybytes(),
        headers={**h, "content-type": "application/vnd.apache.arrow.stream"},
    )
    assert arrow.status_code == 200, arrow.text
    assert arrow.json()["predictions"] == served.v2.predict(x).tolist()
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(x, preserve_index=False), buffer)
    parquet = client.post(
        "/serve/credit/predict",
        content=buffer.getvalue(),
        headers={**h, "content-type": "application/vnd.apache.parquet"},
    )
    assert parquet.status_code == 200 and parquet.json()["predictions"] == served.v2.predict(x).tolist()
    missing_key = client.post(
        "/serve/credit/predict?key_column=nope",
        content=buffer.getvalue(),
        headers={**h, "content-type": "application/vnd.apache.parquet"},
    )
    assert missing_key.status_code == 422 and missing_key.json()["error"]["details"]["column"] == "nope"
    corrupt = client.post(
        "/serve/credit/predict",
        content=b"PAR1garbage",
        headers={**h, "content-type": "application/vnd.apache.parquet"},
    )
    assert corrupt.status_code == 400
    unknown = client.post("/serve/credit/predict", content=b"x", headers={**h, "content-type": "image/png"})
    assert unknown.status_code == 400 and "content_type" in unknown.json()["error"]["details"]
    # The key column routed the rows and was logged as their key, not given to the model.
    client.app.state.predlog.flush()  # type: ignore[attr-defined]
    root = client.app.state.settings.resolved_prediction_log_dir  # type: ignore[attr-defined]
    keys = {k for batch in read_log(root, "credit", columns=["key"]) for k in batch.column("key").to_pylist()}
    assert "c0" in keys and "c299" in keys


def test_the_log_keeps_the_floats_sent_and_never_a_key_column_taken_out(
    client: TestClient, served: Registered
) -> None:
    h = served.engineer.headers
    x = served.frame.head(4)
    records = [{k: float(v) for k, v in r.items()} for r in x.to_dict("records")]
    plain = client.post("/serve/credit/predict", json={"records": records, "id": "plain"}, headers=h)
    assert plain.status_code == 200, plain.text
    # An all-float body whose key column is a float too: the key is taken out of the frame before scoring.
    keyed = [{**r, "branch": float(i)} for i, r in enumerate(records)]
    answer = client.post(
        "/serve/credit/predict?key_column=branch", json={"records": keyed, "id": "keyed"}, headers=h
    )
    assert answer.status_code == 200, answer.text

    client.app.state.predlog.flush()  # type: ignore[attr-defined]
    root = client.app.state.settings.resolved_prediction_log_dir  # type: ignore[attr-defined]
    rows = [r for batch in read_log(root, "credit") for r in batch.to_pylist()]
    for request in ("plain", "keyed"):
        logged = sorted(
            (r for r in rows if r["request_id"].startswith(f"{request}.")), key=lambda r: r["row"]
        )
        assert [r["inputs"] for r in logged] == records, request  # the values sent, the key column not
    assert [r["key"] for r in rows if r["request_id"].startswith("keyed.")] == ["0.0", "1.0", "2.0", "3.0"]


def test_prometheus_metrics_count_requests_rows_and_errors(client: TestClient, served: Registered) -> None:
    h = served.engineer.headers
    records = [{k: float(v) for k, v in r.items()} for r in served.frame.head(3).to_dict("records")]
    for _ in range(2):
        assert client.post("/serve/credit/predict", json={"records": records}, headers=h).status_code == 200
    assert (
        client.post("/serve/credit/predict", json={"records": [{"age": 1.0}]}, headers=h).status_code == 422
    )
    text = client.get("/metrics").text
    assert 'bridgehead_inference_requests_total{endpoint="credit",status="200",version="2"} 2.0' in text
    assert 'bridgehead_inference_rows_total{endpoint="credit",version="2"} 6.0' in text
    assert 'bridgehead_inference_errors_total{code="validation_failed",endpoint="credit"} 1.0' in text
    assert 'bridgehead_inference_latency_seconds_count{endpoint="credit",version="2"} 2.0' in text


def test_the_prediction_log_can_be_switched_off(settings: Settings, registered: Registered) -> None:
    from bridgehead.app import create_app

    quiet = settings.model_copy(update={"prediction_log_disabled": True})
    with TestClient(create_app(quiet), base_url="https://testserver") as c:
        engineer = registered.engineer  # the same database: the token works on this app too
        deploy(c, engineer, "credit", "1", environment="staging")
        records = [{k: float(v) for k, v in r.items()} for r in registered.frame.head(2).to_dict("records")]
        assert (
            c.post("/serve/credit/predict", json={"records": records}, headers=engineer.headers).status_code
            == 200
        )
        c.app.state.predlog.flush()  # type: ignore[attr-defined]
        assert list(read_log(quiet.resolved_prediction_log_dir, "credit")) == []


def test_onnx_runtime_serves_only_when_it_agrees(tmp_path: Path) -> None:
    """The conversion is used when it matches scikit-learn on the stored example, refused when the example is
    missing or the model has no converter, and can be switched off."""
    import json as _json

    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.linear_model import LinearRegression

    from bridgehead.serving.accelerate import accelerate
    from tests.serving.conftest import credit_data

    frame, y = credit_data()
    model = GradientBoostingClassifier(n_estimators=30, max_depth=3, random_state=0).fit(frame, y)
    (tmp_path / "input_example.json").write_text(_json.dumps(frame.head(5).to_dict(orient="split")))
    fast = accelerate(model, tmp_path, FEATURES)
    assert fast is not None and fast.engine == "onnxruntime"
    assert fast.predict(frame.to_numpy()).tolist() == model.predict(frame).tolist()
    np.testing.assert_allclose(fast.predict_proba(frame.to_numpy()), model.predict_proba(frame), atol=1e-5)
    labels, proba = fast.predict_both(frame.to_numpy())  # one run of the graph, both answers
    assert labels.tolist() == model.predict(frame).tolist()
    np.testing.assert_allclose(proba, model.predict_proba(frame), atol=1e-5)
    assert accelerate(model, tmp_path, list(reversed(FEATURES))) is None  # columns in another order
    regressor = LinearRegression().fit(frame, y)
    fast_regressor = accelerate(regressor, tmp_path, FEATURES)
    assert fast_regressor is not None
    values, none = fast_regressor.predict_both(frame.to_numpy())
    assert none is None
    np.testing.assert_allclose(values, regressor.predict(frame), rtol=1e-4)
    (tmp_path / "input_example.json").unlink()
    assert accelerate(model, tmp_path, FEATURES) is None  # nothing to confirm it on
    assert accelerate(object(), tmp_path, FEATURES) is None


def test_a_revoked_token_stops_inference_within_the_cache_time(
    client: TestClient, served: Registered
) -> None:
    """Inference keeps an authenticated token for BRIDGEHEAD_ENDPOINT_CACHE_SECONDS (1 s): a revocation is
    honoured there within that time, and at once by the rest of the API."""
    import time

    eng = served.engineer
    created = client.post("/api/v1/tokens", headers=eng.headers, json={"name": "app"}).json()
    app_headers = {"Authorization": f"Bearer {created['token']}"}
    records = {"records": [{k: float(v) for k, v in served.frame.iloc[0].items()}]}
    assert client.post("/serve/credit/predict", json=records, headers=app_headers).status_code == 200
    assert client.delete(f"/api/v1/tokens/{created['id']}", headers=eng.headers).status_code == 200
    assert client.get("/api/v1/me", headers=app_headers).status_code == 401
    time.sleep(1.1)
    refused = client.post("/serve/credit/predict", json=records, headers=app_headers)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthenticated"


def test_a_loaded_model_is_kept_out_of_the_collectors_walks(client: TestClient, served: Registered) -> None:
    """A served model lives as long as the process; its objects are frozen (as start-up's are), so the full
    collections that the prediction log's buffered requests bring about do not walk it again each time."""
    import gc

    x = served.frame.head(1)
    records = {"records": x.to_dict(orient="records")}
    answer = client.post("/serve/credit/predict", json=records, headers=served.engineer.headers)
    assert answer.status_code == 200, answer.text
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    [loaded] = [m for m in runtime._models.values() if m.model_name == "credit-risk" and m.version == 2]
    tracked = {id(o) for o in gc.get_objects()}  # every generation but the frozen one
    assert id(loaded) not in tracked and id(loaded.predictor) not in tracked
