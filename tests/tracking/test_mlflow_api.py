"""MLflow REST adapter with plain HTTP (in-process): error semantics, permissions, unit isolation, paging,
NaN handling and every route's shape. The real mlflow client is driven in test_mlflow_client.py."""

from __future__ import annotations

import math
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from bridgehead.audit.models import AuditEvent
from bridgehead.auth.roles import Role
from bridgehead.registry import service as registry
from bridgehead.store import Database
from bridgehead.tracking import service as tracking
from tests.conftest import Member, Org
from tests.tracking.seed import principal_for

API = "/api/2.0/mlflow"
PROXY = "/api/2.0/mlflow-artifacts/artifacts"
MLMODEL = b"artifact_path: model\nflavors:\n  sklearn:\n    pickled_model: model.skops\n    serialization_format: skops\n"


def assert_mlflow_error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body: Any = response.json()
    assert set(body) == {"error_code", "message"}, body
    assert body["error_code"] == code, body
    assert isinstance(body["message"], str) and body["message"]
    message: str = body["message"]
    return message


class Api:
    """One person's calls to the MLflow API: GET with query strings, the rest with JSON bodies."""

    def __init__(self, client: TestClient, member: Member | None) -> None:
        self.client = client
        self.headers = member.headers if member else {}

    def get(self, path: str, **params: Any) -> httpx.Response:
        return self.client.get(f"{API}/{path}", params=params, headers=self.headers)

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        return self.client.request(method, f"{API}/{path}", json=body or {}, headers=self.headers)

    def post(self, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        return self.call("POST", path, body)

    def ok(self, method: str, path: str, body: dict[str, Any] | None = None, **params: Any) -> Any:
        response = self.get(path, **params) if method == "GET" else self.call(method, path, body)
        assert response.status_code == 200, response.text
        return response.json()

    def experiment(self, name: str, **extra: Any) -> str:
        eid: str = self.ok("POST", "experiments/create", {"name": name, **extra})["experiment_id"]
        return eid

    def run(self, experiment_id: str, **extra: Any) -> dict[str, Any]:
        run: dict[str, Any] = self.ok("POST", "runs/create", {"experiment_id": experiment_id, **extra})["run"]
        return run

    def put_artifact(self, path: str, data: bytes) -> httpx.Response:
        return self.client.put(f"{PROXY}/{path}", content=data, headers=self.headers)

    def model_version(self, name: str) -> dict[str, Any]:
        """A run with a model directory uploaded through the proxy, registered as the next version of ``name``."""
        eid = self.experiment(f"exp-for-{name}-{len(self.ok('GET', 'experiments/search')['experiments'])}")
        run = self.run(eid)
        base = run["info"]["artifact_uri"].removeprefix("mlflow-artifacts:/")
        assert self.put_artifact(f"{base}/model/MLmodel", MLMODEL).status_code == 200
        assert self.put_artifact(f"{base}/model/model.skops", b"not really skops").status_code == 200
        self.ok("POST", "runs/log-metric", {"run_id": run["info"]["run_id"], "key": "acc", "value": 0.9})
        if self.get("registered-models/get", name=name).status_code == 404:
            self.ok("POST", "registered-models/create", {"name": name})
        source = f"runs:/{run['info']['run_id']}/model"
        body = {"name": name, "source": source, "run_id": run["info"]["run_id"]}
        version: dict[str, Any] = self.ok("POST", "model-versions/create", body)["model_version"]
        return version


@pytest.fixture
def admin_api(client: TestClient, admin: Member) -> Api:
    return Api(client, admin)


# --- error semantics --------------------------------------------------------------------------


def test_error_semantics_follow_mlflow(admin_api: Api) -> None:
    api = admin_api
    missing = api.get("experiments/get-by-name", experiment_name="nope")
    assert_mlflow_error(missing, 404, "RESOURCE_DOES_NOT_EXIST")
    api.experiment("dup")
    assert_mlflow_error(api.post("experiments/create", {"name": "dup"}), 400, "RESOURCE_ALREADY_EXISTS")
    assert_mlflow_error(api.get("runs/get", run_id="0" * 32), 404, "RESOURCE_DOES_NOT_EXIST")
    assert_mlflow_error(api.get("experiments/get", experiment_id="nope"), 404, "RESOURCE_DOES_NOT_EXIST")

    run_id = api.run(api.experiment("params"))["info"]["run_id"]
    api.ok("POST", "runs/log-parameter", {"run_id": run_id, "key": "lr", "value": "0.1"})
    api.ok("POST", "runs/log-parameter", {"run_id": run_id, "key": "lr", "value": "0.1"})  # same value: fine
    changed = api.post("runs/log-parameter", {"run_id": run_id, "key": "lr", "value": "0.2"})
    assert "Changing param values is not allowed" in assert_mlflow_error(
        changed, 400, "INVALID_PARAMETER_VALUE"
    )

    malformed = api.client.post(
        f"{API}/runs/log-metric",
        content=b'{"run_id": ',
        headers={**api.headers, "Content-Type": "application/json"},
    )
    assert_mlflow_error(malformed, 400, "INVALID_PARAMETER_VALUE")
    no_name = api.post("experiments/create", {})
    assert "name" in assert_mlflow_error(no_name, 400, "INVALID_PARAMETER_VALUE")
    wrong_type = api.post("runs/log-metric", {"run_id": run_id, "key": "k", "value": "high"})
    assert_mlflow_error(wrong_type, 400, "INVALID_PARAMETER_VALUE")
    no_run = api.post("runs/log-metric", {"key": "k", "value": 1})
    assert_mlflow_error(no_run, 400, "INVALID_PARAMETER_VALUE")

    assert_mlflow_error(api.get("no/such/route"), 404, "ENDPOINT_NOT_FOUND")
    assert_mlflow_error(
        api.client.get("/api/3.0/mlflow/server-info", headers=api.headers), 404, "ENDPOINT_NOT_FOUND"
    )
    assert_mlflow_error(
        api.client.get("/ajax-api/2.0/mlflow/x", headers=api.headers), 404, "ENDPOINT_NOT_FOUND"
    )
    assert_mlflow_error(api.call("PATCH", "runs/create"), 405, "ENDPOINT_NOT_FOUND")

    api.ok("POST", "runs/delete", {"run_id": run_id})
    deleted = api.post("runs/log-metric", {"run_id": run_id, "key": "k", "value": 1})
    assert "active" in assert_mlflow_error(deleted, 400, "INVALID_PARAMETER_VALUE")


def test_unknown_alias_is_400_as_in_mlflow(admin_api: Api) -> None:
    admin_api.ok("POST", "registered-models/create", {"name": "clf"})
    unknown = admin_api.get("registered-models/alias", name="clf", alias="champion")
    assert_mlflow_error(unknown, 400, "INVALID_PARAMETER_VALUE")
    missing_model = admin_api.get("registered-models/get", name="nope")
    assert_mlflow_error(missing_model, 404, "RESOURCE_DOES_NOT_EXIST")
    dup = admin_api.post("registered-models/create", {"name": "clf"})
    assert_mlflow_error(dup, 400, "RESOURCE_ALREADY_EXISTS")


def test_log_batch_limits(admin_api: Api) -> None:
    run_id = admin_api.run(admin_api.experiment("limits"))["info"]["run_id"]
    metric = {"key": "m", "value": 1.0, "timestamp": 1, "step": 0}
    for field, item, n in (
        ("metrics", metric, 1001),
        ("params", {"key": "p", "value": "v"}, 101),
        ("tags", {"key": "t", "value": "v"}, 101),
    ):
        items = [{**item, "key": f"{item['key']}{i}"} for i in range(n)]
        too_many = admin_api.post("runs/log-batch", {"run_id": run_id, field: items})
        assert_mlflow_error(too_many, 400, "INVALID_PARAMETER_VALUE")
        admin_api.ok("POST", "runs/log-batch", {"run_id": run_id, field: items[: n - 1]})
    clash = [{"key": "x", "value": "1"}, {"key": "x", "value": "2"}]
    assert_mlflow_error(
        admin_api.post("runs/log-batch", {"run_id": run_id, "params": clash}), 400, "INVALID_PARAMETER_VALUE"
    )
    run = admin_api.ok("GET", "runs/get", run_id=run_id)["run"]
    assert len(run["data"]["metrics"]) == 1000
    assert len(run["data"]["params"]) == 100


def test_authentication_and_permissions(client: TestClient, orgs: Org, admin: Member) -> None:
    anonymous = Api(client, None)
    assert_mlflow_error(anonymous.post("experiments/create", {"name": "x"}), 401, "UNAUTHENTICATED")
    assert_mlflow_error(anonymous.get("experiments/search"), 401, "UNAUTHENTICATED")
    bad = client.get(f"{API}/experiments/search", headers={"Authorization": "Bearer nope"})
    assert_mlflow_error(bad, 401, "UNAUTHENTICATED")
    basic = client.get(f"{API}/experiments/search", headers={"Authorization": "Basic dTpw"})
    assert_mlflow_error(basic, 401, "UNAUTHENTICATED")
    put = client.put("/api/2.0/mlflow-artifacts/artifacts/0/x.txt", content=b"x")
    assert_mlflow_error(put, 401, "UNAUTHENTICATED")
    assert client.get("/health").text == "OK"
    assert client.get("/version").status_code == 401  # outside the MLflow prefixes: Bridgehead's error body
    assert client.get("/version", headers=admin.headers).text == "3.17.2"

    viewer = Api(client, orgs.member(Role.BUSINESS_USER))
    denied = viewer.post("experiments/create", {"name": "x"})
    assert "tracking.write" in assert_mlflow_error(denied, 403, "PERMISSION_DENIED")
    admin_api = Api(client, admin)
    eid = admin_api.experiment("shared")
    run_id = admin_api.run(eid)["info"]["run_id"]
    assert viewer.ok("GET", "runs/get", run_id=run_id)["run"]["info"]["run_id"] == run_id
    assert_mlflow_error(
        viewer.post("runs/log-metric", {"run_id": run_id, "key": "k", "value": 1}), 403, "PERMISSION_DENIED"
    )
    assert_mlflow_error(viewer.post("registered-models/create", {"name": "m"}), 403, "PERMISSION_DENIED")
    assert_mlflow_error(viewer.put_artifact(f"{eid}/{run_id}/artifacts/x", b"x"), 403, "PERMISSION_DENIED")

    engineer = Api(client, orgs.member(Role.DATA_ENGINEER))  # may track, may not register or move aliases
    engineer.ok("POST", "runs/log-metric", {"run_id": run_id, "key": "k", "value": 1})
    assert_mlflow_error(engineer.post("registered-models/create", {"name": "m"}), 403, "PERMISSION_DENIED")
    admin_api.model_version("m")
    alias = {"name": "m", "alias": "champion", "version": "1"}
    assert "model.alias" in assert_mlflow_error(
        engineer.post("registered-models/alias", alias), 403, "PERMISSION_DENIED"
    )
    stage = {"name": "m", "version": "1", "stage": "Production"}
    assert_mlflow_error(engineer.post("model-versions/transition-stage", stage), 403, "PERMISSION_DENIED")
    admin_api.ok("POST", "registered-models/alias", alias)


def test_business_units_are_isolated(client: TestClient, orgs: Org, db: Database) -> None:
    a_member = orgs.member(Role.DATA_SCIENTIST, unit="unit-a")
    a = Api(client, a_member)
    b = Api(client, orgs.member(Role.DATA_SCIENTIST, unit="unit-b"))
    eid = a.experiment("a-secret")
    run = a.run(eid)
    run_id = run["info"]["run_id"]
    a.ok("POST", "runs/log-metric", {"run_id": run_id, "key": "k", "value": 1})
    path = run["info"]["artifact_uri"].removeprefix("mlflow-artifacts:/") + "/notes.txt"
    assert a.put_artifact(path, b"unit a only").status_code == 200
    version = a.model_version("a-model")
    logged = a.ok("POST", "logged-models", {"experiment_id": eid, "name": "lm"})["model"]["info"]["model_id"]

    for response in (
        b.get("experiments/get", experiment_id=eid),
        b.get("experiments/get-by-name", experiment_name="a-secret"),
        b.get("runs/get", run_id=run_id),
        b.get("metrics/get-history", run_id=run_id, metric_key="k"),
        b.post("runs/log-metric", {"run_id": run_id, "key": "k", "value": 2}),
        b.post("runs/create", {"experiment_id": eid}),
        b.get("registered-models/get", name="a-model"),
        b.get("model-versions/get", name="a-model", version=version["version"]),
        b.post("registered-models/alias", {"name": "a-model", "alias": "x", "version": "1"}),
        b.get(f"logged-models/{logged}"),
        b.client.get(f"{PROXY}/{path}", headers=b.headers),
        b.put_artifact(path, b"overwrite"),
        b.client.get("/api/2.0/mlflow-artifacts/artifacts", params={"path": eid}, headers=b.headers),
    ):
        assert_mlflow_error(response, 404, "RESOURCE_DOES_NOT_EXIST")
    # Creating a same-named experiment or model in another unit is refused (names are global), as in MLflow.
    assert_mlflow_error(b.post("experiments/create", {"name": "a-secret"}), 400, "RESOURCE_ALREADY_EXISTS")
    assert b.ok("POST", "runs/search", {"experiment_ids": [eid]}).get("runs", []) == []
    names = [e["name"] for e in b.ok("POST", "experiments/search", {})["experiments"]]
    assert "a-secret" not in names
    assert b.ok("GET", "registered-models/search").get("registered_models", []) == []
    assert b.ok("GET", "model-versions/search").get("model_versions", []) == []
    assert a.client.get(f"{PROXY}/{path}", headers=a.headers).content == b"unit a only"

    # Unit A shares the model with the organization: B may now read the model's files, and only those.
    with db.session(write=True) as session:
        owner = principal_for(db, a_member.token)
        registry.update_registered_model(session, owner, "a-model", visibility="organization")
    uri = b.ok("GET", "model-versions/get-download-uri", name="a-model", version="1")["artifact_uri"]
    model_dir = uri.removeprefix("mlflow-artifacts:/")
    listed = b.client.get(PROXY, params={"path": model_dir}, headers=b.headers)
    assert sorted(f["path"] for f in listed.json()["files"]) == ["MLmodel", "model.skops"]
    assert b.client.get(f"{PROXY}/{model_dir}/MLmodel", headers=b.headers).content == MLMODEL
    assert_mlflow_error(b.put_artifact(f"{model_dir}/MLmodel", b"tampered"), 404, "RESOURCE_DOES_NOT_EXIST")
    notes = b.client.get(f"{PROXY}/{path}", headers=b.headers)
    assert_mlflow_error(notes, 404, "RESOURCE_DOES_NOT_EXIST")


# --- shapes and behaviour ---------------------------------------------------------------------


def test_experiments(admin_api: Api, db: Database) -> None:
    api = admin_api
    eid = api.experiment("alpha", tags=[{"key": "team", "value": "risk"}])
    exp = api.ok("GET", "experiments/get", experiment_id=eid)["experiment"]
    assert exp["name"] == "alpha" and exp["lifecycle_stage"] == "active"
    assert exp["artifact_location"] == f"mlflow-artifacts:/{eid}"
    assert exp["tags"] == [{"key": "team", "value": "risk"}]
    assert isinstance(exp["creation_time"], int) and isinstance(exp["last_update_time"], int)
    assert (
        api.ok("GET", "experiments/get-by-name", experiment_name="alpha")["experiment"]["experiment_id"]
        == eid
    )
    refused = api.post("experiments/create", {"name": "elsewhere", "artifact_location": "s3://x"})
    assert_mlflow_error(refused, 400, "INVALID_PARAMETER_VALUE")

    for name in ("beta", "gamma", "delta"):
        api.experiment(name)
    api.ok("POST", "experiments/set-experiment-tag", {"experiment_id": eid, "key": "stage", "value": "pilot"})
    tagged = api.ok("POST", "experiments/search", {"filter": "tags.stage = 'pilot'"})["experiments"]
    assert [e["name"] for e in tagged] == ["alpha"]
    liked = api.ok("POST", "experiments/search", {"filter": "name LIKE '%a'", "order_by": ["name DESC"]})
    assert [e["name"] for e in liked["experiments"]] == ["gamma", "delta", "beta", "alpha"]
    seen: list[str] = []
    token = None
    while True:
        page = api.ok(
            "POST", "experiments/search", {"max_results": 2, "page_token": token, "order_by": ["name"]}
        )
        seen += [e["name"] for e in page["experiments"]]
        token = page.get("next_page_token")
        if not token:
            break
        assert "offset" not in token  # opaque
    assert seen == ["Default", "alpha", "beta", "delta", "gamma"]
    got = api.ok("GET", "experiments/search", max_results=10, order_by=["name DESC"], filter="name = 'beta'")
    assert [e["name"] for e in got["experiments"]] == ["beta"]
    assert_mlflow_error(
        api.post("experiments/search", {"page_token": "garbage!"}), 400, "INVALID_PARAMETER_VALUE"
    )
    assert_mlflow_error(
        api.post("experiments/search", {"filter": "metrics.x > 1"}), 400, "INVALID_PARAMETER_VALUE"
    )

    api.ok("POST", "experiments/delete-experiment-tag", {"experiment_id": eid, "key": "stage"})
    api.ok("POST", "experiments/update", {"experiment_id": eid, "new_name": "alpha-2"})
    api.ok("POST", "experiments/delete", {"experiment_id": eid})
    assert api.ok("GET", "experiments/get", experiment_id=eid)["experiment"]["lifecycle_stage"] == "deleted"
    deleted = api.ok("POST", "experiments/search", {"view_type": "DELETED_ONLY"})["experiments"]
    assert [e["name"] for e in deleted] == ["alpha-2"]
    assert_mlflow_error(api.post("runs/create", {"experiment_id": eid}), 400, "INVALID_PARAMETER_VALUE")
    api.ok("POST", "experiments/restore", {"experiment_id": eid})
    with db.session() as session:
        actions = [
            e.action
            for e in session.query(AuditEvent).filter(AuditEvent.object_id == eid).order_by(AuditEvent.seq)
        ]
    assert actions == ["experiment.create", "experiment.update", "experiment.delete", "experiment.restore"]


def test_runs_metrics_params_tags_inputs(admin_api: Api, db: Database, admin: Member) -> None:
    api = admin_api
    eid = api.experiment("runs")
    run = api.run(
        eid, run_name="first", start_time=1000, tags=[{"key": "mlflow.user", "value": "someone-else"}]
    )
    info = run["info"]
    run_id = info["run_id"]
    assert info["run_uuid"] == run_id and info["run_name"] == "first" and info["status"] == "RUNNING"
    assert info["user_id"] == admin.email  # the authenticated person, not what the client claims
    assert info["artifact_uri"] == f"mlflow-artifacts:/{eid}/{run_id}/artifacts"
    assert {"key": "mlflow.runName", "value": "first"} in run["data"]["tags"]

    child = api.run(eid, tags=[{"key": "mlflow.parentRunId", "value": run_id}])
    assert child["info"]["run_name"]  # generated, as MLflow does
    api.ok(
        "POST",
        "runs/log-metric",
        {"run_uuid": run_id, "key": "loss", "value": 0.5, "timestamp": 5, "step": 1},
    )
    api.ok(
        "POST", "runs/log-metric", {"run_id": run_id, "key": "loss", "value": 0.4, "timestamp": 6, "step": 2}
    )
    api.ok(
        "POST", "runs/log-metric", {"run_id": run_id, "key": "loss", "value": 0.9, "timestamp": 7, "step": 0}
    )
    api.ok("POST", "runs/log-parameter", {"run_id": run_id, "key": "depth", "value": "3"})
    api.ok("POST", "runs/set-tag", {"run_id": run_id, "key": "team", "value": "risk"})
    api.ok("POST", "runs/set-tag", {"run_id": run_id, "key": "gone", "value": "x"})
    api.ok("POST", "runs/delete-tag", {"run_id": run_id, "key": "gone"})
    assert_mlflow_error(
        api.post("runs/delete-tag", {"run_id": run_id, "key": "gone"}), 404, "RESOURCE_DOES_NOT_EXIST"
    )
    dataset = {
        "name": "credit",
        "digest": "abc123",
        "source_type": "local",
        "source": '{"uri": "/data/credit.csv"}',
        "schema": '{"mlflow_colspec": []}',
        "profile": '{"num_rows": 10}',
    }
    inputs = {
        "run_id": run_id,
        "datasets": [{"tags": [{"key": "mlflow.data.context", "value": "training"}], "dataset": dataset}],
    }
    api.ok("POST", "runs/log-inputs", inputs)
    api.ok("POST", "runs/log-inputs", inputs)  # idempotent
    updated = api.ok(
        "POST",
        "runs/update",
        {"run_id": run_id, "status": "FINISHED", "end_time": 2000, "run_name": "renamed"},
    )
    assert updated["run_info"]["status"] == "FINISHED" and updated["run_info"]["end_time"] == 2000
    assert updated["run_info"]["run_name"] == "renamed"

    got = api.ok("GET", "runs/get", run_id=run_id)["run"]
    assert got["data"]["metrics"] == [{"key": "loss", "value": 0.4, "timestamp": 6, "step": 2}]
    assert got["data"]["params"] == [{"key": "depth", "value": "3"}]
    tags = {t["key"]: t["value"] for t in got["data"]["tags"]}
    assert tags["team"] == "risk" and "gone" not in tags and tags["mlflow.runName"] == "renamed"
    assert got["inputs"]["dataset_inputs"] == [
        {"tags": [{"key": "mlflow.data.context", "value": "training"}], "dataset": dataset}
    ]
    history = api.ok("GET", "metrics/get-history", run_id=run_id, metric_key="loss")["metrics"]
    assert [(m["step"], m["value"]) for m in history] == [(0, 0.9), (1, 0.5), (2, 0.4)]
    assert all(m["run_id"] == run_id for m in history)

    with db.session() as session:
        principal = principal_for(db, admin.token)
        native = tracking.get_run(session, principal, child["info"]["run_id"])
        assert native.parent_run_id == run_id
        data = tracking.run_data(session, [run_id])[run_id]
        assert data.params == {"depth": "3"} and data.inputs[0].context == "training"

    api.ok("POST", "runs/delete", {"run_id": run_id})
    assert api.ok("GET", "runs/get", run_id=run_id)["run"]["info"]["lifecycle_stage"] == "deleted"
    api.ok("POST", "runs/restore", {"run_id": run_id})
    assert api.ok("GET", "runs/get", run_id=run_id)["run"]["info"]["lifecycle_stage"] == "active"


def test_nan_and_infinity_round_trip(admin_api: Api) -> None:
    run_id = admin_api.run(admin_api.experiment("nan"))["info"]["run_id"]
    # The client's protobuf JSON sends strings; plain JSON tokens (NaN, Infinity) are accepted too.
    for step, value in enumerate(("NaN", "Infinity", "-Infinity")):
        admin_api.ok(
            "POST", "runs/log-metric", {"run_id": run_id, "key": value.lower(), "value": value, "step": step}
        )
    raw = (
        b'{"run_id": "%s", "metrics": [{"key": "bare", "value": NaN, "timestamp": 1, "step": 0}]}'
        % run_id.encode()
    )
    response = admin_api.client.post(
        f"{API}/runs/log-batch",
        content=raw,
        headers={**admin_api.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    metrics = {
        m["key"]: m["value"] for m in admin_api.ok("GET", "runs/get", run_id=run_id)["run"]["data"]["metrics"]
    }
    assert metrics == {"nan": "NaN", "infinity": "Infinity", "-infinity": "-Infinity", "bare": "NaN"}
    history = admin_api.ok("GET", "metrics/get-history", run_id=run_id, metric_key="nan")["metrics"]
    assert history[0]["value"] == "NaN"
    assert math.isnan(float(history[0]["value"]))


def test_run_search_filters_orders_and_pages(admin_api: Api) -> None:
    api = admin_api
    eid = api.experiment("search")
    ids = []
    for i in range(7):
        rid = api.run(eid, run_name=f"r{i}", start_time=1000 + i)["info"]["run_id"]
        ids.append(rid)
        api.ok(
            "POST",
            "runs/log-batch",
            {
                "run_id": rid,
                "metrics": [{"key": "acc", "value": i / 10, "timestamp": 1, "step": 0}],
                "params": [{"key": "model", "value": "tree" if i % 2 else "linear"}],
                "tags": [{"key": "split", "value": "a" if i < 4 else "b"}],
            },
        )
    body = {
        "experiment_ids": [eid],
        "filter": "metrics.acc >= 0.2 and params.model = 'tree'",
        "order_by": ["metrics.acc DESC"],
    }
    found = api.ok("POST", "runs/search", body)["runs"]
    assert [r["info"]["run_name"] for r in found] == ["r5", "r3"]
    found = api.ok(
        "POST",
        "runs/search",
        {"experiment_ids": [eid], "filter": "tags.split != 'a'", "order_by": ["attributes.start_time"]},
    )
    assert [r["info"]["run_name"] for r in found["runs"]] == ["r4", "r5", "r6"]
    seen: list[str] = []
    token = None
    while True:
        page = api.ok(
            "POST",
            "runs/search",
            {"experiment_ids": [eid], "max_results": 3, "page_token": token, "order_by": ["metrics.acc"]},
        )
        seen += [r["info"]["run_name"] for r in page["runs"]]
        token = page.get("next_page_token")
        if not token:
            break
    assert seen == [f"r{i}" for i in range(7)]
    assert_mlflow_error(
        api.post("runs/search", {"experiment_ids": [eid], "filter": "metrics.acc >"}),
        400,
        "INVALID_PARAMETER_VALUE",
    )
    assert_mlflow_error(
        api.post("runs/search", {"experiment_ids": [eid], "max_results": 50001}),
        400,
        "INVALID_PARAMETER_VALUE",
    )
    api.ok("POST", "runs/delete", {"run_id": ids[0]})
    active = api.ok("POST", "runs/search", {"experiment_ids": [eid], "run_view_type": "ACTIVE_ONLY"})["runs"]
    assert len(active) == 6
    deleted = api.ok("POST", "runs/search", {"experiment_ids": [eid], "run_view_type": "DELETED_ONLY"})[
        "runs"
    ]
    assert [r["info"]["run_id"] for r in deleted] == [ids[0]]

    rid = ids[1]
    api.ok(
        "POST",
        "runs/log-batch",
        {
            "run_id": rid,
            "metrics": [{"key": "curve", "value": float(s), "timestamp": s, "step": s} for s in range(25)],
        },
    )
    steps: list[int] = []
    token = None
    while True:
        page = api.ok(
            "GET",
            "metrics/get-history",
            run_id=rid,
            metric_key="curve",
            max_results=10,
            **({"page_token": token} if token else {}),
        )
        steps += [m["step"] for m in page["metrics"]]
        token = page.get("next_page_token")
        if not token:
            break
    assert steps == list(range(25))


def test_logged_models(admin_api: Api) -> None:
    api = admin_api
    eid = api.experiment("logged")
    run_id = api.run(eid)["info"]["run_id"]
    body = {
        "experiment_id": eid,
        "name": "model",
        "model_type": "sklearn",
        "source_run_id": run_id,
        "params": [{"key": "C", "value": "1.0"}],
        "tags": [{"key": "mlflow.source.type", "value": "LOCAL"}],
    }
    model = api.ok("POST", "logged-models", body)["model"]
    info = model["info"]
    mid = info["model_id"]
    assert mid.startswith("m-") and len(mid) == 34 and int(mid[2:], 16) >= 0
    assert info["status"] == "LOGGED_MODEL_PENDING"
    assert info["artifact_uri"] == f"mlflow-artifacts:/{eid}/models/{mid}/artifacts"
    assert model["data"]["params"] == [{"key": "C", "value": "1.0"}]
    finalized = api.ok("PATCH", f"logged-models/{mid}", {"model_id": mid, "status": "LOGGED_MODEL_READY"})
    assert finalized["model"]["info"]["status"] == "LOGGED_MODEL_READY"
    api.ok(
        "PATCH",
        f"logged-models/{mid}/tags",
        {"tags": [{"key": "a", "value": "1"}, {"key": "b", "value": "2"}]},
    )
    api.ok("DELETE", f"logged-models/{mid}/tags/b")
    assert_mlflow_error(api.call("DELETE", f"logged-models/{mid}/tags/b"), 404, "RESOURCE_DOES_NOT_EXIST")
    api.ok(
        "POST",
        f"logged-models/{mid}/params",
        {"model_id": mid, "params": [{"key": "penalty", "value": "l2"}]},
    )
    api.ok("POST", "runs/outputs", {"run_id": run_id, "models": [{"model_id": mid, "step": 0}]})
    api.ok("POST", "runs/log-metric", {"run_id": run_id, "key": "acc", "value": 0.8, "model_id": mid})
    got = api.ok("GET", f"logged-models/{mid}")["model"]
    assert {t["key"]: t["value"] for t in got["info"]["tags"]} == {"mlflow.source.type": "LOCAL", "a": "1"}
    assert {p["key"] for p in got["data"]["params"]} == {"C", "penalty"}
    assert [(m["key"], m["value"]) for m in got["data"]["metrics"]] == [("acc", 0.8)]
    api.ok("POST", "logged-models", {"experiment_id": eid, "name": "other"})
    found = api.ok("POST", "logged-models/search", {"experiment_ids": [eid], "filter": "name = 'model'"})[
        "models"
    ]
    assert [m["info"]["model_id"] for m in found] == [mid]
    tagged = api.ok("POST", "logged-models/search", {"experiment_ids": [], "filter": "tags.a = '1'"})[
        "models"
    ]
    assert [m["info"]["model_id"] for m in tagged] == [mid]
    page = api.ok(
        "POST",
        "logged-models/search",
        {"experiment_ids": [eid], "max_results": 1, "order_by": [{"field_name": "name", "ascending": True}]},
    )
    assert page["models"][0]["info"]["name"] == "model" and page["next_page_token"]
    run = api.ok("GET", "runs/get", run_id=run_id)["run"]
    assert run["outputs"]["model_outputs"] == [{"model_id": mid, "step": 0}]
    assert_mlflow_error(api.get("logged-models/m-0000"), 404, "RESOURCE_DOES_NOT_EXIST")
    assert_mlflow_error(
        api.call("PATCH", f"logged-models/{mid}", {"status": "BOGUS"}), 400, "INVALID_PARAMETER_VALUE"
    )


def test_registry_routes(admin_api: Api, db: Database, admin: Member) -> None:
    api = admin_api
    created = api.ok(
        "POST",
        "registered-models/create",
        {"name": "clf", "description": "d", "tags": [{"key": "k", "value": "v"}]},
    )
    assert created["registered_model"]["name"] == "clf"
    v1 = api.model_version("clf")
    v2 = api.model_version("clf")
    assert (v1["version"], v2["version"]) == ("1", "2")  # strings, as in MLflow
    assert v1["status"] == "READY" and v1["current_stage"] == "None"
    model = api.ok("GET", "registered-models/get", name="clf")["registered_model"]
    assert [v["version"] for v in model["latest_versions"]] == ["2"]
    assert model["tags"] == [{"key": "k", "value": "v"}]

    api.ok("POST", "registered-models/alias", {"name": "clf", "alias": "champion", "version": "1"})
    by_alias = api.ok("GET", "registered-models/alias", name="clf", alias="champion")["model_version"]
    assert by_alias["version"] == "1" and by_alias["aliases"] == ["champion"]
    model = api.ok("GET", "registered-models/get", name="clf")["registered_model"]
    assert model["aliases"] == [{"alias": "champion", "version": "1"}]

    staged = api.ok(
        "POST", "model-versions/transition-stage", {"name": "clf", "version": "1", "stage": "staging"}
    )
    assert staged["model_version"]["current_stage"] == "Staging"
    api.ok(
        "POST",
        "model-versions/transition-stage",
        {"name": "clf", "version": "2", "stage": "Staging", "archive_existing_versions": True},
    )
    assert (
        api.ok("GET", "model-versions/get", name="clf", version="1")["model_version"]["current_stage"]
        == "Archived"
    )
    latest = api.ok("POST", "registered-models/get-latest-versions", {"name": "clf", "stages": ["Staging"]})
    assert [v["version"] for v in latest["model_versions"]] == ["2"]
    latest = api.ok("GET", "registered-models/get-latest-versions", name="clf")
    assert sorted(v["version"] for v in latest["model_versions"]) == ["1", "2"]
    assert_mlflow_error(
        api.post("model-versions/transition-stage", {"name": "clf", "version": "1", "stage": "Prod"}),
        400,
        "INVALID_PARAMETER_VALUE",
    )

    updated = api.ok(
        "PATCH", "model-versions/update", {"name": "clf", "version": "2", "description": "better"}
    )
    assert updated["model_version"]["description"] == "better"
    api.ok(
        "POST", "model-versions/set-tag", {"name": "clf", "version": "2", "key": "validated", "value": "yes"}
    )
    found = api.ok("GET", "model-versions/search", filter="name = 'clf' AND tags.validated = 'yes'")[
        "model_versions"
    ]
    assert [v["version"] for v in found] == ["2"]
    run_filter = f"run_id = '{v1['run_id']}'"
    assert [
        v["version"] for v in api.ok("GET", "model-versions/search", filter=run_filter)["model_versions"]
    ] == ["1"]
    api.ok("DELETE", "model-versions/delete-tag", {"name": "clf", "version": "2", "key": "validated"})
    uri = api.ok("GET", "model-versions/get-download-uri", name="clf", version="1")["artifact_uri"]
    run_uri = api.ok("GET", "runs/get", run_id=v1["run_id"])["run"]["info"]["artifact_uri"]
    assert uri == f"{run_uri}/model"
    listed = api.client.get(
        "/api/2.0/mlflow-artifacts/artifacts",
        params={"path": uri.removeprefix("mlflow-artifacts:/")},
        headers=api.headers,
    )
    assert sorted(f["path"] for f in listed.json()["files"]) == ["MLmodel", "model.skops"]

    api.ok("POST", "registered-models/set-tag", {"name": "clf", "key": "owner", "value": "risk"})
    api.ok("DELETE", "registered-models/delete-tag", {"name": "clf", "key": "k"})
    api.ok("PATCH", "registered-models/update", {"name": "clf", "description": "credit"})
    api.ok("POST", "registered-models/create", {"name": "other"})
    search = api.ok(
        "GET",
        "registered-models/search",
        filter="name LIKE '%cl%' AND tag.`mlflow.prompt.is_prompt` != 'true'",
    )
    assert [m["name"] for m in search["registered_models"]] == ["clf"]
    assert search["registered_models"][0]["tags"] == [{"key": "owner", "value": "risk"}]
    first = api.ok("GET", "registered-models/search", max_results=1, order_by=["name DESC"])
    assert [m["name"] for m in first["registered_models"]] == ["other"]
    # Tag filters run in SQL over the JSON tags column: dotted keys, quotes, and a missing tag satisfying !=.
    api.ok("POST", "registered-models/set-tag", {"name": "other", "key": "team.name", "value": 'risk "ops"'})

    def models(filter_string: str) -> list[str]:
        found = api.ok("GET", "registered-models/search", filter=filter_string)["registered_models"]
        return [m["name"] for m in found]

    assert models("tags.owner = 'risk'") == ["clf"]
    assert models("tags.owner != 'risk'") == ["other"]
    assert models("tags.`team.name` = 'risk \"ops\"'") == ["other"]
    assert models("tags.`team.name` != 'nobody' AND tags.owner != 'x'") == ["clf", "other"]
    page = api.client.get("/api/v1/registered-models", params={"limit": 1}, headers=api.headers).json()
    assert page["total"] == 2 and len(page["items"]) == 1
    rest = api.ok(
        "GET",
        "registered-models/search",
        max_results=1,
        order_by=["name DESC"],
        page_token=first["next_page_token"],
    )
    assert [m["name"] for m in rest["registered_models"]] == ["clf"]

    renamed = api.ok("POST", "registered-models/rename", {"name": "clf", "new_name": "credit-clf"})
    assert renamed["registered_model"]["name"] == "credit-clf"
    assert_mlflow_error(
        api.post("registered-models/rename", {"name": "credit-clf", "new_name": "other"}),
        400,
        "RESOURCE_ALREADY_EXISTS",
    )
    api.ok("DELETE", "registered-models/alias", {"name": "credit-clf", "alias": "champion"})
    assert_mlflow_error(
        api.get("registered-models/alias", name="credit-clf", alias="champion"),
        400,
        "INVALID_PARAMETER_VALUE",
    )
    api.ok("DELETE", "model-versions/delete", {"name": "credit-clf", "version": "1"})
    assert_mlflow_error(
        api.get("model-versions/get", name="credit-clf", version="1"), 404, "RESOURCE_DOES_NOT_EXIST"
    )
    with db.session() as session:
        principal = principal_for(db, admin.token)
        assert [v.version for v in registry.search_versions(session, principal, name="credit-clf")] == [2]
        actions = {e.action for e in session.query(AuditEvent)}
    assert {
        "model.create",
        "model_version.create",
        "model.set_alias",
        "model_version.transition_stage",
        "model_version.update",
        "model.update",
        "model.delete_alias",
        "model_version.delete",
    } <= actions
    api.ok("DELETE", "registered-models/delete", {"name": "credit-clf"})
    assert_mlflow_error(api.get("registered-models/get", name="credit-clf"), 404, "RESOURCE_DOES_NOT_EXIST")


def test_numbers_are_accepted_where_mlflow_declares_strings(admin_api: Api) -> None:
    """Ids sent as JSON numbers (the Default experiment is "0") are accepted; answers carry strings."""
    run = admin_api.run(0)  # type: ignore[arg-type]
    assert run["info"]["experiment_id"] == "0"
    default = admin_api.ok("GET", "experiments/get", experiment_id=0)["experiment"]
    assert default["name"] == "Default" and default["experiment_id"] == "0"


def test_shared_objects_are_read_only_for_other_units_through_mlflow(
    client: TestClient, orgs: Org, db: Database
) -> None:
    """Organization visibility shares reading only, whichever API is used: the MLflow adapter goes through the
    same service checks as the native API."""
    owner_member = orgs.member(Role.DATA_SCIENTIST, unit="retail")
    owner = Api(client, owner_member)
    outsider = Api(client, orgs.member(Role.DATA_SCIENTIST, unit="lending"))
    created = client.post(
        "/api/v1/experiments",
        headers=owner_member.headers,
        json={"name": "retail-shared", "visibility": "organization"},
    )
    assert created.status_code == 201, created.text
    eid = created.json()["id"]
    run = owner.run(eid)
    run_id = run["info"]["run_id"]
    owner.ok("POST", "runs/log-metric", {"run_id": run_id, "key": "acc", "value": 0.5})
    base = run["info"]["artifact_uri"].removeprefix("mlflow-artifacts:/")
    assert owner.put_artifact(f"{base}/notes.txt", b"retail").status_code == 200
    shared_model = client.post(
        "/api/v1/registered-models",
        headers=owner_member.headers,
        json={"name": "retail-model", "visibility": "organization"},
    )
    assert shared_model.status_code == 201, shared_model.text
    owner.model_version("retail-model")
    logged = owner.ok("POST", "logged-models", {"experiment_id": eid, "name": "lm"})["model"]["info"]
    logged_id = logged["model_id"]

    # Readable...
    assert outsider.ok("GET", "runs/get", run_id=run_id)["run"]["info"]["run_id"] == run_id
    assert outsider.ok("GET", "registered-models/get", name="retail-model")["registered_model"]
    assert outsider.get(f"logged-models/{logged_id}").status_code == 200
    # ...but never changed by another unit.
    refused = [
        outsider.post("runs/log-metric", {"run_id": run_id, "key": "acc", "value": 0.1}),
        outsider.post("runs/log-batch", {"run_id": run_id, "params": [{"key": "p", "value": "1"}]}),
        outsider.post("runs/log-parameter", {"run_id": run_id, "key": "q", "value": "1"}),
        outsider.post("runs/set-tag", {"run_id": run_id, "key": "t", "value": "x"}),
        outsider.post("runs/delete-tag", {"run_id": run_id, "key": "mlflow.runName"}),
        outsider.post("runs/update", {"run_id": run_id, "status": "KILLED"}),
        outsider.post("runs/delete", {"run_id": run_id}),
        outsider.post("runs/log-inputs", {"run_id": run_id, "datasets": []}),
        outsider.post("runs/create", {"experiment_id": eid}),
        outsider.post("experiments/update", {"experiment_id": eid, "new_name": "mine"}),
        outsider.post("experiments/set-experiment-tag", {"experiment_id": eid, "key": "k", "value": "v"}),
        outsider.post("experiments/delete", {"experiment_id": eid}),
        outsider.post("logged-models", {"experiment_id": eid, "name": "mine"}),
        outsider.call("PATCH", f"logged-models/{logged_id}/tags", {"tags": [{"key": "k", "value": "v"}]}),
        outsider.call("PATCH", f"logged-models/{logged_id}", {"model_id": logged_id, "status": 2}),
        outsider.call("PATCH", "registered-models/update", {"name": "retail-model", "description": "mine"}),
        outsider.post("registered-models/set-tag", {"name": "retail-model", "key": "k", "value": "v"}),
        outsider.post("registered-models/alias", {"name": "retail-model", "alias": "x", "version": "1"}),
        outsider.call(
            "PATCH", "model-versions/update", {"name": "retail-model", "version": "1", "description": "x"}
        ),
        outsider.post(
            "model-versions/set-tag", {"name": "retail-model", "version": "1", "key": "k", "value": "v"}
        ),
        outsider.call("DELETE", "registered-models/delete", {"name": "retail-model"}),
        outsider.put_artifact(f"{base}/notes.txt", b"overwritten"),
        client.delete(f"{PROXY}/{base}/notes.txt", headers=outsider.headers),
    ]
    for response in refused:
        assert response.status_code == 403, (response.request.method, response.request.url, response.text)
        assert_mlflow_error(response, 403, "PERMISSION_DENIED")
    principal = principal_for(db, owner_member.token)
    with db.session() as session:
        assert [m.value for m in tracking.metric_history(session, principal, run_id, "acc")] == [0.5]
        stored = tracking.get_run(session, principal, run_id)
        assert stored.status == "RUNNING" and stored.lifecycle_stage == "active"
        assert registry.get_registered_model(session, principal, "retail-model").description == ""
    assert owner.client.get(f"{PROXY}/{base}/notes.txt", headers=owner.headers).content == b"retail"

    # The Default experiment is everyone's to log to; each run in it stays its author's.
    mine = outsider.run("0")["info"]
    outsider.ok("POST", "runs/log-metric", {"run_id": mine["run_id"], "key": "k", "value": 1})
    own_path = mine["artifact_uri"].removeprefix("mlflow-artifacts:/") + "/x.txt"
    assert outsider.put_artifact(own_path, b"mine").status_code == 200
    theirs = owner.run("0")["info"]
    assert_mlflow_error(
        outsider.post("runs/log-metric", {"run_id": theirs["run_id"], "key": "k", "value": 1}),
        403,
        "PERMISSION_DENIED",
    )
    their_path = theirs["artifact_uri"].removeprefix("mlflow-artifacts:/") + "/x.txt"
    assert_mlflow_error(outsider.put_artifact(their_path, b"x"), 403, "PERMISSION_DENIED")


def test_logging_calls_that_fail_are_answered_by_the_route_and_write_nothing(admin_api: Api) -> None:
    """The fast lane answers successes only; a failed batch is rolled back there and answered by the route,
    so no metric of a refused batch is stored (and none twice)."""
    eid = admin_api.experiment("lane")
    run_id = admin_api.run(eid)["info"]["run_id"]
    admin_api.ok("POST", "runs/log-parameter", {"run_id": run_id, "key": "lr", "value": "0.1"})
    refused = admin_api.post(
        "runs/log-batch",
        {
            "run_id": run_id,
            "metrics": [{"key": "loss", "value": 1.0, "timestamp": 5, "step": 0}],
            "params": [{"key": "lr", "value": "0.2"}],
        },
    )
    assert "Changing param values" in assert_mlflow_error(refused, 400, "INVALID_PARAMETER_VALUE")
    history = admin_api.ok("GET", "metrics/get-history", run_id=run_id, metric_key="loss")
    assert history.get("metrics", []) == []
    assert_mlflow_error(
        admin_api.post("runs/log-metric", {"key": "k", "value": 1}), 400, "INVALID_PARAMETER_VALUE"
    )
    assert_mlflow_error(admin_api.post("runs/log-metric", {"run_id": run_id}), 400, "INVALID_PARAMETER_VALUE")
    broken = admin_api.client.post(
        f"{API}/runs/log-metric",
        content=b"{not json",
        headers={**admin_api.headers, "content-type": "application/json"},
    )
    assert broken.status_code == 400 and broken.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    stranger = admin_api.client.post(
        f"{API}/runs/log-metric",
        json={"run_id": run_id, "key": "k", "value": 1},
        headers={"Authorization": "Bearer nope"},
    )
    assert_mlflow_error(stranger, 401, "UNAUTHENTICATED")
    # The same point sent twice is stored once.
    point = {"run_id": run_id, "key": "acc", "value": 0.5, "timestamp": 7, "step": 1}
    admin_api.ok("POST", "runs/log-metric", point)
    admin_api.ok("POST", "runs/log-batch", {"run_id": run_id, "metrics": [point, point]})
    assert len(admin_api.ok("GET", "metrics/get-history", run_id=run_id, metric_key="acc")["metrics"]) == 1


def test_oversized_logging_bodies_are_refused(client: TestClient, admin: Member, db: Database) -> None:
    """Announced or streamed, a logging body over the limit is 413 and nothing of it is stored."""
    limit = client.app.state.settings.max_body_bytes  # type: ignore[attr-defined]
    run_id = Api(client, admin).run("0")["info"]["run_id"]
    point = b'{"key": "k", "value": 1, "timestamp": 1, "step": 0},'
    body = b'{"run_id": "' + run_id.encode() + b'", "metrics": [' + point * (limit // len(point)) + b"{}]}"
    headers = {**admin.headers, "content-type": "application/json"}
    announced = client.post(f"{API}/runs/log-batch", content=body, headers=headers)
    assert_mlflow_error(announced, 413, "RESOURCE_EXHAUSTED")

    def chunks() -> Any:
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]

    streamed = client.post(f"{API}/runs/log-batch", content=chunks(), headers=headers)
    assert_mlflow_error(streamed, 413, "RESOURCE_EXHAUSTED")
    with db.session() as session:
        assert tracking.count_metric_history(session, principal_for(db, admin.token), run_id, "k") == 0


@pytest.mark.parametrize("engine_name", ["sqlite"])
def test_logging_while_another_writer_holds_sqlite_waits_instead_of_failing(
    admin_api: Api, db: Database, settings: Any
) -> None:
    """The fast lane never waits for SQLite's write lock on the event loop: it hands the call to the route,
    which waits in a worker thread, so the call succeeds once the other writer is done."""
    import sqlite3
    import threading

    eid = admin_api.experiment("contended")
    run_id = admin_api.run(eid)["info"]["run_id"]
    # The first call authenticates from the database; the second, under contention, has its token cached
    # and so tries the driver's own connection (Database.driver_write) first.
    admin_api.ok(
        "POST", "runs/log-metric", {"run_id": run_id, "key": "k", "value": 1.0, "timestamp": 1, "step": 0}
    )
    path = settings.resolved_database_url.removeprefix("sqlite:///")
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.5, lambda: holder.execute("ROLLBACK"))
    release.start()
    admin_api.ok(
        "POST", "runs/log-metric", {"run_id": run_id, "key": "k", "value": 3.0, "timestamp": 2, "step": 1}
    )
    release.join()
    holder.close()
    history = admin_api.ok("GET", "metrics/get-history", run_id=run_id, metric_key="k")["metrics"]
    assert [m["value"] for m in history] == [1.0, 3.0]


@pytest.mark.parametrize("engine_name", ["sqlite"])
def test_refusals_on_the_lanes_driver_path_are_answered_as_the_routes_answer_them(
    client: TestClient, orgs: Org, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On SQLite, a metric-only call whose token the lane has cached is written on the driver's own
    connection. Whatever that path refuses (another unit's run, a viewer, a deleted run, a missing run, a
    bad key) goes to the route, so the answer is the one the first, uncached call got; nothing is written."""
    taken: list[bool] = []
    original = Database.driver_write

    def counted(self: Database) -> Any:
        taken.append(True)
        return original(self)

    monkeypatch.setattr(Database, "driver_write", counted)
    a = Api(client, orgs.member(Role.DATA_SCIENTIST, unit="unit-a"))
    b = Api(client, orgs.member(Role.DATA_SCIENTIST, unit="unit-b"))
    viewer = Api(client, orgs.member(Role.BUSINESS_USER, unit="unit-a"))
    eid = a.experiment("driver-path")
    run_id = a.run(eid)["info"]["run_id"]
    gone = a.run(eid)["info"]["run_id"]
    a.ok("POST", "runs/delete", {"run_id": gone})
    point = {"key": "k", "value": 1.0, "timestamp": 5, "step": 0}
    cases = [
        (b, {"run_id": run_id, **point}, 404, "RESOURCE_DOES_NOT_EXIST"),
        (viewer, {"run_id": run_id, **point}, 403, "PERMISSION_DENIED"),
        (a, {"run_id": gone, **point}, 400, "INVALID_PARAMETER_VALUE"),
        (a, {"run_id": "0" * 32, **point}, 404, "RESOURCE_DOES_NOT_EXIST"),
        (a, {"run_id": run_id, **point, "key": "../escape"}, 400, "INVALID_PARAMETER_VALUE"),
    ]
    cache = client.app.state.token_cache  # type: ignore[attr-defined]
    for api, body, status, code in cases:
        cache.clear()  # the first call authenticates from the database and caches the token
        first, second = api.post("runs/log-metric", body), api.post("runs/log-metric", body)
        assert_mlflow_error(first, status, code)
        assert (second.status_code, second.json()) == (first.status_code, first.json())
    assert len(taken) == len(cases)  # each second call went the driver's way first
    a.ok("POST", "runs/log-metric", {"run_id": run_id, **point, "value": 2.0})
    assert len(taken) == len(cases) + 1
    history = a.ok("GET", "metrics/get-history", run_id=run_id, metric_key="k")["metrics"]
    assert [m["value"] for m in history] == [2.0]


def test_the_fast_lane_answers_successful_logging_calls_itself(
    admin_api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the routes' own handler disabled, logging calls still succeed (the lane wrote them); a call the
    lane passes on (a numeric key, which only the route's model coerces) reaches the route."""
    from bridgehead.tracking import mlflow_api

    eid = admin_api.experiment("lane-only")
    run_id = admin_api.run(eid)["info"]["run_id"]

    def no_route(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("the route answered a call the fast lane should have answered")

    monkeypatch.setattr(mlflow_api, "_log", no_route)
    admin_api.ok("POST", "runs/log-metric", {"run_id": run_id, "key": "acc", "value": "NaN", "step": 1})
    admin_api.ok("POST", "runs/log-parameter", {"run_uuid": run_id, "key": "lr", "value": "0.1"})
    admin_api.ok("POST", "runs/set-tag", {"run_id": run_id, "key": "team", "value": "risk"})
    points = [{"key": "loss", "value": 1.0 / (s + 1), "timestamp": 10 + s, "step": s} for s in range(1000)]
    admin_api.ok(
        "POST",
        "runs/log-batch",
        {"run_id": run_id, "metrics": points, "params": [{"key": "d", "value": "3"}]},
    )
    run = admin_api.ok("GET", "runs/get", run_id=run_id)["run"]
    assert {p["key"]: p["value"] for p in run["data"]["params"]} == {"lr": "0.1", "d": "3"}
    assert {"key": "team", "value": "risk"} in run["data"]["tags"]
    history = admin_api.ok("GET", "metrics/get-history", run_id=run_id, metric_key="loss")["metrics"]
    assert len(history) == 1000 and history[-1]["value"] == pytest.approx(1 / 1000)
    acc = admin_api.ok("GET", "metrics/get-history", run_id=run_id, metric_key="acc")["metrics"]
    assert acc[0]["value"] == "NaN" and acc[0]["timestamp"] > 0  # timestamp 0 (unset) means now
    # The disabled route is reached (and fails) for what the lane passes on.
    assert admin_api.post("runs/log-metric", {"run_id": run_id, "key": 5, "value": 1.0}).status_code == 500
