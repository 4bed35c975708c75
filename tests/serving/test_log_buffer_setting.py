"""BRIDGEHEAD_PREDICTION_LOG_BUFFER_ROWS: the server's prediction log writes as soon as that many rows are
buffered, without waiting for its interval (an hour here)."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from bridgehead.serving.predlog import read_log
from bridgehead.settings import Settings
from tests.serving.conftest import Registered, deploy

ROWS = 1_000


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"prediction_log_flush_seconds": 3600, "prediction_log_buffer_rows": ROWS}
    )


def test_a_full_buffer_is_written_before_the_interval(
    client: TestClient, registered: Registered, settings: Settings
) -> None:
    deploy(client, registered.engineer, "credit", "2", environment="production")
    log = client.app.state.predlog  # type: ignore[attr-defined]
    assert log.max_buffer_rows == ROWS and log.flush_interval_s == 3600
    records = registered.frame.sample(ROWS - 1, replace=True, random_state=0).to_dict(orient="records")
    headers = registered.engineer.headers
    assert client.post("/serve/credit/predict", json={"records": records}, headers=headers).status_code == 200
    time.sleep(0.5)
    assert log.written == 0 and log.pending == ROWS - 1  # one row short: it waits for its interval
    assert (
        client.post("/serve/credit/predict", json={"records": records[:1]}, headers=headers).status_code
        == 200
    )
    deadline = time.monotonic() + 20
    while log.written < ROWS and time.monotonic() < deadline:
        time.sleep(0.05)
    assert log.written == ROWS and log.pending == 0
    logged = sum(
        b.num_rows for b in read_log(settings.resolved_prediction_log_dir, "credit", columns=["row"])
    )
    assert logged == ROWS


@pytest.mark.parametrize("rows", [999, 5_000_001])
def test_the_buffer_size_is_bounded(settings: Settings, rows: int) -> None:
    with pytest.raises(ValidationError, match="prediction_log_buffer_rows"):
        Settings(**{**settings.model_dump(), "prediction_log_buffer_rows": rows})
