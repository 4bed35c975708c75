"""Real processes: `bridgehead serve ENDPOINT --workers 2` next to `bridgehead server` on one database; versions
swap on promote without a restart and without failed requests; a small bounded load test loses no
prediction-log row; `bridgehead score` streams a file through the server and through a local model."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import bridgehead as bh
from bridgehead.client import Client
from bridgehead.serving.predlog import read_log
from tests.live import BRIDGEHEAD, bridgehead_env, free_port, running_server
from tests.serving.conftest import credit_data

pytestmark = pytest.mark.slow


def _post(url: str, **kwargs: Any) -> httpx.Response:
    # Generous: a deploy or the first request loads the model (and converts it to ONNX) on a busy machine.
    return httpx.post(url, timeout=60, **kwargs)


def _admin_token(env: dict[str, str]) -> str:
    subprocess.run([BRIDGEHEAD, "db", "upgrade"], env=env, check=True, capture_output=True)
    subprocess.run(
        [
            BRIDGEHEAD,
            "admin",
            "create",
            "--email",
            "chief@example.com",
            "--password",
            "serving-live-password",
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    return subprocess.run(
        [BRIDGEHEAD, "token", "create", "--email", "chief@example.com", "--name", "t"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()[-1]


def _register(url: str, token: str) -> tuple[pd.DataFrame, list[object]]:
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression

    frame, y = credit_data()
    models: list[object] = [
        LogisticRegression(max_iter=1000).fit(frame, y),
        GradientBoostingClassifier(n_estimators=20, max_depth=2, random_state=0).fit(frame, y),
    ]
    bh.set_client(Client(url, token))
    try:
        bh.set_experiment("live")
        for model in models:
            with bh.start_run():
                bh.log_model(model, "model", registered_model_name="credit-risk", input_example=frame.head(3))
    finally:
        bh.set_client(None)
    return frame, models


def test_standalone_server_swaps_versions_under_load_and_logs_every_row(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = bridgehead_env(home=str(home), secret_key="live-secret", prediction_log_flush_seconds="0.2")
    token = _admin_token(env)
    auth = {"Authorization": f"Bearer {token}"}
    with running_server(env) as main:
        frame, models = _register(main, token)
        deployed = _post(
            f"{main}/api/v1/endpoints/credit/deploy",
            json={"model": "credit-risk", "version": "1", "environment": "production"},
            headers=auth,
        )
        assert deployed.status_code == 200, deployed.text
        records = [{k: float(v) for k, v in r.items()} for r in frame.head(4).to_dict("records")]
        with running_server(
            env, "serve", "credit", "--workers", "2", port=free_port(), log=tmp_path / "serve.log"
        ) as edge:
            first = _post(f"{edge}/serve/credit/predict", json={"records": records}, headers=auth)
            assert first.status_code == 200, first.text
            assert first.json()["version"] == 1
            assert first.json()["predictions"] == models[0].predict(frame.head(4)).tolist()  # type: ignore[attr-defined]
            assert httpx.get(f"{edge}/api/v1/endpoints", headers=auth).status_code == 404  # inference only
            assert (
                _post(f"{edge}/serve/other/predict", json={"records": records}, headers=auth).status_code
                == 404
            )

            # A bounded load (4 clients) while the main server promotes version 2: no request fails.
            failures: list[str] = []
            sent = [0]
            versions: set[int] = set()
            lock = threading.Lock()
            stop = time.monotonic() + 4.0

            def client() -> None:
                with httpx.Client(base_url=edge, headers=auth, timeout=30) as http:
                    while time.monotonic() < stop:
                        answer = http.post("/serve/credit/predict", json={"records": records})
                        with lock:
                            if answer.status_code != 200:
                                failures.append(answer.text)
                            else:
                                sent[0] += len(records)
                                versions.add(answer.json()["version"])

            threads = [threading.Thread(target=client) for _ in range(4)]
            for t in threads:
                t.start()
            time.sleep(1.5)
            swapped = _post(
                f"{main}/api/v1/endpoints/credit/deploy",
                json={"model": "credit-risk", "version": "2"},
                headers=auth,
            )
            assert swapped.status_code == 200, swapped.text
            for t in threads:
                t.join()
            assert failures == []
            assert versions == {1, 2}  # served both, swapped without a restart
            after = _post(f"{edge}/serve/credit/predict", json={"records": records}, headers=auth).json()
            assert after["version"] == 2
            assert after["predictions"] == models[1].predict(frame.head(4)).tolist()  # type: ignore[attr-defined]
            metrics = httpx.get(f"{edge}/metrics").text
            assert (
                'bridgehead_inference_requests_total{endpoint="credit",status="200",version="2"}' in metrics
            )
            sent[0] += 2 * len(records)  # the first and the last request
        # The standalone server has stopped cleanly (SIGTERM): every row it answered is in the log.
    logged = sum(batch.num_rows for batch in read_log(home / "predictions", "credit", columns=["role"]))
    assert sent[0] > 50 and logged == sent[0]


def test_score_a_file_through_the_server_and_locally(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = bridgehead_env(home=str(home), secret_key="live-secret")
    token = _admin_token(env)
    with running_server(env) as main:
        frame, models = _register(main, token)
        _post(
            f"{main}/api/v1/endpoints/credit/deploy",
            json={"model": "credit-risk", "version": "2", "environment": "staging"},
            headers={"Authorization": f"Bearer {token}"},
        ).raise_for_status()
        big = pd.concat([frame] * 5, ignore_index=True)  # 2,000 rows, scored 300 at a time
        source = tmp_path / "applications.parquet"
        pq.write_table(pa.Table.from_pandas(big, preserve_index=False), source)
        client_env = {**env, "BRIDGEHEAD_URL": main, "BRIDGEHEAD_TOKEN": token}
        out = tmp_path / "scored.parquet"
        done = subprocess.run(
            [BRIDGEHEAD, "score", "credit", str(source), str(out), "--batch-rows", "300"],
            env=client_env,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        scored = pq.read_table(out).to_pandas()
        assert len(scored) == 2000 and list(scored.columns[:4]) == list(frame.columns)
        assert scored["prediction"].tolist() == models[1].predict(big).tolist()  # type: ignore[attr-defined]
        assert set(scored["version"]) == {2} and scored["prediction_id"].is_unique
        np.testing.assert_allclose(np.stack(scored["probabilities"]), models[1].predict_proba(big), atol=1e-5)  # type: ignore[attr-defined]
        local = tmp_path / "local.parquet"
        done = subprocess.run(
            [BRIDGEHEAD, "score", "models:/credit-risk/1", str(source), str(local)],
            env=client_env,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        assert pq.read_table(local).column("prediction").to_pylist() == models[0].predict(big).tolist()  # type: ignore[attr-defined]
        missing = subprocess.run(
            [BRIDGEHEAD, "score", "credit", str(tmp_path / "nope.parquet"), str(local)],
            env=client_env,
            capture_output=True,
            text=True,
        )
        assert missing.returncode == 2 and "no such file" in missing.stderr
