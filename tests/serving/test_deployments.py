"""Deployments: deploy, canary, A/B, shadow, promote, rollback, retire; permissions, the transition hook,
audit; scoring equals the model's own predict / predict_proba; the prediction log and hourly aggregates."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi.testclient import TestClient
from scipy import stats

from bridgehead.auth.roles import Role
from bridgehead.hookspecs import hookimpl
from bridgehead.serving.predlog import read_log
from tests.conftest import Org
from tests.serving.conftest import FEATURES, Registered, deploy


def _records(frame: Any, rows: slice) -> list[dict[str, float]]:
    return [{k: float(v) for k, v in r.items()} for r in frame.iloc[rows].to_dict("records")]


def test_deploy_and_predict_match_the_model(client: TestClient, registered: Registered) -> None:
    eng = registered.engineer
    created = deploy(client, eng, "credit-prod", "1", environment="production", reason="first release")
    assert created["environment"] == "production" and created["revision"] == 1
    assert [(r["version"], r["weight"], r["role"]) for r in created["routes"]] == [(1, 100.0, "route")]  # type: ignore[index, union-attr]
    records = _records(registered.frame, slice(0, 25))
    answer = client.post("/serve/credit-prod/predict", json={"records": records}, headers=eng.headers)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    x = registered.frame.iloc[:25]
    assert body["predictions"] == registered.v1.predict(x).tolist()
    # Served by ONNX Runtime (float32): probabilities agree with scikit-learn's to 1e-5.
    assert client.app.state.runtime.loaded_ids() and all(  # type: ignore[attr-defined]
        client.app.state.runtime.cached(v).engine == "onnxruntime"  # type: ignore[attr-defined]
        for v in client.app.state.runtime.loaded_ids()  # type: ignore[attr-defined]
    )
    np.testing.assert_allclose(body["probabilities"], registered.v1.predict_proba(x), atol=1e-5)
    assert body["classes"] == [0, 1] and body["version"] == 1 and body["versions"] == [1] * 25
    assert len(body["ids"]) == 25 and len(set(body["ids"])) == 25
    # Every row is in the prediction log once it is flushed, with its inputs, outputs and version.
    client.app.state.predlog.flush()  # type: ignore[attr-defined]
    root = client.app.state.settings.resolved_prediction_log_dir  # type: ignore[attr-defined]
    table = next(read_log(root, "credit-prod"))
    assert sorted(table.column("request_id").to_pylist()) == sorted(body["ids"])
    assert set(table.column("version").to_pylist()) == {1}
    # Inputs and outputs are typed columns: a feature reads back as the numbers sent.
    by_id = dict(zip(table.column("request_id").to_pylist(), table.column("inputs").to_pylist(), strict=True))
    logged = [by_id[i] for i in body["ids"]]
    assert [[row[c] for c in x.columns] for row in logged] == x.to_numpy().tolist()
    outputs = dict(
        zip(table.column("request_id").to_pylist(), table.column("outputs").to_pylist(), strict=True)
    )
    assert [outputs[i]["prediction"] for i in body["ids"]] == body["predictions"]
    stats_body = client.get("/api/v1/endpoints/credit-prod/stats", headers=eng.headers).json()
    hour = stats_body["hours"][0]
    assert (hour["requests"], hour["rows"], hour["errors"], hour["version"]) == (1, 25, 0, 1)
    assert hour["mean_latency_ms"] > 0 and hour["p99_latency_ms"] is not None


def test_canary_split_is_sticky_and_proportional(client: TestClient, registered: Registered) -> None:
    eng = registered.engineer
    deploy(client, eng, "credit", "1", environment="staging")
    canary = deploy(client, eng, "credit", "2", strategy="canary", weight=20)
    weights = {r["version"]: r["weight"] for r in canary["routes"]}  # type: ignore[union-attr, index]
    assert weights == {1: 80.0, 2: 20.0}
    n = 2000
    records = [{k: float(v) for k, v in registered.frame.iloc[i % 400].items()} for i in range(n)]
    keys = [f"customer-{i}" for i in range(n)]
    first = client.post("/serve/credit/predict", json={"records": records, "keys": keys}, headers=eng.headers)
    assert first.status_code == 200, first.text
    versions = np.array(first.json()["versions"])
    counts = [int((versions == 1).sum()), int((versions == 2).sum())]
    assert stats.chisquare(counts, [0.8 * n, 0.2 * n]).pvalue > 0.001
    again = client.post(
        "/serve/credit/predict", json={"records": records[:300], "keys": keys[:300]}, headers=eng.headers
    )
    assert again.json()["versions"] == first.json()["versions"][:300]  # sticky by key
    # Each row's answer is its own version's prediction.
    x = registered.frame.iloc[[i % 400 for i in range(n)]]
    expected = np.where(versions == 1, registered.v1.predict(x), registered.v2.predict(x))
    assert first.json()["predictions"] == expected.tolist()


def test_shadow_answers_are_logged_never_returned(client: TestClient, registered: Registered) -> None:
    eng = registered.engineer
    deploy(client, eng, "credit", "1", environment="staging")
    shadowed = deploy(client, eng, "credit", "2", strategy="shadow")
    assert [(r["version"], r["role"]) for r in shadowed["routes"]] == [(1, "route"), (2, "shadow")]  # type: ignore[index, union-attr]
    records = _records(registered.frame, slice(0, 10))
    body = client.post("/serve/credit/predict", json={"records": records}, headers=eng.headers).json()
    assert body["versions"] == [1] * 10
    assert body["predictions"] == registered.v1.predict(registered.frame.iloc[:10]).tolist()
    client.app.state.predlog.flush()  # type: ignore[attr-defined]
    root = client.app.state.settings.resolved_prediction_log_dir  # type: ignore[attr-defined]
    rows = [r for batch in read_log(root, "credit") for r in batch.to_pylist()]
    shadow = sorted((r for r in rows if r["role"] == "shadow"), key=lambda r: r["row"])
    assert [r["request_id"] for r in shadow] == body["ids"] and {r["version"] for r in shadow} == {2}
    assert [r["outputs"]["prediction"] for r in shadow] == registered.v2.predict(
        registered.frame.iloc[:10]
    ).tolist()
    # The shadow's class probabilities are logged as its model gave them, a list per row.
    expected = registered.v2.predict_proba(registered.frame.iloc[:10])
    assert np.allclose([r["outputs"]["probabilities"] for r in shadow], expected, atol=1e-5)


def test_promote_and_rollback_walk_the_history(client: TestClient, registered: Registered) -> None:
    eng = registered.engineer
    h = eng.headers
    deploy(client, eng, "credit", "1", environment="production")  # r1: v1
    deploy(client, eng, "credit", "2", strategy="canary")  # r2: v1 90 / v2 10
    promoted = client.post("/api/v1/endpoints/credit/promote", json={"reason": "canary healthy"}, headers=h)
    assert promoted.status_code == 200, promoted.text
    assert [(r["version"], r["weight"]) for r in promoted.json()["routes"]] == [(2, 100.0)]  # r3
    deploy(client, eng, "credit", "3")  # r4: v3
    back = client.post(
        "/api/v1/endpoints/credit/rollback", json={"reason": "v3 misbehaves"}, headers=h
    ).json()
    assert [(r["version"], r["weight"]) for r in back["routes"]] == [(2, 100.0)]  # r5 restores r3
    back = client.post("/api/v1/endpoints/credit/rollback", json={}, headers=h).json()
    assert sorted((r["version"], r["weight"]) for r in back["routes"]) == [(1, 90.0), (2, 10.0)]  # r2
    back = client.post("/api/v1/endpoints/credit/rollback", json={}, headers=h).json()
    assert [(r["version"], r["weight"]) for r in back["routes"]] == [(1, 100.0)]  # r1
    none_left = client.post("/api/v1/endpoints/credit/rollback", json={}, headers=h)
    assert none_left.status_code == 409 and "no earlier configuration" in none_left.json()["error"]["message"]
    history = client.get("/api/v1/endpoints/credit/revisions", headers=h).json()
    assert [r["action"] for r in history] == [
        "rollback",
        "rollback",
        "rollback",
        "deploy",
        "promote",
        "deploy",
        "deploy",
    ]
    assert history[-3]["reason"] == "canary healthy"
    # The answer follows the configuration in force.
    record = _records(registered.frame, slice(0, 1))
    assert client.post("/serve/credit/predict", json={"records": record}, headers=h).json()["version"] == 1
    events = client.get(
        "/api/v1/audit-events?object_type=endpoint&limit=100", headers=_admin_headers(client)
    ).json()
    actions = [e["action"] for e in events["items"]]
    assert actions.count("endpoint.rollback") == 3 and "endpoint.promote" in actions


def _admin_headers(client: TestClient) -> dict[str, str]:
    from tests.conftest import Org

    org = Org(client.app.state.db)  # type: ignore[attr-defined]
    return org.member(Role.CHIEF_AI_OFFICER).headers


def test_set_traffic_validates_the_split(client: TestClient, registered: Registered) -> None:
    h = registered.engineer.headers
    deploy(client, registered.engineer, "credit", "1", environment="staging")
    body = {
        "routes": [
            {"model": "credit-risk", "version": "1", "weight": 50},
            {"model": "credit-risk", "version": "2", "weight": 40},
        ]
    }
    bad = client.put("/api/v1/endpoints/credit/traffic", json=body, headers=h)
    assert bad.status_code == 422 and "100" in bad.json()["error"]["message"]
    body["routes"][1]["weight"] = 50  # type: ignore[index]
    body["shadows"] = [{"model": "credit-risk", "version": "3"}]  # type: ignore[assignment]
    ok = client.put("/api/v1/endpoints/credit/traffic", json=body, headers=h)
    assert ok.status_code == 200, ok.text
    assert sorted((r["version"], r["weight"], r["role"]) for r in ok.json()["routes"]) == [
        (1, 50.0, "route"),
        (2, 50.0, "route"),
        (3, 100.0, "shadow"),
    ]
    both = {
        "routes": [{"model": "credit-risk", "version": "1", "weight": 100}],
        "shadows": [{"model": "credit-risk", "version": "1"}],
    }
    assert client.put("/api/v1/endpoints/credit/traffic", json=both, headers=h).status_code == 422
    # Aliases resolve: "champion" names a version.
    aliased = client.put(
        "/api/v1/registered-models/credit-risk/aliases/champion", json={"version": 3}, headers=h
    )
    assert aliased.status_code == 200, aliased.text
    champion = deploy(client, registered.engineer, "credit", "champion")
    assert [(r["version"], r["weight"]) for r in champion["routes"]] == [(3, 100.0)]  # type: ignore[index, union-attr]


def test_a_version_that_cannot_load_is_refused_and_the_endpoint_keeps_serving(
    client: TestClient, registered: Registered, orgs: Org
) -> None:
    from sklearn.linear_model import LogisticRegression

    import bridgehead as bh

    eng = registered.engineer
    deploy(client, eng, "credit", "1", environment="production")
    with bh.start_run():  # a pickled model: stored, never unpickled unless the installation trusts pickle
        bh.log_model(
            LogisticRegression().fit(registered.frame, registered.y),
            "model",
            registered_model_name="credit-risk",
            flavor="pickle",
        )
    refused = client.post(
        "/api/v1/endpoints/credit/deploy", json={"model": "credit-risk", "version": "4"}, headers=eng.headers
    )
    assert refused.status_code == 403, refused.text
    message = refused.json()["error"]["message"]
    assert "cannot be served" in message and "pickle" in message
    current = client.get("/api/v1/endpoints/credit", headers=eng.headers).json()
    assert current["revision"] == 1 and [r["version"] for r in current["routes"]] == [1]
    record = _records(registered.frame, slice(0, 1))
    assert (
        client.post("/serve/credit/predict", json={"records": record}, headers=eng.headers).status_code == 200
    )


def test_permissions_and_unit_isolation(client: TestClient, registered: Registered, orgs: Org) -> None:
    eng = registered.engineer
    scientist = orgs.member(Role.DATA_SCIENTIST, unit="retail")
    denied = client.post(
        "/api/v1/endpoints/x/deploy", json={"model": "credit-risk", "version": "1"}, headers=scientist.headers
    )
    assert denied.status_code == 403 and denied.json()["error"]["details"]["action"] == "serving.deploy"
    deploy(client, eng, "credit", "1", environment="production")
    record = {"records": _records(registered.frame, slice(0, 1))}
    colleague = orgs.member(Role.BUSINESS_USER, unit="retail")
    assert client.post("/serve/credit/predict", json=record, headers=colleague.headers).status_code == 200
    outsider = orgs.member(Role.BUSINESS_USER, unit="wholesale")
    assert client.post("/serve/credit/predict", json=record, headers=outsider.headers).status_code == 404
    assert client.get("/api/v1/endpoints/credit", headers=outsider.headers).status_code == 404
    assert client.post("/serve/credit/predict", json=record).status_code == 401
    granted = client.put(
        "/api/v1/endpoints/credit/invokers", json={"units": [orgs.unit("wholesale")]}, headers=eng.headers
    )
    assert granted.status_code == 200, granted.text
    assert client.post("/serve/credit/predict", json=record, headers=outsider.headers).status_code == 200
    other_engineer = orgs.member(Role.ML_ENGINEER, unit="wholesale")
    taken = client.post("/api/v1/endpoints/credit/rollback", json={}, headers=other_engineer.headers)
    assert taken.status_code == 404  # not theirs to change (nor to see in the management API)


class _RefuseProduction:
    @hookimpl
    def check_transition(
        self,
        session: Any,
        principal: Any,
        endpoint: Any,
        action: str,
        current: dict[str, Any],
        proposed: dict[str, Any],
    ) -> str | None:
        if endpoint.environment == "production" and action in {"deploy", "promote"}:
            return "production changes need an approval"
        return None


def test_every_change_goes_through_check_transition(client: TestClient, registered: Registered) -> None:
    eng = registered.engineer
    deploy(client, eng, "credit-staging", "1", environment="staging")
    client.app.state.plugins.register(_RefuseProduction(), name="refuse")  # type: ignore[attr-defined]
    try:
        refused = client.post(
            "/api/v1/endpoints/credit-prod/deploy",
            json={"model": "credit-risk", "version": "1", "environment": "production"},
            headers=eng.headers,
        )
        assert refused.status_code == 409
        assert refused.json()["error"]["details"]["reasons"] == ["production changes need an approval"]
        assert (
            client.get("/api/v1/endpoints/credit-prod", headers=eng.headers).status_code == 404
        )  # nothing half-done
        deploy(client, eng, "credit-staging", "2", strategy="canary")  # staging is allowed
    finally:
        client.app.state.plugins.unregister(name="refuse")  # type: ignore[attr-defined]


def test_signature_errors_name_the_column(client: TestClient, registered: Registered) -> None:
    h = registered.engineer.headers
    deploy(client, registered.engineer, "credit", "1", environment="staging")
    good = _records(registered.frame, slice(0, 2))
    missing = [{k: v for k, v in r.items() if k != "income"} for r in good]
    answer = client.post("/serve/credit/predict", json={"records": missing}, headers=h)
    assert answer.status_code == 422 and answer.json()["error"]["details"]["column"] == "income"
    wrong = [dict(r, debt="a lot") for r in good]
    answer = client.post("/serve/credit/predict", json={"records": wrong}, headers=h)
    assert answer.status_code == 422 and answer.json()["error"]["details"]["column"] == "debt"
    extra = [dict(r, shoe_size=42.0) for r in good]
    answer = client.post("/serve/credit/predict", json={"records": extra}, headers=h)
    assert answer.status_code == 422 and answer.json()["error"]["details"]["column"] == "shoe_size"
    nulls = [dict(r, age=None) for r in good]
    answer = client.post("/serve/credit/predict", json={"records": nulls}, headers=h)
    assert answer.status_code == 422 and answer.json()["error"]["details"]["column"] == "age"
    assert client.post("/serve/nowhere/predict", json={"records": good}, headers=h).status_code == 404
    not_json = client.post(
        "/serve/credit/predict", content=b"{", headers={**h, "content-type": "application/json"}
    )
    assert not_json.status_code == 400
    assert set(FEATURES) <= set(good[0])


def test_feedback_labels_and_overrides(client: TestClient, registered: Registered, orgs: Org) -> None:
    eng = registered.engineer
    deploy(client, eng, "credit", "1", environment="production")
    body = client.post(
        "/serve/credit/predict",
        json={"records": _records(registered.frame, slice(0, 3))},
        headers=eng.headers,
    ).json()
    items = [{"request_id": body["ids"][0], "value": 1}, {"request_id": body["ids"][1], "value": 0}]
    sent = client.post("/serve/credit/feedback", json={"items": items}, headers=eng.headers)
    assert sent.status_code == 200 and sent.json() == {"created": 2, "updated": 0}
    again = client.post("/serve/credit/feedback", json={"items": items[:1]}, headers=eng.headers)
    assert again.json() == {"created": 0, "updated": 1}
    no_reason = [{"request_id": body["ids"][2], "kind": "override", "value": 0}]
    assert (
        client.post("/serve/credit/feedback", json={"items": no_reason}, headers=eng.headers).status_code
        == 422
    )
    override = [{"request_id": body["ids"][2], "kind": "override", "value": 0, "reason": "manual review"}]
    assert (
        client.post("/serve/credit/feedback", json={"items": override}, headers=eng.headers).status_code
        == 200
    )
    counts = client.get("/api/v1/endpoints/credit/stats", headers=eng.headers).json()["feedback"]
    assert counts == {"label": 2, "override": 1}
    reader = orgs.member(Role.BUSINESS_USER, unit="retail")
    assert (
        client.post("/serve/credit/feedback", json={"items": items}, headers=reader.headers).status_code
        == 403
    )


def test_lineage_runs_from_the_version_to_the_endpoints_serving_it(
    client: TestClient, registered: Registered
) -> None:
    eng = registered.engineer
    h = eng.headers
    deploy(client, eng, "credit", "1", environment="production")
    deploy(client, eng, "credit", "2", strategy="canary", weight=25)
    routes = client.get("/api/v1/endpoints/credit", headers=h).json()["routes"]
    version = {"id": next(r["version_id"] for r in routes if r["version"] == 2)}
    lineage = client.get("/api/v1/registered-models/credit-risk/versions/2/lineage", headers=h).json()
    assert lineage["deployments"] == [
        {"endpoint": "credit", "environment": "production", "role": "route", "weight": 25.0}
    ]
    graph = client.get("/api/v1/lineage", params={"node": f"model_version:{version['id']}"}, headers=h).json()
    endpoint_nodes = [n for n in graph["nodes"] if n["type"] == "endpoint"]
    assert [n["label"] for n in endpoint_nodes] == ["credit (production)"]
    deployed = {e["source"]: e["label"] for e in graph["edges"] if e["kind"] == "deployed"}
    assert deployed[f"model_version:{version['id']}"] == "25 %" and sorted(deployed.values()) == [
        "25 %",
        "75 %",
    ]
    assert all(e["target"] == endpoint_nodes[0]["id"] for e in graph["edges"] if e["kind"] == "deployed")
    # From the endpoint: both versions serving it, and upstream to their runs.
    around = client.get("/api/v1/lineage", params={"node": endpoint_nodes[0]["id"]}, headers=h).json()
    assert {n["label"] for n in around["nodes"] if n["type"] == "model_version"} == {
        "credit-risk v1",
        "credit-risk v2",
    }
    assert any(n["type"] == "run" for n in around["nodes"])
    page = client.get("/data/lineage", params={"node": endpoint_nodes[0]["id"]}, headers=h)
    assert page.status_code in (200, 401)  # the console needs a session; the API answered above


def test_the_model_version_page_lists_its_deployments(client: TestClient, registered: Registered) -> None:
    from tests.tracking.test_pages import sign_in

    eng = registered.engineer
    deploy(client, eng, "credit", "1", environment="production")
    deploy(client, eng, "credit", "2", strategy="canary", weight=10)
    sign_in(client, eng)
    page = client.get("/models/credit-risk/versions/2")
    assert page.status_code == 200
    assert 'href="/deployments/credit"' in page.text and "production · 10 % of traffic" in page.text
    unused = client.get("/models/credit-risk/versions/3")
    assert "Not deployed" in unused.text and 'href="/deployments/credit"' not in unused.text


def test_seeing_logged_inputs_in_the_console_is_audited(
    client: TestClient, registered: Registered, orgs: Org
) -> None:
    from tests.tracking.test_pages import sign_in

    eng = registered.engineer
    deploy(client, eng, "credit", "1", environment="production")
    records = _records(registered.frame, slice(0, 2))
    assert (
        client.post("/serve/credit/predict", json={"records": records}, headers=eng.headers).status_code
        == 200
    )
    client.app.state.predlog.flush()  # type: ignore[attr-defined]
    sign_in(client, eng)  # no data.pii: inputs hidden, nothing to audit
    assert "hidden (needs data.pii)" in client.get("/deployments/credit").text
    chief = orgs.member(Role.CHIEF_AI_OFFICER)
    sign_in(client, chief)
    page = client.get("/deployments/credit").text
    assert "&#34;income&#34;" in page or '"income"' in page
    client.cookies.clear()
    events = client.get("/api/v1/audit-events?action=endpoint.inputs.read", headers=chief.headers).json()[
        "items"
    ]
    assert [(e["actor_email"], e["changes"]["rows"]) for e in events] == [(chief.email, 2)]


def test_hourly_aggregates_match_a_row_by_row_count(client: TestClient, registered: Registered) -> None:
    """Requests, rows, errors and the latency histogram per (endpoint, hour, version, role), folded in twice
    (the second fold adds to the rows the first made), against a plain count of the same requests. Latencies
    equal to a bucket bound fall in that bound's bucket; one past the last bound in the open bucket."""
    import pandas as pd
    import pyarrow as pa

    from bridgehead.serving.models import PredictionHour
    from bridgehead.serving.predlog import PredictionBatch, _batches_table
    from bridgehead.serving.runtime import LATENCY_BUCKETS_MS
    from bridgehead.serving.service import add_hours

    deploy(client, registered.engineer, "credit", "1", environment="production")
    hour = 3_600_000
    t0 = 1_700_000_000_000 // hour * hour
    specs = [  # (version, role, hour offset, rows, latency, status)
        (1, "primary", 0, 1, 5.0, "ok"),
        (1, "primary", 0, 3, 0.4, "ok"),
        (1, "primary", 0, 2, 9999.0, "error"),
        (2, "shadow", 0, 1, 2.5, "ok"),
        (1, "primary", 1, 4, 120.0, "ok"),
    ]
    batches = [
        PredictionBatch(
            ids=[f"r{k}.{i}" for i in range(n)],
            endpoint="credit",
            model_names=["credit-risk"] * n,
            versions=[v] * n,
            role=role,
            ts_ms=t0 + h * hour + k,
            latency_ms=lat,
            inputs=pd.DataFrame({"x": [float(i) for i in range(n)]}),
            predictions=None if status == "error" else [0] * n,
            status=status,
            error="boom" if status == "error" else None,
        )
        for k, (v, role, h, n, lat, status) in enumerate(specs)
    ]
    table = pa.concat_tables([_batches_table([b]) for b in batches], promote_options="permissive")
    db = client.app.state.db  # type: ignore[attr-defined]
    for _ in range(2):
        with db.session(write=True) as session:
            add_hours(session, table)

    expected: dict[tuple[int, int, str], dict[str, object]] = {}
    for v, role, h, n, lat, status in specs:
        e = expected.setdefault(
            (t0 + h * hour, v, role),
            {
                "requests": 0,
                "rows": 0,
                "errors": 0,
                "sum": 0.0,
                "max": 0.0,
                "hist": [0] * (len(LATENCY_BUCKETS_MS) + 1),
            },
        )
        e["requests"] += 2  # type: ignore[operator]
        e["rows"] += 2 * n  # type: ignore[operator]
        e["errors"] += 2 * n if status == "error" else 0  # type: ignore[operator]
        e["sum"] += 2 * lat  # type: ignore[operator]
        e["max"] = max(e["max"], lat)  # type: ignore[type-var]
        bucket = next(
            (i for i, bound in enumerate(LATENCY_BUCKETS_MS) if lat <= bound), len(LATENCY_BUCKETS_MS)
        )
        e["hist"][bucket] += 2  # type: ignore[index]
    with db.session() as session:
        rows = session.query(PredictionHour).all()
        got = {
            (r.hour_ms, r.version, r.role): {
                "requests": r.requests,
                "rows": r.rows,
                "errors": r.errors,
                "sum": r.latency_sum_ms,
                "max": r.latency_max_ms,
                "hist": list(r.latency_buckets),
            }
            for r in rows
        }
    assert got == expected
