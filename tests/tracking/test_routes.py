"""The native tracking API (/api/v1/experiments, /api/v1/runs) over HTTP, on SQLite and PostgreSQL:
experiments, runs, log-batch, metric history, dataset inputs, search, artifacts (streaming, limits and path
traversal), permissions, business-unit isolation."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from bridgehead.app import create_app
from bridgehead.auth.roles import Role
from bridgehead.settings import Settings
from tests.conftest import Member, Org

V1 = "/api/v1"


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json() if response.content else None


def error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()["error"]
    assert body["code"] == code, body
    return body


@pytest.fixture
def ds(orgs: Org) -> Member:
    """A data scientist in the retail unit."""
    return orgs.member(Role.DATA_SCIENTIST, unit="retail")


def new_experiment(client: TestClient, who: Member, name: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = ok(
        client.post(f"{V1}/experiments", headers=who.headers, json={"name": name, **extra}), 201
    )
    return body


def new_run(client: TestClient, who: Member, experiment_id: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = ok(
        client.post(f"{V1}/runs", headers=who.headers, json={"experiment_id": experiment_id, **extra}), 201
    )
    return body


# --- experiments ------------------------------------------------------------------------------


def test_experiment_lifecycle(client: TestClient, ds: Member) -> None:
    exp = new_experiment(
        client, ds, "churn", description="first", use_case_id="uc-7", tags={"team": "retail"}
    )
    assert exp["business_unit_id"] == ds.business_unit_id
    assert exp["visibility"] == "private"
    assert exp["tags"] == {"team": "retail"}
    assert exp["use_case_id"] == "uc-7"
    assert exp["owner_id"] == ds.id
    eid = exp["id"]

    error(client.post(f"{V1}/experiments", headers=ds.headers, json={"name": "churn"}), 409, "already_exists")
    error(
        client.post(f"{V1}/experiments", headers=ds.headers, json={"name": "Default"}), 409, "already_exists"
    )
    error(client.get(f"{V1}/experiments/nope", headers=ds.headers), 404, "not_found")
    error(client.post(f"{V1}/experiments", headers=ds.headers, json={"name": ""}), 422, "validation_failed")
    error(
        client.post(f"{V1}/experiments", headers=ds.headers, json={"name": "x", "visibility": "public"}),
        422,
        "validation_failed",
    )

    renamed = ok(
        client.patch(
            f"{V1}/experiments/{eid}", headers=ds.headers, json={"name": "churn-v2", "description": "d"}
        )
    )
    assert (renamed["name"], renamed["description"]) == ("churn-v2", "d")
    new_experiment(client, ds, "other")
    error(
        client.patch(f"{V1}/experiments/{eid}", headers=ds.headers, json={"name": "other"}),
        409,
        "already_exists",
    )

    tagged = ok(
        client.put(f"{V1}/experiments/{eid}/tags/mlflow.note", headers=ds.headers, json={"value": " x "})
    )
    assert tagged["tags"] == {"team": "retail", "mlflow.note": " x "}
    assert ok(client.delete(f"{V1}/experiments/{eid}/tags/mlflow.note", headers=ds.headers), 204) is None
    error(client.delete(f"{V1}/experiments/{eid}/tags/mlflow.note", headers=ds.headers), 404, "not_found")

    ok(client.delete(f"{V1}/experiments/{eid}", headers=ds.headers), 204)
    active = ok(client.get(f"{V1}/experiments", headers=ds.headers))
    assert eid not in [e["id"] for e in active["items"]]
    deleted = ok(client.get(f"{V1}/experiments", headers=ds.headers, params={"view_type": "DELETED_ONLY"}))
    assert [e["id"] for e in deleted["items"]] == [eid]
    error(client.post(f"{V1}/runs", headers=ds.headers, json={"experiment_id": eid}), 400, "bad_request")
    assert (
        ok(client.post(f"{V1}/experiments/{eid}/restore", headers=ds.headers))["lifecycle_stage"] == "active"
    )
    error(client.delete(f"{V1}/experiments/0", headers=ds.headers), 403, "permission_denied")


def test_experiment_list_pages_and_filters(client: TestClient, ds: Member) -> None:
    for n in range(5):
        new_experiment(client, ds, f"page-{n}")
    first = ok(
        client.get(f"{V1}/experiments", headers=ds.headers, params={"name_like": "page-%", "limit": 2})
    )
    second = ok(
        client.get(
            f"{V1}/experiments", headers=ds.headers, params={"name_like": "page-%", "limit": 2, "offset": 2}
        )
    )
    assert first["total"] == second["total"] == 5
    assert [e["name"] for e in first["items"]] == ["page-4", "page-3"]  # newest first
    assert [e["name"] for e in second["items"]] == ["page-2", "page-1"]
    exact = ok(client.get(f"{V1}/experiments", headers=ds.headers, params={"name": "page-3"}))
    assert [e["name"] for e in exact["items"]] == ["page-3"] and exact["total"] == 1
    assert ok(client.get(f"{V1}/experiments", headers=ds.headers, params={"name": "absent"}))["items"] == []
    # The org-wide Default experiment is always there.
    everything = ok(client.get(f"{V1}/experiments", headers=ds.headers, params={"limit": 1000}))
    assert "Default" in [e["name"] for e in everything["items"]]
    error(client.get(f"{V1}/experiments", headers=ds.headers, params={"limit": 0}), 422, "validation_failed")


# --- runs -------------------------------------------------------------------------------------


def test_run_logging_round_trip(client: TestClient, ds: Member) -> None:
    eid = new_experiment(client, ds, "runs")["id"]
    run = new_run(client, ds, eid, name="first", tags={"team": "retail"})
    rid = run["id"]
    assert run["status"] == "RUNNING" and run["name"] == "first"
    assert run["tags"]["team"] == "retail" and run["end_time"] is None

    batch = {
        "metrics": [
            {"key": "loss", "value": 0.9, "step": 0, "timestamp_ms": 1000},
            {"key": "loss", "value": 0.5, "step": 1, "timestamp_ms": 2000},
            {"key": "loss", "value": "NaN", "step": 2, "timestamp_ms": 3000},
            {"key": "auc", "value": "Infinity", "step": 0},
        ],
        "params": {"C": "0.5", "model": " gbm "},
        "tags": {"stage": "dev"},
    }
    ok(client.post(f"{V1}/runs/{rid}/log-batch", headers=ds.headers, json=batch), 204)
    # Logging the same param value again is fine; changing it is not.
    ok(client.post(f"{V1}/runs/{rid}/log-batch", headers=ds.headers, json={"params": {"C": "0.5"}}), 204)
    error(
        client.post(f"{V1}/runs/{rid}/log-batch", headers=ds.headers, json={"params": {"C": "1"}}),
        400,
        "bad_request",
    )
    error(
        client.post(
            f"{V1}/runs/{rid}/log-batch",
            headers=ds.headers,
            json={"metrics": [{"key": "x", "value": 1, "step": 2**64}]},
        ),
        422,
        "validation_failed",
    )
    ok(
        client.post(
            f"{V1}/runs/{rid}/inputs",
            headers=ds.headers,
            json={
                "datasets": [
                    {
                        "name": "train",
                        "digest": "ab" * 32,
                        "source": "s3://b/train.parquet",
                        "schema": '{"columns": []}',
                        "context": "training",
                    }
                ]
            },
        ),
        204,
    )

    got = ok(client.get(f"{V1}/runs/{rid}", headers=ds.headers))
    assert got["params"] == {"C": "0.5", "model": " gbm "}
    assert got["tags"]["stage"] == "dev"
    latest = {m["key"]: m for m in got["metrics"]}
    assert latest["loss"]["step"] == 2 and latest["loss"]["value"] == "NaN"
    assert latest["auc"]["value"] == "Infinity"
    assert got["inputs"][0]["schema"] == '{"columns": []}'
    assert got["inputs"][0]["digest"] == "ab" * 32

    history = ok(client.get(f"{V1}/runs/{rid}/metrics/loss", headers=ds.headers))
    assert history["total"] == 3
    assert [p["step"] for p in history["items"]] == [0, 1, 2]
    assert history["items"][0]["value"] == 0.9 and history["items"][2]["value"] == "NaN"
    assert ok(client.get(f"{V1}/runs/{rid}/metrics/absent", headers=ds.headers)) == {
        "key": "absent",
        "items": [],
        "total": 0,
    }

    ended = ok(client.patch(f"{V1}/runs/{rid}", headers=ds.headers, json={"status": "FINISHED"}))
    assert ended["status"] == "FINISHED" and ended["end_time"] is not None
    error(
        client.patch(f"{V1}/runs/{rid}", headers=ds.headers, json={"status": "DONE"}),
        422,
        "validation_failed",
    )
    error(
        client.patch(f"{V1}/runs/{rid}", headers=ds.headers, json={"end_time": "2026-01-01T00:00:00"}),
        422,
        "validation_failed",
    )

    ok(client.delete(f"{V1}/runs/{rid}", headers=ds.headers), 204)
    error(
        client.post(f"{V1}/runs/{rid}/log-batch", headers=ds.headers, json={"tags": {"a": "b"}}),
        400,
        "bad_request",
    )
    assert ok(client.post(f"{V1}/runs/{rid}/restore", headers=ds.headers))["lifecycle_stage"] == "active"
    error(client.get(f"{V1}/runs/unknown", headers=ds.headers), 404, "not_found")

    child = new_run(client, ds, eid, parent_run_id=rid)
    assert child["parent_run_id"] == rid
    error(
        client.post(f"{V1}/runs", headers=ds.headers, json={"experiment_id": eid, "parent_run_id": "nope"}),
        404,
        "not_found",
    )
    # Default experiment ("0") takes runs from anyone who may write.
    assert new_run(client, ds, "0")["experiment_id"] == "0"


def test_search_filters_orders_and_pages(client: TestClient, ds: Member) -> None:
    eid = new_experiment(client, ds, "search")["id"]
    other = new_experiment(client, ds, "elsewhere")["id"]
    aucs = [0.55, 0.91, 0.72, 0.88, 0.60]
    ids = []
    for n, auc in enumerate(aucs):
        rid = new_run(client, ds, eid, name=f"r{n}")["id"]
        ids.append(rid)
        batch = {
            "metrics": [{"key": "auc", "value": auc}],
            "params": {"model": "gbm" if n % 2 else "lr"},
            "tags": {"team": "a"},
        }
        ok(client.post(f"{V1}/runs/{rid}/log-batch", headers=ds.headers, json=batch), 204)
    new_run(client, ds, other)

    def search(**body: Any) -> dict[str, Any]:
        result: dict[str, Any] = ok(
            client.post(f"{V1}/runs/search", headers=ds.headers, json={"experiment_ids": [eid], **body})
        )
        return result

    good = search(filter="metrics.auc > 0.7", order_by=["metrics.auc DESC"])
    assert [r["name"] for r in good["items"]] == ["r1", "r3", "r2"] and good["total"] == 3
    gbm = search(filter="params.model = 'gbm' AND metrics.auc >= 0.9")
    assert [r["name"] for r in gbm["items"]] == ["r1"]
    assert search(filter="tags.team = 'a'")["total"] == 5
    assert search(filter="attributes.run_name LIKE 'r%' AND attributes.status = 'RUNNING'")["total"] == 5
    assert search(filter=f"attributes.run_id IN ('{ids[0]}', '{ids[4]}')")["total"] == 2

    page = search(order_by=["metrics.auc ASC"], limit=2, offset=2)
    assert page["total"] == 5
    assert [r["name"] for r in page["items"]] == ["r2", "r3"]
    assert ok(client.post(f"{V1}/runs/search", headers=ds.headers, json={}))["total"] == 6

    for bad in (
        "metrics.auc >",
        "metrics.auc > 'high'",
        "params.model = 3",
        "nonsense.key = 'x'",
        "attributes.start_time LIKE '1%'",
        "attributes.run_name = 5",
        "metrics.auc IN ('1')",
        "metrics.auc > 1 OR metrics.auc < 0",
    ):
        error(
            client.post(
                f"{V1}/runs/search", headers=ds.headers, json={"experiment_ids": [eid], "filter": bad}
            ),
            400,
            "bad_request",
        )
    error(
        client.post(f"{V1}/runs/search", headers=ds.headers, json={"order_by": ["bogus"]}), 400, "bad_request"
    )
    error(
        client.post(f"{V1}/runs/search", headers=ds.headers, json={"limit": 5000}), 422, "validation_failed"
    )


# --- artifacts --------------------------------------------------------------------------------


def artifact_dir(settings: Settings, run: dict[str, Any]) -> Path:
    return Path(settings.resolved_artifact_root) / run["artifact_uri"].removeprefix("mlflow-artifacts:/")


def test_artifacts_stream_up_and_down(client: TestClient, ds: Member, settings: Settings) -> None:
    run = new_run(client, ds, new_experiment(client, ds, "files")["id"])
    rid = run["id"]
    payload = os.urandom(300_000)

    def chunks() -> Any:
        for start in range(0, len(payload), 65_536):
            yield payload[start : start + 65_536]

    written = ok(
        client.put(f"{V1}/runs/{rid}/artifacts/model/weights.bin", headers=ds.headers, content=chunks()), 201
    )
    assert written == {"path": "model/weights.bin", "size": len(payload)}
    ok(client.put(f"{V1}/runs/{rid}/artifacts/notes.txt", headers=ds.headers, content=b"hello"), 201)
    assert (artifact_dir(settings, run) / "model" / "weights.bin").read_bytes() == payload

    down = client.get(f"{V1}/runs/{rid}/artifacts/model/weights.bin", headers=ds.headers)
    assert down.status_code == 200 and down.content == payload
    assert down.headers["content-type"] == "application/octet-stream"
    assert "attachment" in down.headers["content-disposition"]

    root = ok(client.get(f"{V1}/runs/{rid}/artifacts", headers=ds.headers))
    assert [(f["path"], f["is_dir"]) for f in root["files"]] == [("model", True), ("notes.txt", False)]
    sub = ok(client.get(f"{V1}/runs/{rid}/artifacts", headers=ds.headers, params={"path": "model"}))
    assert sub["files"] == [{"path": "model/weights.bin", "is_dir": False, "size": len(payload)}]

    error(client.get(f"{V1}/runs/{rid}/artifacts/missing.txt", headers=ds.headers), 404, "not_found")
    error(client.get(f"{V1}/runs/{rid}/artifacts/model", headers=ds.headers), 404, "not_found")
    # A file cannot become a directory, nor a directory a file.
    error(
        client.put(f"{V1}/runs/{rid}/artifacts/notes.txt/inner", headers=ds.headers, content=b"x"),
        409,
        "conflict",
    )
    error(client.put(f"{V1}/runs/{rid}/artifacts/model", headers=ds.headers, content=b"x"), 409, "conflict")
    assert (artifact_dir(settings, run) / "notes.txt").read_bytes() == b"hello"


def test_upload_size_limit(client: TestClient, app: FastAPI, ds: Member, settings: Settings) -> None:
    app.state.settings = settings.model_copy(update={"max_artifact_bytes": 1000})
    run = new_run(client, ds, new_experiment(client, ds, "limits")["id"])
    rid = run["id"]
    ok(client.put(f"{V1}/runs/{rid}/artifacts/fits.bin", headers=ds.headers, content=b"x" * 1000), 201)
    body = error(
        client.put(f"{V1}/runs/{rid}/artifacts/big.bin", headers=ds.headers, content=b"x" * 1001),
        413,
        "payload_too_large",
    )
    assert body["details"]["limit_bytes"] == 1000
    # Without Content-Length (chunked), the limit is found while streaming and the partial file removed.
    error(
        client.put(
            f"{V1}/runs/{rid}/artifacts/streamed.bin",
            headers=ds.headers,
            content=iter([b"x" * 600, b"y" * 600]),
        ),
        413,
        "payload_too_large",
    )
    assert sorted(p.name for p in artifact_dir(settings, run).iterdir()) == ["fits.bin"]


def test_artifact_uploads_are_not_held_to_the_request_body_limit(
    ds: Member, settings: Settings, client: TestClient
) -> None:
    small_bodies = settings.model_copy(update={"max_body_bytes": 1024})
    with TestClient(create_app(small_bodies), base_url="https://testserver") as other:
        eid = ok(other.post(f"{V1}/experiments", headers=ds.headers, json={"name": "big"}), 201)["id"]
        rid = ok(other.post(f"{V1}/runs", headers=ds.headers, json={"experiment_id": eid}), 201)["id"]
        ok(other.put(f"{V1}/runs/{rid}/artifacts/a.bin", headers=ds.headers, content=b"z" * 50_000), 201)
        error(
            other.post(f"{V1}/experiments", headers=ds.headers, json={"name": "x" * 2000}),
            413,
            "payload_too_large",
        )


def test_artifact_paths_cannot_escape_the_root(
    client: TestClient, ds: Member, settings: Settings, tmp_path: Path
) -> None:
    run = new_run(client, ds, new_experiment(client, ds, "escape")["id"])
    rid = run["id"]
    ok(client.put(f"{V1}/runs/{rid}/artifacts/ok.txt", headers=ds.headers, content=b"fine"), 201)
    outside = tmp_path / "outside"
    outside.mkdir()
    (artifact_dir(settings, run) / "link").symlink_to(outside, target_is_directory=True)
    attempts = [
        "%2e%2e/%2e%2e/%2e%2e/%2e%2e/escaped.txt",
        "%2E%2E%2F%2E%2E%2Fescaped.txt",
        "..%5C..%5Cescaped.txt",
        "a\\..\\..\\escaped.txt",
        "/" + str(tmp_path / "escaped.txt").lstrip("/"),
        "link/escaped.txt",
        "C:/escaped.txt",
        "a/%00/escaped.txt",
    ]
    for path in attempts:
        response = client.put(f"{V1}/runs/{rid}/artifacts/{path}", headers=ds.headers, content=b"owned")
        error(response, 400, "bad_request")
        # Reading through the same paths is refused as well.
        error(client.get(f"{V1}/runs/{rid}/artifacts/{path}", headers=ds.headers), 400, "bad_request")
    # httpx removes literal dot segments before sending; whatever arrives must not write outside.
    client.put(f"{V1}/runs/{rid}/artifacts/../../../../escaped.txt", headers=ds.headers, content=b"owned")
    error(
        client.get(f"{V1}/runs/{rid}/artifacts", headers=ds.headers, params={"path": "../.."}),
        400,
        "bad_request",
    )
    error(
        client.get(f"{V1}/runs/{rid}/artifacts", headers=ds.headers, params={"path": "link"}),
        400,
        "bad_request",
    )
    assert list(outside.iterdir()) == []
    root = Path(settings.resolved_artifact_root)
    stray = [p for p in tmp_path.rglob("escaped.txt")] + [
        p for p in root.rglob("*") if p.name == "escaped.txt"
    ]
    assert stray == []


# --- permissions and isolation ----------------------------------------------------------------


def test_roles_without_tracking_write_can_read_only(client: TestClient, orgs: Org, ds: Member) -> None:
    eid = new_experiment(client, ds, "shared", visibility="organization")["id"]
    rid = new_run(client, ds, eid)["id"]
    viewer = orgs.member(Role.BUSINESS_USER, unit="retail")
    assert ok(client.get(f"{V1}/runs/{rid}", headers=viewer.headers))["id"] == rid
    for method, path, body in (
        ("POST", f"{V1}/experiments", {"name": "nope"}),
        ("POST", f"{V1}/runs", {"experiment_id": eid}),
        ("POST", f"{V1}/runs/{rid}/log-batch", {"params": {"a": "b"}}),
        ("PATCH", f"{V1}/runs/{rid}", {"status": "KILLED"}),
        ("DELETE", f"{V1}/runs/{rid}", None),
    ):
        body_ = error(
            client.request(method, path, headers=viewer.headers, json=body), 403, "permission_denied"
        )
        assert body_["details"]["action"] == "tracking.write"
    error(
        client.put(f"{V1}/runs/{rid}/artifacts/x.txt", headers=viewer.headers, content=b"x"),
        403,
        "permission_denied",
    )
    error(client.get(f"{V1}/experiments"), 401, "unauthenticated")


def test_business_units_are_isolated(client: TestClient, orgs: Org, ds: Member, admin: Member) -> None:
    eid = new_experiment(client, ds, "retail-secret")["id"]
    run = new_run(client, ds, eid)
    rid = run["id"]
    ok(client.put(f"{V1}/runs/{rid}/artifacts/data.csv", headers=ds.headers, content=b"a,b"), 201)
    outsider = orgs.member(Role.DATA_SCIENTIST, unit="wealth")

    error(client.get(f"{V1}/experiments/{eid}", headers=outsider.headers), 404, "not_found")
    names = [
        e["name"]
        for e in ok(client.get(f"{V1}/experiments", headers=outsider.headers, params={"limit": 1000}))[
            "items"
        ]
    ]
    assert "retail-secret" not in names
    assert (
        ok(client.get(f"{V1}/experiments", headers=outsider.headers, params={"name": "retail-secret"}))[
            "items"
        ]
        == []
    )
    error(client.get(f"{V1}/runs/{rid}", headers=outsider.headers), 404, "not_found")
    error(client.get(f"{V1}/runs/{rid}/metrics/x", headers=outsider.headers), 404, "not_found")
    error(client.get(f"{V1}/runs/{rid}/artifacts", headers=outsider.headers), 404, "not_found")
    error(client.get(f"{V1}/runs/{rid}/artifacts/data.csv", headers=outsider.headers), 404, "not_found")
    error(
        client.put(f"{V1}/runs/{rid}/artifacts/x.csv", headers=outsider.headers, content=b"x"),
        404,
        "not_found",
    )
    error(client.post(f"{V1}/runs", headers=outsider.headers, json={"experiment_id": eid}), 404, "not_found")
    error(
        client.patch(f"{V1}/experiments/{eid}", headers=outsider.headers, json={"name": "mine"}),
        404,
        "not_found",
    )
    found = ok(client.post(f"{V1}/runs/search", headers=outsider.headers, json={"experiment_ids": [eid]}))
    assert found == {"items": [], "total": 0}
    # Creating in another unit is refused as if it did not exist.
    error(
        client.post(
            f"{V1}/experiments",
            headers=outsider.headers,
            json={"name": "x", "business_unit_id": ds.business_unit_id},
        ),
        404,
        "not_found",
    )
    # Central staff see every unit.
    assert ok(client.get(f"{V1}/runs/{rid}", headers=admin.headers))["id"] == rid

    # Shared with the organization: readable by everyone, changed only by its own unit.
    shared = new_experiment(client, ds, "retail-shared", visibility="organization")["id"]
    shared_run = new_run(client, ds, shared)["id"]
    assert ok(client.get(f"{V1}/experiments/{shared}", headers=outsider.headers))["name"] == "retail-shared"
    assert ok(client.get(f"{V1}/runs/{shared_run}", headers=outsider.headers))["id"] == shared_run
    error(
        client.patch(f"{V1}/experiments/{shared}", headers=outsider.headers, json={"name": "mine"}),
        403,
        "permission_denied",
    )
    error(client.delete(f"{V1}/experiments/{shared}", headers=outsider.headers), 403, "permission_denied")
    error(
        client.post(f"{V1}/runs", headers=outsider.headers, json={"experiment_id": shared}),
        403,
        "permission_denied",
    )
    error(
        client.post(f"{V1}/runs/{shared_run}/log-batch", headers=outsider.headers, json={"tags": {"a": "b"}}),
        403,
        "permission_denied",
    )
    error(
        client.put(f"{V1}/runs/{shared_run}/artifacts/x", headers=outsider.headers, content=b"x"),
        403,
        "permission_denied",
    )
    # Runs someone logged to the Default experiment stay theirs to write.
    default_run = new_run(client, outsider, "0")["id"]
    ok(
        client.post(
            f"{V1}/runs/{default_run}/log-batch", headers=outsider.headers, json={"tags": {"a": "b"}}
        ),
        204,
    )
    error(
        client.post(f"{V1}/runs/{default_run}/log-batch", headers=ds.headers, json={"tags": {"a": "c"}}),
        403,
        "permission_denied",
    )


def test_nan_and_huge_values_survive(client: TestClient, ds: Member) -> None:
    rid = new_run(client, ds, new_experiment(client, ds, "edge")["id"])["id"]
    points = [{"key": "v", "value": v, "step": n} for n, v in enumerate([1e308, -1e308, "-Infinity", 0])]
    ok(client.post(f"{V1}/runs/{rid}/log-batch", headers=ds.headers, json={"metrics": points}), 204)
    values = [p["value"] for p in ok(client.get(f"{V1}/runs/{rid}/metrics/v", headers=ds.headers))["items"]]
    assert values[:2] == [1e308, -1e308] and values[2] == "-Infinity" and values[3] == 0
    assert math.isinf(float(values[2]))
