"""Batch scoring as an API job, end to end: real scikit-learn models deployed through the API, input uploaded
(or named as a dataset version), scored by the server's in-process worker, output downloaded and compared with
what the model predicts."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from bridgehead.auth.roles import Role
from bridgehead.serving.batch import write_scored
from bridgehead.settings import Settings
from tests.conftest import Member, Org
from tests.serving.conftest import FEATURES, Registered, credit_data, deploy

MAX_BODY = 8192


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """A small body limit, so that an upload above it shows the scoring route streams its input instead."""
    return Settings(
        home=tmp_path / "home",
        database_url=database_url,
        secret_key="test-secret-key-not-for-production",
        log_level="INFO",
        max_body_bytes=MAX_BODY,
    )


def parquet(frame: pd.DataFrame) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), sink)
    return sink.getvalue()


def finished(client: TestClient, member: Member, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = client.get(f"/api/v1/jobs/{job_id}", headers=member.headers).json()
        if job["status"] in ("succeeded", "failed", "cancelled") or time.monotonic() > deadline:
            return job
        time.sleep(0.05)


def output(client: TestClient, member: Member, job: dict[str, Any]) -> pd.DataFrame:
    answer = client.get(job["output_url"], headers=member.headers)
    assert answer.status_code == 200, answer.text
    return pq.read_table(io.BytesIO(answer.content)).to_pandas()


def test_an_uploaded_file_is_scored_in_the_background(client: TestClient, registered: Registered) -> None:
    engineer = registered.engineer
    deploy(client, engineer, "credit", "1", environment="staging")
    frame, _ = credit_data(n=700, seed=11)
    # Carried along to the output, not given to the model.
    frame.insert(0, "customer_id", [f"c-{i}" for i in range(len(frame))])
    body = parquet(frame)
    assert len(body) > MAX_BODY  # larger than any other request may be: the route streams it

    answer = client.post(
        "/api/v1/endpoints/credit/score-jobs",
        params={"batch_rows": 128},
        content=body,
        headers={**engineer.headers, "content-type": "application/vnd.apache.parquet"},
    )
    assert answer.status_code == 202, answer.text
    submitted = answer.json()
    assert (submitted["kind"], submitted["status"], submitted["created_by"]) == (
        "serving.score", "queued", engineer.id,
    )  # fmt: skip

    job = finished(client, engineer, submitted["id"])
    assert job["status"] == "succeeded", job
    assert job["progress"] == 1.0 and job["attempts"] == 1
    assert job["result"]["rows"] == 700 and job["result"]["version"] == 1
    scored = output(client, engineer, job)
    assert list(scored.columns) == ["customer_id", *FEATURES, "prediction", "probabilities", "version"]
    assert scored["customer_id"].tolist() == frame["customer_id"].tolist()
    x = frame[FEATURES]
    assert scored["prediction"].tolist() == registered.v1.predict(x).tolist()
    np.testing.assert_allclose(
        np.stack(scored["probabilities"].to_numpy()), registered.v1.predict_proba(x), atol=1e-5
    )
    assert set(scored["version"]) == {1}


def test_a_dataset_version_is_scored_by_the_endpoints_main_version(
    client: TestClient, registered: Registered
) -> None:
    engineer = registered.engineer
    deploy(client, engineer, "credit", "1", environment="staging")
    deploy(client, engineer, "credit", "2", strategy="canary", weight=10)  # v1 keeps 90 %
    frame, _ = credit_data(n=40, seed=3)
    dataset = client.post("/api/v1/datasets", headers=engineer.headers, json={"name": "applicants"}).json()
    uploaded = client.put(
        f"/api/v1/datasets/{dataset['id']}/upload/applicants.parquet",
        headers=engineer.headers,
        content=parquet(frame),
    )
    assert uploaded.status_code == 201, uploaded.text

    answer = client.post(
        "/api/v1/endpoints/credit/score-jobs",
        headers=engineer.headers,
        json={"dataset_id": dataset["id"], "version": 1},
    )
    assert answer.status_code == 202, answer.text
    assert answer.json()["params"]["input"]["dataset_version"] == 1
    job = finished(client, engineer, answer.json()["id"])
    assert job["status"] == "succeeded", job
    scored = output(client, engineer, job)
    assert scored["prediction"].tolist() == registered.v1.predict(frame[FEATURES]).tolist()
    assert set(scored["version"]) == {1}


def test_refusals(client: TestClient, registered: Registered, orgs: Org, app: Any) -> None:
    engineer = registered.engineer
    deploy(client, engineer, "credit", "1", environment="staging")
    frame, _ = credit_data(n=20)
    url = "/api/v1/endpoints/credit/score-jobs"
    as_parquet = {**engineer.headers, "content-type": "application/vnd.apache.parquet"}

    outsider = orgs.member(Role.ML_ENGINEER, unit="insurance")
    hidden = client.post(
        url, content=parquet(frame), headers={**outsider.headers, "content-type": "application/octet-stream"}
    )
    assert hidden.status_code == 404 and hidden.json()["error"]["code"] == "not_found"

    garbage = client.post(url, content=b"not a parquet file", headers=as_parquet)
    assert garbage.status_code == 400 and garbage.json()["error"]["code"] == "bad_request"
    csv = client.post(url, content=b"age\n1\n", headers={**engineer.headers, "content-type": "text/csv"})
    assert csv.status_code == 400
    unknown = client.post(url, json={"dataset_id": "nope", "version": 1}, headers=engineer.headers)
    assert unknown.status_code == 404
    invalid = client.post(url, json={"dataset": "x"}, headers=engineer.headers)
    assert invalid.status_code == 422 and invalid.json()["error"]["code"] == "validation_failed"
    # Nothing was kept of the refused uploads, and no job was queued.
    assert app.state.artifacts.list_dir("jobs") == []
    assert client.get("/api/v1/jobs", headers=engineer.headers).json()["total"] == 0

    # Readable but not what the model takes: the job fails at once (retrying cannot fix the input).
    missing = client.post(url, content=parquet(frame.drop(columns=["debt"])), headers=as_parquet)
    assert missing.status_code == 202
    job = finished(client, engineer, missing.json()["id"])
    assert (job["status"], job["attempts"]) == ("failed", 1)
    assert "'debt' is missing" in job["error"] and job["output_url"] is None
    assert not app.state.artifacts.exists(f"jobs/{job['id']}/output.parquet")


def test_write_scored_streams_chunks_into_one_file(tmp_path: Path) -> None:
    chunks = [pa.record_batch({"x": [1.0, 2.0]}), pa.record_batch({"x": [3.0]})]
    seen: list[int] = []
    rows = write_scored(
        chunks, lambda b: {"double": [v * 2 for v in b.column("x").to_pylist()]}, str(tmp_path / "o.parquet"),
        on_rows=seen.append,
    )  # fmt: skip
    assert rows == 3 and seen == [2, 1]
    assert pq.read_table(tmp_path / "o.parquet").to_pydict() == {
        "x": [1.0, 2.0, 3.0],
        "double": [2.0, 4.0, 6.0],
    }
    assert write_scored([], lambda b: {}, str(tmp_path / "none.parquet")) == 0
    assert not (tmp_path / "none.parquet").exists()
