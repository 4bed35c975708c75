"""Lineage across domains (dataset -> derived dataset, dataset -> run -> model version), tracking inputs
registered as dataset versions, and the OpenLineage export. SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

import httpx2
from fastapi.testclient import TestClient

from bridgehead.auth.roles import Role
from tests.conftest import Member, Org

V1 = "/api/v1"
CSV = b"age,income\n30,1000\n41,2000\n52,3000\n"


def ok(response: httpx2.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json() if response.content else None


def _pipeline(client: TestClient, who: Member) -> dict[str, Any]:
    """raw (uploaded) -> clean (derived, registered by a client) -> run (logs clean as input) -> model v1."""
    h = who.headers
    raw_ds = ok(client.post(f"{V1}/datasets", headers=h, json={"name": "loans-raw"}), 201)
    raw = ok(client.put(f"{V1}/datasets/{raw_ds['id']}/upload/raw.csv", headers=h, content=CSV), 201)
    clean_ds = ok(client.post(f"{V1}/datasets", headers=h, json={"name": "loans-clean"}), 201)
    clean_digest = hashlib.sha256(b"clean bytes").hexdigest()
    body = {
        "digest": clean_digest,
        "location": "s3://lake/loans/clean.parquet",
        "format": "parquet",
        "row_count": 3,
        "columns": [{"name": "age", "type": "int64"}, {"name": "income", "type": "double"}],
        "parents": [{"version_id": raw["id"], "transformation": "drop duplicates, fix dates"}],
    }
    clean = ok(client.post(f"{V1}/datasets/{clean_ds['id']}/versions", headers=h, json=body), 201)
    experiment = ok(
        client.post(f"{V1}/experiments", headers=h, json={"name": f"loans-{uuid.uuid4().hex[:6]}"}), 201
    )
    run = ok(client.post(f"{V1}/runs", headers=h, json={"experiment_id": experiment["id"]}), 201)
    inputs = {"datasets": [{"name": "loans-clean", "digest": clean_digest, "context": "training"}]}
    ok(client.post(f"{V1}/runs/{run['id']}/inputs", headers=h, json=inputs), 204)
    manifest = b'{"flavor": "onnx", "files": ["model.onnx"], "meta": {}}'
    for path, data in (("model/bridgehead-model.json", manifest), ("model/model.onnx", b"onnx")):
        ok(client.put(f"{V1}/runs/{run['id']}/artifacts/{path}", headers=h, content=data), 201)
    name = f"scorer-{uuid.uuid4().hex[:6]}"
    ok(client.post(f"{V1}/registered-models", headers=h, json={"name": name}), 201)
    model = ok(
        client.post(
            f"{V1}/registered-models/{name}/versions",
            headers=h,
            json={"run_id": run["id"], "artifact_path": "model"},
        ),
        201,
    )
    return {"raw_ds": raw_ds, "raw": raw, "clean_ds": clean_ds, "clean": clean, "run": run, "model": model}


def test_lineage_runs_from_raw_data_to_the_model(client: TestClient, orgs: Org) -> None:
    who = orgs.member(Role.DATA_SCIENTIST, unit="retail")
    p = _pipeline(client, who)
    graph = ok(
        client.get(f"{V1}/lineage", headers=who.headers, params={"node": f"dataset:{p['raw_ds']['id']}"})
    )
    ids = {n["id"]: n for n in graph["nodes"]}
    raw, clean, run = (
        f"dataset_version:{p['raw']['id']}",
        f"dataset_version:{p['clean']['id']}",
        f"run:{p['run']['id']}",
    )
    models = [n for n in graph["nodes"] if n["type"] == "model_version"]
    assert raw in ids and clean in ids and run in ids and len(models) == 1
    edges = {(e["source"], e["target"], e["kind"], e["label"]) for e in graph["edges"]}
    assert (raw, clean, "derived", "drop duplicates, fix dates") in edges
    assert (clean, run, "input", "training") in edges
    assert (run, models[0]["id"], "produced", "") in edges
    # Depth limits the walk: one edge from the model reaches its run, not the data.
    near = ok(client.get(f"{V1}/lineage", headers=who.headers, params={"node": models[0]["id"], "depth": 1}))
    assert {n["type"] for n in near["nodes"]} == {"model_version", "run"}
    # The derived version lists its parent.
    assert p["clean"]["parents"] == [
        {"version_id": p["raw"]["id"], "transformation": "drop duplicates, fix dates"}
    ]


def test_logged_inputs_become_dataset_versions(client: TestClient, orgs: Org) -> None:
    who = orgs.member(Role.DATA_SCIENTIST, unit="retail")
    h = who.headers
    experiment = ok(client.post(f"{V1}/experiments", headers=h, json={"name": "inputs"}), 201)
    run = ok(client.post(f"{V1}/runs", headers=h, json={"experiment_id": experiment["id"]}), 201)
    digest = hashlib.sha256(b"features").hexdigest()
    mlflow_style = {
        "name": "features",
        "digest": "3f2a91bc",  # mlflow's short content hash
        "schema": json.dumps(
            {"mlflow_colspec": [{"type": "double", "name": "x"}, {"type": "string", "name": "email"}]}
        ),
        "profile": json.dumps({"num_rows": 120, "num_elements": 240}),
    }
    sdk_style = {
        "name": "features",
        "digest": digest,
        "schema": json.dumps({"columns": [{"name": "x", "type": "f8"}]}),
    }
    ok(
        client.post(f"{V1}/runs/{run['id']}/inputs", headers=h, json={"datasets": [mlflow_style, sdk_style]}),
        204,
    )
    listed = ok(client.get(f"{V1}/datasets", headers=h, params={"q": "features"}))["items"]
    assert [d["name"] for d in listed] == ["features"]
    detail = ok(client.get(f"{V1}/datasets/{listed[0]['id']}", headers=h))
    versions = {v["digest"]: v for v in detail["versions"]}
    assert set(versions) == {"3f2a91bc", digest}
    assert versions["3f2a91bc"]["row_count"] == 120 and versions["3f2a91bc"]["origin"] == "tracking"
    assert versions["3f2a91bc"]["column_tags"]["email"]["tags"] == ["pii"]  # names are checked on the server
    # Logging the same input again adds nothing.
    ok(client.post(f"{V1}/runs/{run['id']}/inputs", headers=h, json={"datasets": [sdk_style]}), 204)
    assert len(ok(client.get(f"{V1}/datasets/{listed[0]['id']}", headers=h))["versions"]) == 2
    # A digest that is no content hash stays a plain run input.
    ok(
        client.post(
            f"{V1}/runs/{run['id']}/inputs", headers=h, json={"datasets": [{"name": "odd", "digest": "v1"}]}
        ),
        204,
    )
    assert ok(client.get(f"{V1}/datasets", headers=h, params={"q": "odd"}))["items"] == []


def test_openlineage_export(client: TestClient, orgs: Org) -> None:
    who = orgs.member(Role.DATA_SCIENTIST, unit="retail")
    p = _pipeline(client, who)
    events = ok(
        client.get(
            f"{V1}/lineage/openlineage",
            headers=who.headers,
            params={"node": f"run:{p['run']['id']}", "depth": 3},
        )
    )
    assert {e["job"]["namespace"] for e in events} == {
        "bridgehead://experiments",
        "bridgehead://transformations",
    }
    for event in events:
        assert event["schemaURL"].startswith("https://openlineage.io/spec/2-0-2/OpenLineage.json")
        assert event["producer"].startswith("https://")
        uuid.UUID(event["run"]["runId"])
        assert event["eventTime"].endswith("Z")
        assert event["eventType"] in ("START", "RUNNING", "COMPLETE", "FAIL", "ABORT")
    run_event = next(e for e in events if e["job"]["namespace"] == "bridgehead://experiments")
    assert [i["name"] for i in run_event["inputs"]] == ["loans-clean@v1"]
    fields = run_event["inputs"][0]["facets"]["schema"]["fields"]
    assert fields == [{"name": "age", "type": "int64"}, {"name": "income", "type": "double"}]
    assert run_event["outputs"][0]["name"] == f"{p['model']['name']}/1"
    derivation = next(e for e in events if e["job"]["namespace"] == "bridgehead://transformations")
    assert derivation["job"]["name"] == "drop duplicates, fix dates"
    assert [i["name"] for i in derivation["inputs"]] == ["loans-raw@v1"]


def test_lineage_shows_only_what_the_caller_may_see(client: TestClient, orgs: Org) -> None:
    who = orgs.member(Role.DATA_SCIENTIST, unit="retail")
    p = _pipeline(client, who)
    outsider = orgs.member(Role.DATA_SCIENTIST, unit="wholesale")
    for node in (
        f"dataset:{p['raw_ds']['id']}",
        f"run:{p['run']['id']}",
        f"dataset_version:{p['clean']['id']}",
    ):
        assert client.get(f"{V1}/lineage", headers=outsider.headers, params={"node": node}).status_code == 404
    assert client.get(f"{V1}/lineage", headers=who.headers, params={"node": "table:x"}).status_code == 422
