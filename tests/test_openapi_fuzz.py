"""Property-based fuzzing of the JSON API from its own OpenAPI document (schemathesis).

Every operation is called with generated valid and invalid input, once as an admin (so requests get past
authentication into the routes) and once anonymously, on SQLite and on PostgreSQL. No response may be a
server error, every response must match what the OpenAPI document declares, and every 4xx carries the
error body ``{"error": {"code", "message", "details"}}``.

Generated ids almost never name a real object, so as an admin each case whose operation has a path
parameter is sent a second time aimed at a real one, letting the generated bodies reach the database and the
model runtime. Real are: a unit, a person, a token, an experiment, a run (its metric, its artifact), a dataset
(its version 1, file and contract), the registered model "fuzz-model" (version 1, alias champion: a real
scikit-learn logistic regression that loads), the endpoint "fuzz-model" serving it (so ``name`` is real for
both), a monitor of that endpoint, an open incident of the monitor and a webhook notification channel (all
made by `_real_ids`, which both tests use). Only a monitor run's ``run_id`` names nothing: that parameter
names the tracking run. A deterministic sweep then puts a NUL character in every string parameter and body
field the document declares (PostgreSQL refuses NUL in text, SQLite stores it), and naive or out-of-range
instants in every date-time.

schemathesis' ``from_fixture`` loader reads ``Node._nodeid``, which pytest 9.2 no longer has, so the
document is loaded at import time instead (it does not depend on the database) and the app of each
engine comes from a fixture.
"""

from __future__ import annotations

import copy
import functools
import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sklearn.linear_model import LogisticRegression

from bridgehead.app import create_app
from bridgehead.auth.roles import Role
from bridgehead.monitoring import rules, service
from bridgehead.monitoring.models import MonitorRun
from bridgehead.registry.flavors import MANIFEST, SklearnSkops
from bridgehead.settings import Settings
from tests.conftest import PASSWORD, Member, Org
from tests.serving.conftest import credit_data, deploy

BASE_URL = "https://testserver"
SEED = 20_240_611
MAX_EXAMPLES = 12
NUL = "\x00"


def _binary_batches() -> tuple[bytes, bytes]:
    """A small valid Arrow IPC stream and Parquet file, for the inference routes' binary bodies."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    # The inputs of the model the endpoint "fuzz-model" serves, so that a valid batch is scored.
    table = pa.table(
        {"age": [31.0, 45.0], "income": [4000.0, 5200.0], "debt": [1500.0, 900.0], "tenure": [3.0, 12.0]}
    )
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as stream:
        stream.write_table(table)
    parquet = io.BytesIO()
    pq.write_table(table, parquet)
    return sink.getvalue().to_pybytes(), parquet.getvalue()


def _register_binary_media_types() -> None:
    from hypothesis import strategies as st

    arrow, parquet = _binary_batches()
    schemathesis.openapi.media_type(
        "application/vnd.apache.arrow.stream", st.one_of(st.just(arrow), st.binary(max_size=64))
    )
    schemathesis.openapi.media_type(
        "application/vnd.apache.parquet", st.one_of(st.just(parquet), st.binary(max_size=64))
    )


_register_binary_media_types()

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def _openapi_document() -> dict[str, Any]:
    """The document the app serves; it does not depend on the database, so a throwaway app gives it."""
    with tempfile.TemporaryDirectory() as home:
        app = create_app(Settings(home=Path(home), database_url="sqlite://", secret_key="x" * 32))
        return app.openapi()


DOCUMENT = _openapi_document()

schema = schemathesis.openapi.from_dict(
    copy.deepcopy(DOCUMENT),
    config=schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "generation": {
                "mode": "all",
                "max-examples": MAX_EXAMPLES,
                "deterministic": True,
                "database": "none",
                "allow-x00": True,
            },
        }
    ),
)


@dataclass
class Target:
    app: FastAPI
    headers: dict[str, str]
    # Real objects, by path parameter name (admin runs only).
    ids: dict[str, str]


@functools.cache
def _model_files() -> tuple[tuple[str, bytes], ...]:
    """The files of a real model, made once per session: a logistic regression trained on a few rows of the
    serving tests' credit data, saved by the scikit-learn flavor (skops) beside the manifest bh.log_model
    writes, with the input signature serving and monitors read."""
    frame, y = credit_data(n=40)
    model = LogisticRegression(max_iter=1000).fit(frame, y)
    with tempfile.TemporaryDirectory() as tmp:
        saved = SklearnSkops().save(model, Path(tmp))
        signature = {"inputs": [{"name": str(c), "type": str(t)} for c, t in frame.dtypes.items()]}
        manifest = {"flavor": saved.flavor, "files": saved.files, "meta": saved.meta, "signature": signature}
        files = [(MANIFEST, json.dumps(manifest).encode())]
        files += [(name, (Path(tmp) / name).read_bytes()) for name in saved.files]
    return tuple(files)


def _ok(response: httpx.Response) -> Any:
    assert response.status_code < 300, response.text
    return response.json() if response.content else None


def _tracking_ids(client: TestClient, owner: Member) -> dict[str, str]:
    """An experiment, a run with a metric and a model directory, and a registered model whose version 1
    (a real model, see `_model_files`) has the alias champion, owned by ``owner``: real objects for the path
    parameters of those APIs."""
    headers = owner.headers
    experiment = _ok(client.post("/api/v1/experiments", headers=headers, json={"name": "fuzz-experiment"}))
    run = _ok(client.post("/api/v1/runs", headers=headers, json={"experiment_id": experiment["id"]}))
    metrics = {"metrics": [{"key": "loss", "value": 0.5}]}
    _ok(client.post(f"/api/v1/runs/{run['id']}/log-batch", headers=headers, json=metrics))
    for name, data in _model_files():
        _ok(client.put(f"/api/v1/runs/{run['id']}/artifacts/model/{name}", headers=headers, content=data))
    _ok(client.post("/api/v1/registered-models", headers=headers, json={"name": "fuzz-model"}))
    body = {"run_id": run["id"], "artifact_path": "model"}
    _ok(client.post("/api/v1/registered-models/fuzz-model/versions", headers=headers, json=body))
    _ok(
        client.put(
            "/api/v1/registered-models/fuzz-model/aliases/champion", headers=headers, json={"version": 1}
        )
    )
    dataset = _ok(client.post("/api/v1/datasets", headers=headers, json={"name": "fuzz-data"}))
    csv = b"a,email\n1,x@example.com\n2,y@example.com\n"
    _ok(client.put(f"/api/v1/datasets/{dataset['id']}/upload/data.csv", headers=headers, content=csv))
    _ok(
        client.put(
            f"/api/v1/datasets/{dataset['id']}/contract", headers=headers, json={"contract": "rows: {min: 1}"}
        )
    )
    return {
        "dataset_id": dataset["id"],
        "filename": "data.csv",
        "experiment_id": experiment["id"],
        "run_id": run["id"],
        "key": "loss",
        "path": f"model/{_model_files()[-1][0]}",
        "name": "fuzz-model",
        "version": "1",
        "alias": "champion",
    }


def _monitoring_ids(client: TestClient, orgs: Org, engineer: Member) -> dict[str, str]:
    """The model "fuzz-model" version 1 deployed by ``engineer`` to the endpoint "fuzz-model" (so the path
    parameter ``name`` is real for both), a monitor of it, an incident opened by a breaching run of that
    monitor, and a webhook channel of the engineer's unit.

    No API opens an incident, so the run that breaches is recorded through the monitoring service, as a
    worker records a computed one. The channel comes after the incident: opening it queues no delivery, and
    creating a channel sends nothing (only the URL's form is checked)."""
    headers = engineer.headers
    deploy(client, engineer, "fuzz-model", "1", model="fuzz-model", environment="production")
    body = {"name": "fuzz-monitor", "window_minutes": 60}
    monitor = _ok(client.post("/api/v1/endpoints/fuzz-model/monitors", headers=headers, json=body))
    with orgs.db.session(write=True) as session:
        metrics = {"psi_max": 0.5}
        breaches, _ = rules.evaluate_rules(monitor["rules"], metrics)
        assert breaches, monitor["rules"]
        end = service.now_ms()
        run = MonitorRun(
            monitor_id=monitor["id"],
            status="succeeded",
            trigger="manual",
            window_start_ms=end - 60 * 60_000,
            window_end_ms=end,
            started_ms=end,
            finished_ms=end,
            metrics=metrics,
            breaches=breaches,
        )
        incident_id = service.record_run(session, run).incident_id
        assert incident_id is not None
    body = {"name": "fuzz-channel", "kind": "webhook", "target": "https://example.org/hook"}
    channel = _ok(client.post("/api/v1/notification-channels", headers=headers, json=body))
    return {"monitor_id": monitor["id"], "incident_id": incident_id, "channel_id": channel["id"]}


def _real_ids(client: TestClient, orgs: Org) -> dict[str, str]:
    """Real objects for every path parameter (see the module's docstring), in the unit "retail", which the
    admin calling the API does not belong to."""
    other = orgs.member(Role.DATA_SCIENTIST, unit="retail")
    tokens = client.get("/api/v1/tokens", headers=other.headers).json()["items"]
    ids = {"unit_id": orgs.unit("retail"), "person_id": other.id, "token_id": tokens[0]["id"]}
    ids.update(_tracking_ids(client, other))
    ids.update(_monitoring_ids(client, orgs, orgs.member(Role.ML_ENGINEER, unit="retail")))
    return ids


def _build_target(kind: str, app: FastAPI, client: TestClient, orgs: Org) -> Target:
    if kind == "anonymous":
        return Target(app, {}, {})
    admin = orgs.member(Role.CHIEF_AI_OFFICER, email="fuzz-admin@example.com")
    return Target(app, admin.headers, _real_ids(client, orgs))


@pytest.fixture(params=["admin", "anonymous"])
def target(request: pytest.FixtureRequest, app: FastAPI, client: TestClient, orgs: Org) -> Iterator[Target]:
    """The app on this test's engine, called as an admin or anonymously."""
    yield _build_target(str(request.param), app, client, orgs)
    # schemathesis keeps an app's lifespan running until exit; end it before the database is dropped.
    shutdown_lifespans()


def assert_error_shape(body: Any) -> None:
    assert isinstance(body, dict), body
    assert set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error, dict), body
    assert set(error) == {"code", "message", "details"}, body
    assert isinstance(error["code"], str), body
    assert error["code"], body
    assert isinstance(error["message"], str), body
    assert error["message"], body
    assert isinstance(error["details"], dict), body


def _call_and_check(case: schemathesis.Case, target: Target) -> None:
    response = case.call(app=target.app, headers=target.headers, base_url=BASE_URL)
    where = f"{case.method} {case.formatted_path}"
    assert response.status_code < 500, f"{where}: {response.status_code} {response.text[:500]}"
    if 400 <= response.status_code < 500:
        assert_error_shape(response.json())
    case.validate_response(response, checks=CHECKS)


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    derandomize=True,
    # One app and database serve all the examples of an operation, on purpose.
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
)
def test_api_answers_every_generated_request_without_a_server_error(
    case: schemathesis.Case, target: Target
) -> None:
    _call_and_check(case, target)
    aimed = {name: target.ids[name] for name in case.path_parameters if name in target.ids}
    if aimed:
        case.path_parameters = {**case.path_parameters, **aimed}
        _call_and_check(case, target)


# --- the document fuzzed is the one served ------------------------------------------------------


def test_fuzzed_document_is_the_served_one(client: TestClient) -> None:
    assert client.get("/api/openapi.json").json() == DOCUMENT


# --- edge values in every declared parameter and body field --------------------------------------

# A valid body for every operation that takes one; the sweep changes one field at a time.
VALID_BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/api/v1/business-units"): {"slug": "edge-sweep", "name": "Sweep", "description": ""},
    ("PATCH", "/api/v1/business-units/{unit_id}"): {"name": "Renamed", "description": "d"},
    ("POST", "/api/v1/people"): {
        "email": "sweep@example.com",
        "name": "Sweep",
        "role": "business_user",
        "business_unit_id": "retail",
        "password": "a-long-enough-password",
    },
    ("PATCH", "/api/v1/people/{person_id}"): {"name": "Renamed", "business_unit_id": "retail"},
    ("POST", "/api/v1/tokens"): {"name": "sweep"},
    ("POST", "/api/v1/me/password"): {"current_password": PASSWORD, "new_password": "another-long-password"},
    ("POST", "/api/v1/experiments"): {
        "name": "sweep",
        "description": "d",
        "business_unit_id": None,
        "use_case_id": "uc-1",
        "visibility": "organization",
        "tags": {"team": "sweep"},
    },
    ("PATCH", "/api/v1/experiments/{experiment_id}"): {"name": "renamed", "description": "d"},
    ("PUT", "/api/v1/experiments/{experiment_id}/tags/{key}"): {"value": "v"},
    ("POST", "/api/v1/runs"): {"experiment_id": "0", "name": "sweep", "tags": {"t": "v"}},
    ("PATCH", "/api/v1/runs/{run_id}"): {
        "status": "FINISHED",
        "end_time": "2026-01-01T00:00:00Z",
        "name": "n",
    },
    ("POST", "/api/v1/runs/search"): {
        "experiment_ids": ["0"],
        "filter": "metrics.loss < 1",
        "order_by": ["metrics.loss DESC"],
        "view_type": "ALL",
        "limit": 10,
        "offset": 0,
    },
    ("POST", "/api/v1/runs/{run_id}/log-batch"): {
        "metrics": [{"key": "loss", "value": 0.1, "step": 1, "timestamp_ms": 1}],
        "params": {"p": "1"},
        "tags": {"t": "v"},
    },
    ("POST", "/api/v1/runs/{run_id}/inputs"): {
        "datasets": [
            {"name": "train", "digest": "ab", "source": "s3://b/k", "schema": "{}", "context": "training"}
        ]
    },
    ("POST", "/api/v1/registered-models"): {
        "name": "sweep-model",
        "description": "d",
        "tags": {"t": "v"},
        "use_case_id": "uc-1",
        "visibility": "private",
    },
    ("PATCH", "/api/v1/registered-models/{name}"): {
        "description": "d",
        "tags": {"t": "v"},
        "use_case_id": "u",
    },
    ("POST", "/api/v1/registered-models/{name}/versions"): {"source": "runs:/x/model", "description": "d"},
    ("PATCH", "/api/v1/registered-models/{name}/versions/{version}"): {
        "description": "d",
        "tags": {"t": "v"},
    },
    ("PUT", "/api/v1/registered-models/{name}/aliases/{alias}"): {"version": 1},
    ("POST", "/api/v1/datasets"): {
        "name": "sweep-data",
        "description": "d",
        "source_system": "s",
        "tags": {"t": "v"},
        "visibility": "private",
        "contract": "rows: {min: 1}",
    },
    ("PATCH", "/api/v1/datasets/{dataset_id}"): {"description": "d", "source_system": "s"},
    ("POST", "/api/v1/datasets/{dataset_id}/versions"): {
        "digest": "a" * 64,
        "location": "s3://b/k.parquet",
        "format": "parquet",
        "row_count": 3,
        "columns": [{"name": "a", "type": "int64"}],
    },
    ("PUT", "/api/v1/datasets/{dataset_id}/versions/{version}/column-tags"): {"columns": {"a": ["pii"]}},
    ("PUT", "/api/v1/datasets/{dataset_id}/contract"): {"contract": "rows: {min: 1}"},
    ("POST", "/api/v1/datasets/{dataset_id}/validations"): {
        "version": 1,
        "location": "x",
        "report": {"passed": True, "row_count": 1, "expectations": []},
    },
    ("PUT", "/api/v1/datasets/{dataset_id}/policy"): {"units": [], "roles": ["data_scientist"]},
    ("POST", "/api/v1/endpoints/{name}/deploy"): {
        "model": "m",
        "version": "1",
        "environment": "staging",
        "strategy": "replace",
        "reason": "r",
    },
    ("PUT", "/api/v1/endpoints/{name}/traffic"): {
        "routes": [{"model": "m", "version": "1", "weight": 100}],
        "shadows": [{"model": "m", "version": "2"}],
        "reason": "r",
    },
    ("POST", "/api/v1/endpoints/{name}/promote"): {"model": "m", "version": "1", "reason": "r"},
    ("POST", "/api/v1/endpoints/{name}/rollback"): {"reason": "r"},
    ("POST", "/api/v1/endpoints/{name}/retire"): {"reason": "r"},
    ("PUT", "/api/v1/endpoints/{name}/invokers"): {"units": ["u"], "roles": ["business_user"]},
    # The JSON form (a dataset version); the Parquet form is generated from the document's binary media types.
    ("POST", "/api/v1/endpoints/{name}/score-jobs"): {"dataset_id": "d", "version": 1},
    ("POST", "/api/v1/endpoints/{name}/monitors"): {"name": "m", "window_minutes": 60},
    ("PATCH", "/api/v1/monitors/{monitor_id}"): {"description": "d"},
    ("POST", "/api/v1/incidents/{incident_id}/acknowledge"): {"note": "n"},
    ("POST", "/api/v1/incidents/{incident_id}/resolve"): {"resolution": "r"},
    ("POST", "/api/v1/incidents/{incident_id}/assign"): {"owner_id": "p"},
    ("POST", "/api/v1/notification-channels"): {
        "name": "c",
        "kind": "webhook",
        "target": "https://example.org/hook",
    },
}

# PostgreSQL refuses NUL in text; SQLite stores it.
STRING_EDGES = ["x" + NUL + "y"]
# Naive, and instants that leave the representable range once converted to UTC.
DATE_TIME_EDGES = ["2020-01-01T00:00:00", "9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59"]


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        node = DOCUMENT["components"]["schemas"][name]
    return node


def _edges(node: dict[str, Any]) -> list[str]:
    """Edge values for a declared schema: by its format, or NUL for free text."""
    node = _resolve(node)
    for alternative in node.get("anyOf", []):
        if found := _edges(alternative):
            return found
    if node.get("type") != "string" or "enum" in node:
        return []
    if node.get("format") == "date-time":
        return DATE_TIME_EDGES
    return STRING_EDGES


def _operations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, methods in DOCUMENT["paths"].items():
        if path.startswith("/api/"):
            for method, operation in methods.items():
                yield method.upper(), path, operation


def _edge_requests() -> list[tuple[str, str, str, dict[str, Any]]]:
    """(method, path, what is changed, {"path" | "query" | "body": {name: value}}), one per edge value."""
    cases = []
    for method, path, operation in _operations():
        for p in operation.get("parameters", []):
            for value in _edges(p["schema"]):
                cases.append(
                    (method, path, f"{p['in']}:{p['name']}={value!r}", {p["in"]: {p["name"]: value}})
                )
        if "requestBody" in operation:
            body_schema = _resolve(operation["requestBody"]["content"]["application/json"]["schema"])
            for field, field_schema in body_schema["properties"].items():
                for value in _edges(field_schema):
                    cases.append((method, path, f"body:{field}={value!r}", {"body": {field: value}}))
    return cases


EDGE_REQUESTS = _edge_requests()


def test_the_sweep_covers_every_operation_with_a_body_and_every_date_time() -> None:
    with_body = {(m, p) for m, p, op in _operations() if "requestBody" in op}
    assert with_body == set(VALID_BODIES)
    swept = {where.split("=")[0] for _, _, where, _ in EDGE_REQUESTS}
    assert {"query:since", "query:until", "path:person_id", "body:name"} <= swept


@pytest.mark.parametrize(
    ("method", "path", "where", "parts"), EDGE_REQUESTS, ids=[f"{m} {p} {w}" for m, p, w, _ in EDGE_REQUESTS]
)
def test_edge_values_are_never_a_server_error(
    client: TestClient, orgs: Org, method: str, path: str, where: str, parts: dict[str, Any]
) -> None:
    admin = orgs.member(Role.CHIEF_AI_OFFICER, email="edge-admin@example.com")
    path_values = _real_ids(client, orgs)
    path_values.update(parts.get("path", {}))
    url = path.format(**{k: quote(v, safe="") for k, v in path_values.items()})
    body = None
    if (method, path) in VALID_BODIES:
        body = {**VALID_BODIES[(method, path)], **parts.get("body", {})}
    response = client.request(method, url, headers=admin.headers, params=parts.get("query"), json=body)
    assert response.status_code < 500, f"{method} {url} ({where}): {response.status_code} {response.text}"
    if response.status_code >= 400:
        assert_error_shape(response.json())


# --- what the sweep found, pinned ---------------------------------------------------------------


def test_audit_bounds_need_an_offset_and_a_representable_instant(client: TestClient, orgs: Org) -> None:
    admin = orgs.member(Role.CHIEF_AI_OFFICER, email="bounds-admin@example.com")
    for bad in DATE_TIME_EDGES:
        response = client.get("/api/v1/audit-events", headers=admin.headers, params={"since": bad})
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "validation_failed"
        assert response.json()["error"]["details"]["errors"][0]["location"] == ["query", "since"]
    response = client.get(
        "/api/v1/audit-events", headers=admin.headers, params={"since": "2000-01-01T02:00:00+02:00"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["items"], "every event is after 2000"
    response = client.get(
        "/api/v1/audit-events", headers=admin.headers, params={"until": "2000-01-01T00:00:00Z"}
    )
    assert response.json()["items"] == []


def test_nul_is_invalid_input_where_the_database_refuses_it(
    client: TestClient, orgs: Org, engine_name: str
) -> None:
    admin = orgs.member(Role.CHIEF_AI_OFFICER, email="nul-admin@example.com")
    created = client.post(
        "/api/v1/business-units", headers=admin.headers, json={"slug": "nul", "name": "x" + NUL + "y"}
    )
    found = client.get("/api/v1/people", headers=admin.headers, params={"business_unit_id": NUL})
    if engine_name == "postgresql":
        for response in (created, found):
            assert response.status_code == 422, response.text
            assert response.json()["error"]["code"] == "validation_failed"
            assert "NUL" in response.json()["error"]["details"]["reason"]
    else:
        assert created.status_code == 201, created.text
        assert found.status_code == 200, found.text
