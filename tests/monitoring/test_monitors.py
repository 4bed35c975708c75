"""Monitors end to end through the API and the in-process job worker: a real model trained on a registered,
profiled dataset, deployed, scored with drifted traffic, labelled; the monitor finds the drift and the decline,
opens an incident, and people acknowledge and resolve it. Isolation, permissions and bad input too."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sklearn.linear_model import LogisticRegression

import bridgehead as bh
from bridgehead import errors
from bridgehead.auth.roles import Role
from bridgehead.client import Client
from tests.conftest import Member, Org

FEATURES = ["income", "debt", "age"]


def applicants(n: int, seed: int, shift: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "income": rng.normal(4000, 1000, n) * (1.4 if shift else 1.0),
            "debt": rng.normal(1500, 500, n) + (700 if shift else 0),
            "age": rng.integers(18, 80, n).astype(float),
        }
    )
    noise = rng.normal(0, 0.08, n)
    frame["defaulted"] = ((frame["debt"] / frame["income"] + noise) > 0.4).astype(int)
    return frame


@dataclass
class Deployed:
    engineer: Member
    model: LogisticRegression
    reference_version_id: str


@pytest.fixture
def engineer(orgs: Org) -> Member:
    return orgs.member(Role.ML_ENGINEER, unit="retail")


@pytest.fixture
def deployed(client: TestClient, engineer: Member, tmp_path: Path) -> Iterator[Deployed]:
    """credit-risk v1 trained on a dataset that is registered (uploaded, so profiled) and logged by its run,
    deployed to the endpoint "credit"."""
    train = applicants(3000, 1)
    path = tmp_path / "credit-train.parquet"
    train.to_parquet(path, index=False)
    api = Client("https://testserver", engineer.token, http=client)  # type: ignore[arg-type]
    dataset = api.create_dataset("credit-train")
    uploaded = api.upload_dataset_version(dataset.id, "credit-train.parquet", path)
    bh.set_client(api)
    bh.set_experiment("credit")
    model = LogisticRegression(max_iter=1000).fit(train[FEATURES], train["defaulted"])
    try:
        with bh.start_run():
            bh.log_dataset(path, name="credit-train")
            bh.log_metric("val_accuracy", 0.95)
            bh.log_model(
                model, "model", registered_model_name="credit-risk", input_example=train[FEATURES].head(3)
            )
        answer = client.post(
            "/api/v1/endpoints/credit/deploy",
            json={"model": "credit-risk", "version": "1", "environment": "production"},
            headers=engineer.headers,
        )
        assert answer.status_code == 200, answer.text
        yield Deployed(engineer, model, uploaded.id)
    finally:
        while bh.active_run() is not None:
            with contextlib.suppress(errors.BridgeheadError):
                bh.end_run()
        bh.set_client(None)


def score(client: TestClient, member: Member, frame: pd.DataFrame) -> list[str]:
    ids: list[str] = []
    for start in range(0, len(frame), 200):
        part = frame.iloc[start : start + 200][FEATURES]
        answer = client.post(
            "/serve/credit/predict", json={"records": part.to_dict("records")}, headers=member.headers
        )
        assert answer.status_code == 200, answer.text
        ids += answer.json()["ids"]
    client.app.state.predlog.flush()  # type: ignore[attr-defined]
    return ids


def label(client: TestClient, member: Member, ids: list[str], y: np.ndarray) -> None:
    items = [{"request_id": i, "kind": "label", "value": int(v)} for i, v in zip(ids, y, strict=True)]
    for start in range(0, len(items), 500):
        answer = client.post(
            "/serve/credit/feedback", json={"items": items[start : start + 500]}, headers=member.headers
        )
        assert answer.status_code == 200, answer.text


def run_and_wait(client: TestClient, member: Member, monitor_id: str) -> dict[str, Any]:
    queued = client.post(f"/api/v1/monitors/{monitor_id}/run", headers=member.headers)
    assert queued.status_code == 202, queued.text
    job_id = queued.json()["job_id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job = client.get(f"/api/v1/jobs/{job_id}", headers=member.headers).json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            assert job["status"] == "succeeded", job
            result: dict[str, Any] = job["result"]
            return result
        time.sleep(0.1)
    raise AssertionError("the monitor run did not finish within 60 s")


def test_a_monitor_finds_drift_and_decline_opens_an_incident_that_people_handle(
    client: TestClient, deployed: Deployed, orgs: Org
) -> None:
    eng = deployed.engineer
    current = applicants(1200, 7, shift=True)
    ids = score(client, eng, current)
    label(client, eng, ids[::2], current["defaulted"].to_numpy()[::2])

    created = client.post(
        "/api/v1/endpoints/credit/monitors",
        json={"name": "daily drift", "every_minutes": 1440, "window_minutes": 60},
        headers=eng.headers,
    )
    assert created.status_code == 201, created.text
    monitor = created.json()
    assert [r["metric"] for r in monitor["rules"]][:3] == ["dataset_drift", "psi_max", "accuracy_decline"]

    result = run_and_wait(client, eng, monitor["id"])
    assert result["status"] == "succeeded", result
    assert result["rows"] == 1200 and result["breaches"] >= 2 and result["incident_id"]

    run = client.get(f"/api/v1/monitor-runs/{result['run_id']}", headers=eng.headers).json()
    report = run["report"]
    # The reference is the version's training data, found by the digest its run logged.
    assert report["reference"]["dataset_version_id"] == deployed.reference_version_id
    assert report["reference"]["target"] == "defaulted"
    drifted = {c["column"] for c in report["drift"]["columns"] if c["drifted"]}
    assert drifted == {"income", "debt"}
    x = current[FEATURES]
    y = current["defaulted"].to_numpy()
    expected = float((deployed.model.predict(x)[::2] == y[::2]).mean())
    assert report["performance"]["current"]["accuracy"] == pytest.approx(expected, abs=1e-12)
    assert report["performance"]["baseline"]["accuracy"] == 0.95
    assert "age" in report["fairness"]  # tagged protected when the dataset was registered
    breached = {b["metric"] for b in run["breaches"]}
    assert {"dataset_drift", "accuracy_decline"} <= breached

    incident = client.get(f"/api/v1/incidents/{result['incident_id']}", headers=eng.headers).json()
    assert incident["status"] == "open" and incident["severity"] == "critical"
    assert incident["endpoint"] == "credit" and incident["run_ids"] == [result["run_id"]]

    # A second breaching run adds to the open incident instead of opening another.
    again = run_and_wait(client, eng, monitor["id"])
    assert again["incident_id"] == result["incident_id"]
    listed = client.get("/api/v1/incidents?status=open", headers=eng.headers).json()
    assert [i["id"] for i in listed] == [result["incident_id"]] and listed[0]["occurrences"] == 2

    # A business user may look but not acknowledge; the engineer acknowledges, then resolves.
    viewer = orgs.member(Role.BUSINESS_USER, unit="retail")
    assert client.get(f"/api/v1/incidents/{incident['id']}", headers=viewer.headers).status_code == 200
    refused = client.post(f"/api/v1/incidents/{incident['id']}/acknowledge", json={}, headers=viewer.headers)
    assert refused.status_code == 403
    acked = client.post(
        f"/api/v1/incidents/{incident['id']}/acknowledge", json={"note": "looking"}, headers=eng.headers
    ).json()
    assert acked["status"] == "acknowledged" and acked["seconds_to_acknowledge"] >= 0
    assert client.post(f"/api/v1/incidents/{incident['id']}/resolve", json={"resolution": ""},
                       headers=eng.headers).status_code == 422  # fmt: skip
    resolved = client.post(
        f"/api/v1/incidents/{incident['id']}/resolve",
        json={"resolution": "retrained on recent applications"},
        headers=eng.headers,
    ).json()
    assert (
        resolved["status"] == "resolved"
        and resolved["seconds_to_resolve"] >= resolved["seconds_to_acknowledge"]
    )

    # Every step is in the audit trail.
    chief = orgs.member(Role.CHIEF_AI_OFFICER)
    events = client.get("/api/v1/audit-events?object_type=incident", headers=chief.headers).json()["items"]
    assert {"incident.open", "incident.acknowledge", "incident.resolve"} <= {e["action"] for e in events}

    # The report downloads as one standalone HTML file (charts inline, nothing fetched) and as JSON.
    html = client.get(f"/api/v1/monitor-runs/{result['run_id']}/report.html", headers=eng.headers)
    assert html.status_code == 200 and "<svg" in html.text and "income" in html.text
    assert "http://" not in html.text and "https://" not in html.text and "<script" not in html.text
    as_json = client.get(f"/api/v1/monitor-runs/{result['run_id']}/report.json", headers=eng.headers).json()
    assert as_json["report"]["drift"]["n_drifted"] == 2


def test_a_stable_window_breaches_nothing(client: TestClient, deployed: Deployed) -> None:
    eng = deployed.engineer
    current = applicants(800, 21)
    ids = score(client, eng, current)
    label(client, eng, ids, current["defaulted"].to_numpy())
    monitor = client.post(
        "/api/v1/endpoints/credit/monitors",
        json={
            "name": "hourly",
            "every_minutes": 60,
            "window_minutes": 60,
            "rules": [{"metric": "dataset_drift", "op": ">=", "threshold": 1, "severity": "warning"}],
        },
        headers=eng.headers,
    ).json()
    result = run_and_wait(client, eng, monitor["id"])
    assert result["status"] == "succeeded" and result["breaches"] == 0 and result["incident_id"] is None
    assert client.get("/api/v1/incidents", headers=eng.headers).json() == []


def test_a_monitor_of_a_retired_endpoint_records_a_failed_run_and_the_worker_goes_on(
    client: TestClient, deployed: Deployed
) -> None:
    eng = deployed.engineer
    score(client, eng, applicants(100, 3))
    monitor = client.post(
        "/api/v1/endpoints/credit/monitors", json={"name": "m", "window_minutes": 60}, headers=eng.headers
    ).json()
    assert (
        client.post(
            "/api/v1/endpoints/credit/retire", json={"reason": "done"}, headers=eng.headers
        ).status_code
        == 200
    )
    failed = run_and_wait(client, eng, monitor["id"])
    assert failed["status"] == "failed" and "retired" in failed["error"]
    detail = client.get(f"/api/v1/monitors/{monitor['id']}", headers=eng.headers).json()
    assert detail["runs"][0]["status"] == "failed" and "retired" in detail["runs"][0]["error"]


def test_an_empty_window_gives_a_defined_result(client: TestClient, deployed: Deployed) -> None:
    eng = deployed.engineer
    monitor = client.post(
        "/api/v1/endpoints/credit/monitors", json={"name": "quiet", "window_minutes": 5}, headers=eng.headers
    ).json()
    result = run_and_wait(client, eng, monitor["id"])
    assert result["status"] == "succeeded" and result["rows"] == 0 and result["breaches"] == 0


def test_monitors_are_isolated_permissioned_and_validated(
    client: TestClient, deployed: Deployed, orgs: Org
) -> None:
    eng = deployed.engineer
    monitor = client.post(
        "/api/v1/endpoints/credit/monitors", json={"name": "m", "window_minutes": 60}, headers=eng.headers
    ).json()
    other = orgs.member(Role.ML_ENGINEER, unit="wholesale")
    assert client.get(f"/api/v1/monitors/{monitor['id']}", headers=other.headers).status_code == 404
    assert client.get("/api/v1/monitors", headers=other.headers).json() == []
    assert client.post(f"/api/v1/monitors/{monitor['id']}/run", headers=other.headers).status_code == 404
    assert (
        client.post(
            "/api/v1/endpoints/credit/monitors", json={"name": "x"}, headers=other.headers
        ).status_code
        == 404
    )
    viewer = orgs.member(Role.BUSINESS_USER, unit="retail")
    assert client.get(f"/api/v1/monitors/{monitor['id']}", headers=viewer.headers).status_code == 200
    assert (
        client.post(
            "/api/v1/endpoints/credit/monitors", json={"name": "y"}, headers=viewer.headers
        ).status_code
        == 403
    )
    assert client.post("/api/v1/endpoints/credit/monitors", json={"name": "z"}).status_code == 401

    bad = [
        {"name": "m"},  # taken
        {"name": "r1", "rules": [{"metric": "nonsense", "op": ">", "threshold": 1}]},
        {"name": "r2", "rules": [{"metric": "drift_share", "op": "!=", "threshold": 1}]},
        {"name": "r3", "every_minutes": 60, "every_rows": 1000},
        {"name": "r4", "settings": {"columns": {"income": {"test": "magic"}}}},
        {"name": "r5", "reference_version_id": "nosuchversion"},
        {"name": "r6", "window_minutes": 0},
    ]
    statuses = [
        client.post("/api/v1/endpoints/credit/monitors", json=body, headers=eng.headers).status_code
        for body in bad
    ]
    assert statuses == [409, 422, 422, 422, 422, 404, 422]
    assert client.get("/api/v1/monitors/nosuchmonitor", headers=eng.headers).status_code == 404
    assert (
        client.post("/api/v1/endpoints/nosuch/monitors", json={"name": "q"}, headers=eng.headers).status_code
        == 404
    )


def test_a_monitor_is_changed_field_by_field_and_null_only_clears_what_may_be_empty(
    client: TestClient, deployed: Deployed
) -> None:
    eng = deployed.engineer
    created = client.post(
        "/api/v1/endpoints/credit/monitors",
        json={"name": "m", "description": "daily drift", "every_minutes": 1440, "window_minutes": 60},
        headers=eng.headers,
    )
    assert created.status_code == 201, created.text
    url = f"/api/v1/monitors/{created.json()['id']}"

    changed = client.patch(url, json={"window_minutes": 120, "enabled": False}, headers=eng.headers)
    assert changed.status_code == 200, changed.text
    after = changed.json()
    assert (after["window_minutes"], after["enabled"]) == (120, False)
    assert (after["description"], after["every_minutes"]) == ("daily drift", 1440)  # not sent: kept

    # Fields a monitor always has refuse null with the field named (they were a 500 or a 409 once).
    for field in ("window_minutes", "rules", "enabled", "description"):
        refused = client.patch(url, json={field: None}, headers=eng.headers)
        assert refused.status_code == 422, (field, refused.text)
        assert refused.json()["error"]["code"] == "validation_failed"
        assert field in refused.text
    # ... and nothing changed.
    assert client.get(url, headers=eng.headers).json()["window_minutes"] == 120

    # Null clears what may be empty: the time schedule, when the monitor is given the other one instead.
    cleared = client.patch(url, json={"every_minutes": None, "every_rows": 5000}, headers=eng.headers)
    assert cleared.status_code == 200, cleared.text
    assert (cleared.json()["every_minutes"], cleared.json()["every_rows"]) == (None, 5000)

    # The service refuses it too, for callers other than the API.
    from bridgehead.auth.service import authenticate_token
    from bridgehead.monitoring import service

    with client.app.state.db.session(write=True) as session:  # type: ignore[attr-defined]
        principal = authenticate_token(session, eng.token)
        with pytest.raises(errors.ValidationFailed) as raised:
            service.update_monitor(session, principal, created.json()["id"], window_minutes=None)
    assert raised.value.details == {"fields": ["window_minutes"]}


class _Receiver:
    """A real HTTP receiver on loopback that records what it gets (a webhook endpoint of some chat tool)."""

    def __init__(self, status: int = 200) -> None:
        import http.server
        import threading

        received: list[tuple[dict[str, str], bytes]] = []
        self.received = received
        self.status = status
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                received.append(({k: v for k, v in self.headers.items()}, body))
                self.send_response(outer.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_an_opened_incident_is_delivered_to_a_signed_webhook(client: TestClient, deployed: Deployed) -> None:
    import json

    from bridgehead.monitoring import notify

    eng = deployed.engineer
    receiver = _Receiver()
    try:
        made = client.post(
            "/api/v1/notification-channels",
            json={"name": "ops chat", "kind": "webhook", "target": receiver.url, "min_severity": "warning"},
            headers=eng.headers,
        )
        assert made.status_code == 201, made.text
        secret = made.json()["secret"]
        assert (
            secret
            and "secret" not in client.get("/api/v1/notification-channels", headers=eng.headers).json()[0]
        )
        score(client, eng, applicants(600, 5, shift=True))
        monitor = client.post(
            "/api/v1/endpoints/credit/monitors", json={"name": "m", "window_minutes": 60}, headers=eng.headers
        ).json()
        result = run_and_wait(client, eng, monitor["id"])
        assert result["incident_id"]
        deadline = time.monotonic() + 30
        while not receiver.received and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(receiver.received) == 1
        headers, body = receiver.received[0]
        assert notify.verify(secret, headers.get("Bridgehead-Signature"), body)
        assert not notify.verify(secret + "x", headers.get("Bridgehead-Signature"), body)
        payload = json.loads(body)
        assert payload["event"] == "incident.opened" and payload["incident"]["id"] == result["incident_id"]
        assert payload["endpoint"] == "credit" and headers.get("Bridgehead-Event") == "incident.opened"
    finally:
        receiver.close()


def test_a_refusing_webhook_is_not_retried_and_bad_channels_are_refused(
    client: TestClient, deployed: Deployed
) -> None:
    eng = deployed.engineer
    for body in (
        {"name": "a", "kind": "webhook", "target": "ftp://example.org/x"},
        {"name": "b", "kind": "webhook", "target": "not a url"},
        {"name": "c", "kind": "email", "target": "nobody"},
        {"name": "d", "kind": "pager", "target": "x"},
    ):
        assert (
            client.post("/api/v1/notification-channels", json=body, headers=eng.headers).status_code == 422
        ), body


def test_the_scheduler_queues_due_monitors_once_and_by_row_count(
    client: TestClient, deployed: Deployed
) -> None:
    from sqlalchemy import select

    from bridgehead.jobs.models import Job
    from bridgehead.monitoring import service
    from bridgehead.monitoring.models import Monitor

    eng = deployed.engineer
    hourly = client.post(
        "/api/v1/endpoints/credit/monitors", json={"name": "hourly", "every_minutes": 60}, headers=eng.headers
    ).json()
    by_rows = client.post(
        "/api/v1/endpoints/credit/monitors", json={"name": "rows", "every_rows": 500}, headers=eng.headers
    ).json()
    db = client.app.state.db  # type: ignore[attr-defined]
    with db.session(write=True) as session:
        due = session.get(Monitor, hourly["id"]).next_run_ms
        assert service.tick(session, at_ms=due - 1) == []  # not yet, and no rows predicted
        assert service.tick(session, at_ms=due + 1) == [hourly["id"]]
        assert service.tick(session, at_ms=due + 2) == []  # queued once: its next run moved an hour on
        assert session.get(Monitor, hourly["id"]).next_run_ms == due + 3_600_000
    score(client, eng, applicants(600, 9))
    client.app.state.predlog.flush()  # type: ignore[attr-defined]  # aggregates follow the flush
    with db.session(write=True) as session:
        assert service.tick(session) == [by_rows["id"]]  # 600 new rows >= 500
        assert service.tick(session) == []
        kinds = session.scalars(select(Job.params).where(Job.kind == service.RUN_KIND)).all()
        assert sorted(p["trigger"] for p in kinds) == ["rows", "schedule"]


def test_a_failing_monitor_does_not_stop_the_others(client: TestClient, deployed: Deployed) -> None:
    eng = deployed.engineer
    score(client, eng, applicants(300, 4))
    good = client.post(
        "/api/v1/endpoints/credit/monitors", json={"name": "good", "window_minutes": 60}, headers=eng.headers
    ).json()
    broken = client.post(
        "/api/v1/endpoints/credit/monitors",
        json={"name": "broken", "window_minutes": 60},
        headers=eng.headers,
    ).json()
    # Its reference disappears from under it (a damaged profile): its run fails with the reason.
    from bridgehead.data.models import DatasetVersion
    from bridgehead.monitoring.models import Monitor

    db = client.app.state.db  # type: ignore[attr-defined]
    with db.session(write=True) as session:
        session.get(Monitor, broken["id"]).reference_version_id = "gone"
        assert session.get(DatasetVersion, deployed.reference_version_id) is not None
    first = run_and_wait(client, eng, broken["id"])
    second = run_and_wait(client, eng, good["id"])
    assert first["status"] == "failed" and "no longer exists" in first["error"]
    assert second["status"] == "succeeded" and second["rows"] == 300
