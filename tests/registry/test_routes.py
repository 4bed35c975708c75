"""The native registry API (/api/v1/registered-models) over HTTP, on SQLite and PostgreSQL: models,
versions registered from a run's artifacts, aliases, files, lineage, trusted loads, permissions and
business-unit isolation."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from bridgehead.auth.roles import Role
from bridgehead.registry.flavors import directory_sha256
from bridgehead.settings import Settings
from tests.conftest import Member, Org

V1 = "/api/v1"
MODELS = f"{V1}/registered-models"
MANIFEST = {
    "flavor": "sklearn",
    "files": ["model.skops"],
    "meta": {"file": "model.skops"},
    "signature": {"inputs": [{"name": "age", "type": "int64"}]},
}


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
    return orgs.member(Role.DATA_SCIENTIST, unit="retail")


def logged_model(
    client: TestClient, who: Member, *, manifest: dict[str, Any] | None = None, visibility: str = "private"
) -> dict[str, Any]:
    """A run with metrics, params and a dataset input, and a model directory ``model/`` in its artifacts."""
    exp = ok(
        client.post(
            f"{V1}/experiments",
            headers=who.headers,
            json={"name": f"exp-{uuid.uuid4().hex[:8]}", "visibility": visibility},
        ),
        201,
    )
    run: dict[str, Any] = ok(
        client.post(f"{V1}/runs", headers=who.headers, json={"experiment_id": exp["id"]}), 201
    )
    rid = run["id"]
    batch = {"metrics": [{"key": "auc", "value": 0.87}], "params": {"C": "0.5"}}
    ok(client.post(f"{V1}/runs/{rid}/log-batch", headers=who.headers, json=batch), 204)
    dataset = {
        "name": "train",
        "digest": "cd" * 32,
        "source": "s3://bank/train.parquet",
        "context": "training",
    }
    ok(client.post(f"{V1}/runs/{rid}/inputs", headers=who.headers, json={"datasets": [dataset]}), 204)
    files = {
        "model/bridgehead-model.json": json.dumps(manifest or MANIFEST).encode(),
        "model/model.skops": b"\x00weights\x01" * 100,
    }
    for path, data in files.items():
        ok(client.put(f"{V1}/runs/{rid}/artifacts/{path}", headers=who.headers, content=data), 201)
    run["files"] = files
    return run


def test_model_version_alias_lifecycle(client: TestClient, ds: Member, tmp_path: Path) -> None:
    run = logged_model(client, ds)
    rid = run["id"]
    created = ok(
        client.post(
            MODELS, headers=ds.headers, json={"name": "churn", "description": "d", "tags": {"t": "1"}}
        ),
        201,
    )
    assert created["versions"] == [] and created["aliases"] == {} and created["latest_version"] is None
    assert created["business_unit_id"] == ds.business_unit_id
    error(client.post(MODELS, headers=ds.headers, json={"name": "churn"}), 409, "already_exists")
    error(client.post(MODELS, headers=ds.headers, json={"name": "a/b"}), 422, "validation_failed")

    v1 = ok(
        client.post(
            f"{MODELS}/churn/versions", headers=ds.headers, json={"run_id": rid, "artifact_path": "model"}
        ),
        201,
    )
    assert v1["version"] == 1 and v1["flavor"] == "sklearn"
    assert v1["source"] == f"runs:/{rid}/model" and v1["run_id"] == rid
    assert v1["signature"] == MANIFEST["signature"]
    assert v1["metrics"] == {"auc": 0.87}
    assert v1["datasets"][0]["digest"] == "cd" * 32
    # The digest is the one a client computes over the same files.
    local = tmp_path / "model"
    for path, data in run["files"].items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(data)
    assert v1["sha256"] == directory_sha256(local)

    v2 = ok(
        client.post(f"{MODELS}/churn/versions", headers=ds.headers, json={"source": f"runs:/{rid}/model"}),
        201,
    )
    assert v2["version"] == 2 and v2["run_id"] == rid
    error(
        client.post(f"{MODELS}/churn/versions", headers=ds.headers, json={"run_id": rid}),
        422,
        "validation_failed",
    )
    error(
        client.post(
            f"{MODELS}/churn/versions", headers=ds.headers, json={"run_id": rid, "artifact_path": "nothing"}
        ),
        400,
        "bad_request",
    )
    error(
        client.post(
            f"{MODELS}/churn/versions", headers=ds.headers, json={"run_id": rid, "artifact_path": "../x"}
        ),
        400,
        "bad_request",
    )
    error(
        client.post(f"{MODELS}/churn/versions", headers=ds.headers, json={"source": "file:///etc"}),
        400,
        "bad_request",
    )
    error(
        client.post(f"{MODELS}/nope/versions", headers=ds.headers, json={"source": f"runs:/{rid}/model"}),
        404,
        "not_found",
    )

    alias = ok(client.put(f"{MODELS}/churn/aliases/champion", headers=ds.headers, json={"version": 1}))
    assert alias == {"name": "churn", "alias": "champion", "version": 1}
    assert ok(client.get(f"{MODELS}/churn/aliases/champion", headers=ds.headers))["version"] == 1
    ok(client.put(f"{MODELS}/churn/aliases/champion", headers=ds.headers, json={"version": 2}))
    assert ok(client.get(f"{MODELS}/churn/aliases/champion", headers=ds.headers))["aliases"] == ["champion"]
    error(
        client.put(f"{MODELS}/churn/aliases/champion", headers=ds.headers, json={"version": 9}),
        404,
        "not_found",
    )
    error(
        client.put(f"{MODELS}/churn/aliases/latest", headers=ds.headers, json={"version": 1}),
        400,
        "bad_request",
    )
    error(client.get(f"{MODELS}/churn/aliases/missing", headers=ds.headers), 404, "not_found")

    detail = ok(client.get(f"{MODELS}/churn", headers=ds.headers))
    assert [v["version"] for v in detail["versions"]] == [2, 1]
    assert detail["aliases"] == {"champion": 2} and detail["latest_version"] == 2

    updated = ok(
        client.patch(
            f"{MODELS}/churn",
            headers=ds.headers,
            json={"description": "new", "tags": {"x": "y"}, "use_case_id": "uc-1"},
        )
    )
    assert (updated["description"], updated["tags"], updated["use_case_id"]) == ("new", {"x": "y"}, "uc-1")
    v1u = ok(
        client.patch(
            f"{MODELS}/churn/versions/1",
            headers=ds.headers,
            json={"description": "baseline", "tags": {"k": "v"}},
        )
    )
    assert (v1u["description"], v1u["tags"]) == ("baseline", {"k": "v"})
    listed = ok(client.get(f"{MODELS}/churn/versions", headers=ds.headers, params={"limit": 1}))
    assert listed["total"] == 2 and [v["version"] for v in listed["items"]] == [2]
    page = ok(client.get(MODELS, headers=ds.headers, params={"name_like": "CH%"}))
    assert [m["name"] for m in page["items"]] == ["churn"] and page["total"] == 1

    # Deleting the version the alias points at removes the alias.
    ok(client.delete(f"{MODELS}/churn/versions/2", headers=ds.headers), 204)
    error(client.get(f"{MODELS}/churn/versions/2", headers=ds.headers), 404, "not_found")
    assert ok(client.get(f"{MODELS}/churn", headers=ds.headers))["aliases"] == {}
    ok(client.put(f"{MODELS}/churn/aliases/champion", headers=ds.headers, json={"version": 1}))
    ok(client.delete(f"{MODELS}/churn/aliases/champion", headers=ds.headers), 204)
    error(client.delete(f"{MODELS}/churn/aliases/champion", headers=ds.headers), 404, "not_found")
    ok(client.delete(f"{MODELS}/churn", headers=ds.headers), 204)
    error(client.get(f"{MODELS}/churn", headers=ds.headers), 404, "not_found")


def test_files_download_and_lineage(client: TestClient, ds: Member) -> None:
    run = logged_model(client, ds)
    ok(client.post(MODELS, headers=ds.headers, json={"name": "fraud"}), 201)
    ok(
        client.post(
            f"{MODELS}/fraud/versions",
            headers=ds.headers,
            json={"run_id": run["id"], "artifact_path": "model"},
        ),
        201,
    )

    files = ok(client.get(f"{MODELS}/fraud/versions/1/artifacts", headers=ds.headers))["files"]
    assert files == [
        {"path": "bridgehead-model.json", "size": len(run["files"]["model/bridgehead-model.json"])},
        {"path": "model.skops", "size": len(run["files"]["model/model.skops"])},
    ]
    down = client.get(
        f"{MODELS}/fraud/versions/1/download", headers=ds.headers, params={"path": "model.skops"}
    )
    assert down.status_code == 200
    assert hashlib.sha256(down.content).digest() == hashlib.sha256(run["files"]["model/model.skops"]).digest()
    error(
        client.get(f"{MODELS}/fraud/versions/1/download", headers=ds.headers, params={"path": "../../x"}),
        400,
        "bad_request",
    )
    error(
        client.get(f"{MODELS}/fraud/versions/1/download", headers=ds.headers, params={"path": "absent"}),
        404,
        "not_found",
    )
    error(client.get(f"{MODELS}/fraud/versions/7/artifacts", headers=ds.headers), 404, "not_found")

    lineage = ok(client.get(f"{MODELS}/fraud/versions/1/lineage", headers=ds.headers))
    assert lineage["run"]["id"] == run["id"]
    assert lineage["run"]["params"] == {"C": "0.5"} and lineage["run"]["metrics"] == {"auc": 0.87}
    assert lineage["run"]["experiment_id"] == run["experiment_id"]
    assert lineage["datasets"] == [
        {"name": "train", "digest": "cd" * 32, "source": "s3://bank/train.parquet", "context": "training"}
    ]
    assert lineage["deployments"] == []


def test_trusted_load_needs_the_server_to_trust_the_format(
    client: TestClient, app: FastAPI, ds: Member, admin: Member, settings: Settings
) -> None:
    run = logged_model(
        client, ds, manifest={"flavor": "pickle", "files": ["model.pkl"], "meta": {"file": "model.skops"}}
    )
    ok(client.post(MODELS, headers=ds.headers, json={"name": "pickled"}), 201)
    assert (
        ok(
            client.post(
                f"{MODELS}/pickled/versions",
                headers=ds.headers,
                json={"run_id": run["id"], "artifact_path": "model"},
            ),
            201,
        )["flavor"]
        == "pickle"
    )
    body = error(
        client.post(f"{MODELS}/pickled/versions/1/trusted-load", headers=ds.headers), 403, "permission_denied"
    )
    assert body["details"]["flavor"] == "pickle"
    # A safe format needs no trust, and is not announced.
    ok(client.post(MODELS, headers=ds.headers, json={"name": "safe"}), 201)
    ok(
        client.post(
            f"{MODELS}/safe/versions",
            headers=ds.headers,
            json={"source": f"runs:/{logged_model(client, ds)['id']}/model"},
        ),
        201,
    )
    error(client.post(f"{MODELS}/safe/versions/1/trusted-load", headers=ds.headers), 400, "bad_request")
    app.state.settings = settings.model_copy(update={"trusted_flavors": ["pickle"]})
    ok(client.post(f"{MODELS}/pickled/versions/1/trusted-load", headers=ds.headers), 204)
    events = ok(
        client.get(
            f"{V1}/audit-events", headers=admin.headers, params={"action": "model_version.trusted_load"}
        )
    )["items"]
    assert len(events) == 1
    assert events[0]["actor_email"] == ds.email and events[0]["changes"]["flavor"] == "pickle"


def test_permissions_by_role(client: TestClient, orgs: Org, ds: Member) -> None:
    run = logged_model(client, ds)
    ok(client.post(MODELS, headers=ds.headers, json={"name": "m"}), 201)
    ok(
        client.post(
            f"{MODELS}/m/versions", headers=ds.headers, json={"run_id": run["id"], "artifact_path": "model"}
        ),
        201,
    )
    engineer = orgs.member(Role.DATA_ENGINEER, unit="retail")
    champion = orgs.member(Role.AI_CHAMPION, unit="retail")
    for who in (engineer, champion):
        assert ok(client.get(f"{MODELS}/m", headers=who.headers))["name"] == "m"
        denied = error(client.post(MODELS, headers=who.headers, json={"name": "x"}), 403, "permission_denied")
        assert denied["details"]["action"] == "model.register"
        error(
            client.post(
                f"{MODELS}/m/versions", headers=who.headers, json={"source": f"runs:/{run['id']}/model"}
            ),
            403,
            "permission_denied",
        )
        error(client.delete(f"{MODELS}/m", headers=who.headers), 403, "permission_denied")
        denied = error(
            client.put(f"{MODELS}/m/aliases/champion", headers=who.headers, json={"version": 1}),
            403,
            "permission_denied",
        )
        assert denied["details"]["action"] == "model.alias"
    ml = orgs.member(Role.ML_ENGINEER, unit="retail")
    ok(client.put(f"{MODELS}/m/aliases/champion", headers=ml.headers, json={"version": 1}))


def test_business_units_are_isolated(client: TestClient, orgs: Org, ds: Member, admin: Member) -> None:
    run = logged_model(client, ds)
    ok(client.post(MODELS, headers=ds.headers, json={"name": "secret"}), 201)
    ok(
        client.post(
            f"{MODELS}/secret/versions",
            headers=ds.headers,
            json={"run_id": run["id"], "artifact_path": "model"},
        ),
        201,
    )
    outsider = orgs.member(Role.DATA_SCIENTIST, unit="wealth")
    for path in (
        "secret",
        "secret/versions",
        "secret/versions/1",
        "secret/versions/1/artifacts",
        "secret/versions/1/lineage",
    ):
        error(client.get(f"{MODELS}/{path}", headers=outsider.headers), 404, "not_found")
    error(
        client.get(
            f"{MODELS}/secret/versions/1/download", headers=outsider.headers, params={"path": "model.skops"}
        ),
        404,
        "not_found",
    )
    assert "secret" not in [m["name"] for m in ok(client.get(MODELS, headers=outsider.headers))["items"]]
    # Another unit's run cannot be registered, by any form of source.
    ok(client.post(MODELS, headers=outsider.headers, json={"name": "theirs"}), 201)
    exp_path = run["artifact_uri"].removeprefix("mlflow-artifacts:/")
    for body in (
        {"run_id": run["id"], "artifact_path": "model"},
        {"source": f"runs:/{run['id']}/model"},
        {"source": f"mlflow-artifacts:/{exp_path}/model"},
    ):
        error(client.post(f"{MODELS}/theirs/versions", headers=outsider.headers, json=body), 404, "not_found")
    # Nor can a name be taken twice, even across units.
    error(client.post(MODELS, headers=outsider.headers, json={"name": "secret"}), 409, "already_exists")
    assert ok(client.get(f"{MODELS}/secret", headers=admin.headers))["latest_version"] == 1

    # Shared with the organization: everyone reads and downloads it; only its unit changes it.
    shared_run = logged_model(client, ds, visibility="organization")
    ok(client.post(MODELS, headers=ds.headers, json={"name": "shared", "visibility": "organization"}), 201)
    ok(
        client.post(
            f"{MODELS}/shared/versions",
            headers=ds.headers,
            json={"run_id": shared_run["id"], "artifact_path": "model"},
        ),
        201,
    )
    assert ok(client.get(f"{MODELS}/shared", headers=outsider.headers))["latest_version"] == 1
    down = client.get(
        f"{MODELS}/shared/versions/1/download", headers=outsider.headers, params={"path": "model.skops"}
    )
    assert down.status_code == 200
    error(
        client.put(f"{MODELS}/shared/aliases/champion", headers=outsider.headers, json={"version": 1}),
        403,
        "permission_denied",
    )
    error(client.delete(f"{MODELS}/shared", headers=outsider.headers), 403, "permission_denied")
    error(
        client.patch(f"{MODELS}/shared", headers=outsider.headers, json={"description": "x"}),
        403,
        "permission_denied",
    )
    error(
        client.post(
            f"{MODELS}/shared/versions",
            headers=outsider.headers,
            json={"source": f"runs:/{shared_run['id']}/model"},
        ),
        403,
        "permission_denied",
    )
