"""A test for every cell of the permission matrix (role x action), through the real HTTP API.

``EXPECTED`` below is the specification, written out by hand: it is deliberately NOT derived from
``bridgehead.auth.roles.MATRIX``. If the code and this table disagree, one of them is wrong.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from bridgehead.auth.roles import Action, Role
from tests.conftest import Member, Org

# Columns, in this order, of every row of EXPECTED.
ACTIONS: tuple[str, ...] = (
    "org.read",
    "unit.manage",
    "person.manage",
    "token.create_own",
    "token.manage_any",
    "audit.read",
    "tracking.read",
    "tracking.write",
    "model.register",
    "model.alias",
    "data.read",
    "data.write",
    "data.pii",
    "serving.read",
    "serving.deploy",
    "serving.invoke",
    "serving.feedback",
    "jobs.read",
    "jobs.cancel",
    "monitoring.read",
    "monitoring.manage",
    "incident.handle",
)

Y, N = True, False

# fmt: off
EXPECTED: dict[str, tuple[bool, ...]] = {
    #                              org.  unit.   person. token.  token.  audit. track. track. model.    model. data. data.  data. serv. serv.   serv.   serv.      jobs. jobs.   mon.  mon.    incident.
    #                              read  manage  manage  own     any     read   read   write  register  alias  read  write  pii   read  deploy  invoke  feedback   read  cancel  read  manage  handle
    "chief_ai_officer":          (Y,    Y,      Y,      Y,      Y,      Y,     Y,     Y,     Y,        Y,     Y,    Y,     Y,    Y,    Y,      Y,      Y,      Y,    Y,      Y,    Y,      Y),
    "ai_program_manager":        (Y,    N,      N,      Y,      N,      N,     Y,     N,     N,        N,     Y,    N,     N,    Y,    N,      Y,      N,      Y,    N,      Y,    N,      N),
    "data_scientist":            (Y,    N,      N,      Y,      N,      N,     Y,     Y,     Y,        Y,     Y,    Y,     N,    Y,    N,      Y,      Y,      Y,    N,      Y,    Y,      Y),
    "ml_engineer":               (Y,    N,      N,      Y,      N,      N,     Y,     Y,     Y,        Y,     Y,    Y,     N,    Y,    Y,      Y,      Y,      Y,    Y,      Y,    Y,      Y),
    "data_engineer":             (Y,    N,      N,      Y,      N,      N,     Y,     Y,     N,        N,     Y,    Y,     Y,    Y,    N,      Y,      Y,      Y,    Y,      Y,    N,      N),
    "ethics_compliance_officer": (Y,    N,      N,      Y,      N,      Y,     Y,     N,     N,        N,     Y,    N,     Y,    Y,    N,      Y,      N,      Y,    N,      Y,    N,      Y),
    "ai_champion":               (Y,    N,      N,      Y,      N,      N,     Y,     N,     N,        N,     Y,    N,     N,    Y,    N,      Y,      Y,      Y,    N,      Y,    N,      N),
    "business_user":             (Y,    N,      N,      Y,      N,      N,     Y,     N,     N,        N,     Y,    N,     N,    Y,    N,      Y,      N,      Y,    N,      Y,    N,      N),
}
# fmt: on

CELLS: list[tuple[str, str, bool]] = [
    (role, action, row[i]) for role, row in EXPECTED.items() for i, action in enumerate(ACTIONS)
]


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# --- the one request that exercises each action -----------------------------------------------

Exercise = Callable[[TestClient, Org, Member], httpx.Response]


def _org_read(client: TestClient, orgs: Org, me: Member) -> httpx.Response:
    return client.get("/api/v1/business-units", headers=me.headers)


def _unit_manage(client: TestClient, orgs: Org, me: Member) -> httpx.Response:
    slug = _unique("unit")
    return client.post(
        "/api/v1/business-units", headers=me.headers, json={"slug": slug, "name": slug.title()}
    )


def _person_manage(client: TestClient, orgs: Org, me: Member) -> httpx.Response:
    email = f"{_unique('invitee')}@example.com"
    body = {
        "email": email,
        "name": "Invitee",
        "role": "business_user",
        "business_unit_id": orgs.unit("retail"),
    }
    return client.post("/api/v1/people", headers=me.headers, json=body)


def _token_create_own(client: TestClient, orgs: Org, me: Member) -> httpx.Response:
    return client.post("/api/v1/tokens", headers=me.headers, json={"name": "matrix"})


def _token_manage_any(client: TestClient, orgs: Org, me: Member) -> httpx.Response:
    someone_else = orgs.member(Role.DATA_ENGINEER, unit="retail")
    return client.get("/api/v1/tokens", headers=me.headers, params={"person_id": someone_else.id})


def _audit_read(client: TestClient, orgs: Org, me: Member) -> httpx.Response:
    return client.get("/api/v1/audit-events", headers=me.headers)


def _tracking_read(client: TestClient, orgs: Org, me: Member) -> httpx.Response:
    return client.get("/api/v1/experiments", headers=me.headers)


def _tracking_write(client: TestClient, orgs: Org, me: Member) -> httpx.Response:
    return client.post("/api/v1/experiments", headers=me.headers, json={"name": _unique("experiment")})


def _model_register(client: TestClient, orgs: Org, me: Member) -> httpx.Response:
    return client.post("/api/v1/registered-models", headers=me.headers, json={"name": _unique("model")})


def _data_read(client: TestClient, orgs: Org, me: Member) -> httpx.Response:
    return client.get("/api/v1/datasets", headers=me.headers)


def _data_write(client: TestClient, orgs: Org, me: Member) -> httpx.Response:
    return client.post("/api/v1/datasets", headers=me.headers, json={"name": _unique("dataset")})


def _data_pii(client: TestClient, orgs: Org, me: Member) -> httpx.Response:
    # A dataset of the caller's own unit, uploaded by a colleague: only the unmasked view is at stake.
    colleague = orgs.member(Role.DATA_ENGINEER, unit="retail").headers
    dataset = _ok(client.post("/api/v1/datasets", headers=colleague, json={"name": _unique("people")}))
    csv = b"email,score\nanna@example.com,1\nbob@example.org,2\n"
    _ok(client.put(f"/api/v1/datasets/{dataset['id']}/upload/people.csv", headers=colleague, content=csv))
    url = f"/api/v1/datasets/{dataset['id']}/versions/1/profile"
    return client.get(url, headers=me.headers, params={"unmasked": "true"})


def _ok(response: httpx.Response) -> Any:
    assert response.status_code < 300, response.text
    return response.json() if response.content else None


def _model_alias(client: TestClient, orgs: Org, me: Member) -> httpx.Response:
    # A version in the caller's own unit, registered by a colleague who may: only the alias is at stake.
    colleague = orgs.member(Role.DATA_SCIENTIST, unit="retail").headers
    experiment = _ok(client.post("/api/v1/experiments", headers=colleague, json={"name": _unique("exp")}))
    run = _ok(client.post("/api/v1/runs", headers=colleague, json={"experiment_id": experiment["id"]}))
    manifest = b'{"flavor": "onnx", "files": ["model.onnx"], "meta": {}}'
    for path, data in (("model/bridgehead-model.json", manifest), ("model/model.onnx", b"onnx")):
        _ok(client.put(f"/api/v1/runs/{run['id']}/artifacts/{path}", headers=colleague, content=data))
    name = _unique("aliased")
    _ok(client.post("/api/v1/registered-models", headers=colleague, json={"name": name}))
    body = {"run_id": run["id"], "artifact_path": "model"}
    _ok(client.post(f"/api/v1/registered-models/{name}/versions", headers=colleague, json=body))
    return client.put(
        f"/api/v1/registered-models/{name}/aliases/champion", headers=me.headers, json={"version": 1}
    )


def _real_version(client: TestClient, owner: dict[str, str]) -> str:
    """A loadable scikit-learn model (skops) registered by ``owner``; returns the model's name."""
    import json
    import tempfile
    from pathlib import Path

    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from bridgehead.registry.flavors import SklearnSkops

    x = np.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.2], [0.1, 0.9]])
    model = LogisticRegression().fit(x, [0, 1, 1, 0])
    experiment = _ok(client.post("/api/v1/experiments", headers=owner, json={"name": _unique("exp")}))
    run = _ok(client.post("/api/v1/runs", headers=owner, json={"experiment_id": experiment["id"]}))
    with tempfile.TemporaryDirectory() as tmp:
        saved = SklearnSkops().save(model, Path(tmp))
        manifest = {"flavor": saved.flavor, "files": list(saved.files), "meta": saved.meta, "signature": {}}
        (Path(tmp) / "bridgehead-model.json").write_text(json.dumps(manifest))
        for file in Path(tmp).iterdir():
            url = f"/api/v1/runs/{run['id']}/artifacts/model/{file.name}"
            _ok(client.put(url, headers=owner, content=file.read_bytes()))
    name = _unique("served")
    _ok(client.post("/api/v1/registered-models", headers=owner, json={"name": name}))
    body = {"run_id": run["id"], "artifact_path": "model"}
    _ok(client.post(f"/api/v1/registered-models/{name}/versions", headers=owner, json=body))
    return name


def _endpoint(client: TestClient, orgs: Org) -> str:
    """An endpoint of the retail unit, deployed by an ML engineer there."""
    engineer = orgs.member(Role.ML_ENGINEER, unit="retail").headers
    model = _real_version(client, engineer)
    name = _unique("ep")
    body = {"model": model, "version": "1", "environment": "staging"}
    _ok(client.post(f"/api/v1/endpoints/{name}/deploy", headers=engineer, json=body))
    return name


def _serving_read(client: TestClient, orgs: Org, me: Member) -> httpx.Response:
    return client.get("/api/v1/endpoints", headers=me.headers)


def _serving_deploy(client: TestClient, orgs: Org, me: Member) -> httpx.Response:
    # A loadable version in the caller's own unit, registered by a colleague: only the deploy is at stake.
    model = _real_version(client, orgs.member(Role.DATA_SCIENTIST, unit="retail").headers)
    body = {"model": model, "version": "1", "environment": "staging"}
    return client.post(f"/api/v1/endpoints/{_unique('ep')}/deploy", headers=me.headers, json=body)


def _serving_invoke(client: TestClient, orgs: Org, me: Member) -> httpx.Response:
    name = _endpoint(client, orgs)
    return client.post(f"/serve/{name}/predict", headers=me.headers, json={"records": [{"0": 0.2, "1": 0.4}]})


def _serving_feedback(client: TestClient, orgs: Org, me: Member) -> httpx.Response:
    name = _endpoint(client, orgs)
    return client.post(
        f"/serve/{name}/feedback", headers=me.headers, json={"items": [{"request_id": "r-1", "value": 1}]}
    )


def _jobs_read(client: TestClient, orgs: Org, me: Member) -> httpx.Response:
    return client.get("/api/v1/jobs", headers=me.headers)


def _jobs_cancel(client: TestClient, orgs: Org, me: Member) -> httpx.Response:
    # A job a colleague of the caller's unit submitted (one's own may always be cancelled): only the action is
    # at stake. No worker handles its kind, so it is still queued.
    from bridgehead.auth.service import principal_of
    from bridgehead.jobs import service as jobs

    colleague = orgs.member(Role.DATA_SCIENTIST, unit="retail")
    with orgs.db.session(write=True) as session:
        job = jobs.enqueue(session, principal_of(session, colleague.id), "matrix.noop", {})
    return client.post(f"/api/v1/jobs/{job.id}/cancel", headers=me.headers)


def _monitoring_read(client: TestClient, orgs: Org, me: Member) -> httpx.Response:
    return client.get("/api/v1/monitors", headers=me.headers)


def _monitoring_manage(client: TestClient, orgs: Org, me: Member) -> httpx.Response:
    name = _endpoint(client, orgs)
    body = {"name": _unique("monitor"), "window_minutes": 60}
    return client.post(f"/api/v1/endpoints/{name}/monitors", headers=me.headers, json=body)


def _incident_handle(client: TestClient, orgs: Org, me: Member) -> httpx.Response:
    # An open incident of a monitor of the caller's unit: only acknowledging it is at stake.
    from bridgehead.auth.service import principal_of
    from bridgehead.monitoring import service as monitoring
    from bridgehead.monitoring.models import Incident

    name = _endpoint(client, orgs)
    engineer = orgs.member(Role.ML_ENGINEER, unit="retail")
    with orgs.db.session(write=True) as session:
        monitor = monitoring.create_monitor(
            session, principal_of(session, engineer.id), name, name=_unique("m"), window_minutes=60
        )
        incident = Incident(
            monitor_id=monitor.id,
            endpoint_id=monitor.endpoint_id,
            business_unit_id=monitor.business_unit_id,
            title="drift",
            severity="warning",
            status="open",
            opened_ms=monitoring.now_ms(),
            last_seen_ms=monitoring.now_ms(),
        )
        session.add(incident)
        session.flush()
        incident_id = incident.id
    return client.post(f"/api/v1/incidents/{incident_id}/acknowledge", headers=me.headers, json={})


EXERCISE: dict[str, Exercise] = {
    "org.read": _org_read,
    "unit.manage": _unit_manage,
    "person.manage": _person_manage,
    "token.create_own": _token_create_own,
    "token.manage_any": _token_manage_any,
    "audit.read": _audit_read,
    "tracking.read": _tracking_read,
    "tracking.write": _tracking_write,
    "model.register": _model_register,
    "model.alias": _model_alias,
    "data.read": _data_read,
    "data.write": _data_write,
    "data.pii": _data_pii,
    "serving.read": _serving_read,
    "serving.deploy": _serving_deploy,
    "serving.invoke": _serving_invoke,
    "serving.feedback": _serving_feedback,
    "jobs.read": _jobs_read,
    "jobs.cancel": _jobs_cancel,
    "monitoring.read": _monitoring_read,
    "monitoring.manage": _monitoring_manage,
    "incident.handle": _incident_handle,
}


def assert_permission_denied(response: httpx.Response, action: str, role: str) -> None:
    assert response.status_code == 403, response.text
    body: Any = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message", "details"}, body
    assert error["code"] == "permission_denied"
    assert isinstance(error["message"], str)
    assert error["message"]
    assert isinstance(error["details"], dict)
    # The refusal names the action that was checked, so this is the matrix talking, not something else.
    assert error["details"].get("action") == action
    assert error["details"].get("role") == role


# --- the table is complete ---------------------------------------------------------------------


def test_table_covers_every_role_and_every_action_in_the_code() -> None:
    assert set(ACTIONS) == {a.value for a in Action}, "an Action was added or removed: extend EXPECTED"
    assert len(ACTIONS) == len(set(ACTIONS))
    assert set(EXPECTED) == {r.value for r in Role}, "a Role was added or removed: extend EXPECTED"
    assert all(len(row) == len(ACTIONS) for row in EXPECTED.values())
    assert set(EXERCISE) == set(ACTIONS), "every action needs the request that exercises it"
    assert {(r, a) for r, a, _ in CELLS} == {(r.value, a.value) for r in Role for a in Action}


# --- one test per cell -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "action", "allowed"),
    CELLS,
    ids=[f"{r}-{a}-{'allowed' if ok else 'denied'}" for r, a, ok in CELLS],
)
def test_cell(client: TestClient, orgs: Org, role: str, action: str, allowed: bool) -> None:
    # A person in an ordinary business unit, so only the role (not central membership) decides.
    me = orgs.member(Role(role), unit="retail")
    response = EXERCISE[action](client, orgs, me)
    if allowed:
        assert 200 <= response.status_code < 300, response.text
    else:
        assert_permission_denied(response, action, role)


# --- the explicit case -----------------------------------------------------------------


def test_business_user_token_cannot_create_a_business_unit(client: TestClient, orgs: Org) -> None:
    user = orgs.member(Role.BUSINESS_USER, unit="retail")
    response = client.post(
        "/api/v1/business-units", headers=user.headers, json={"slug": "shadow-it", "name": "Shadow IT"}
    )
    assert_permission_denied(response, "unit.manage", "business_user")
    # Nothing was created.
    slugs = [u["slug"] for u in client.get("/api/v1/business-units", headers=user.headers).json()["items"]]
    assert "shadow-it" not in slugs
