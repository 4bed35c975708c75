"""The Deployments console: the endpoints list grouped by environment, an endpoint's page (routes, traffic,
hourly charts, feedback, recent predictions with inputs only for data.pii, revision history) and the promote
and rollback forms, through the real console routes with the API's permissions. SQLite and PostgreSQL."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bridgehead.auth.roles import Role
from bridgehead.serving import pages
from bridgehead.serving.runtime import LATENCY_BUCKETS_MS
from tests.auth.test_login import _csrf
from tests.conftest import Member, Org
from tests.serving.conftest import Registered, deploy
from tests.serving.test_deployments import _RefuseProduction
from tests.tracking.pagetools import flash_error, islands, table
from tests.tracking.test_pages import HTML, sign_in


def _records(registered: Registered, start: int, n: int) -> list[dict[str, float]]:
    rows = registered.frame.iloc[start : start + n].to_dict("records")
    return [{k: float(v) for k, v in r.items()} for r in rows]


def _predict(client: TestClient, member: Member, endpoint: str, records: list[dict[str, float]]) -> Any:
    answer = client.post(f"/serve/{endpoint}/predict", json={"records": records}, headers=member.headers)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _flush(client: TestClient) -> None:
    client.app.state.predlog.flush()  # type: ignore[attr-defined]


def _groups(html: str) -> tuple[list[str], dict[str, list[list[str]]]]:
    """The endpoints table: its header, and its rows under each environment's heading row."""
    head, rows = table(html, "endpoints")
    groups: dict[str, list[list[str]]] = {}
    for row in rows:
        if len(row) == 1:
            current = groups.setdefault(row[0], [])
        else:
            current.append(row)
    return head[0], groups


def _routes(client: TestClient, member: Member, endpoint: str) -> list[tuple[int, float, str]]:
    found = client.get(f"/api/v1/endpoints/{endpoint}", headers=member.headers)
    assert found.status_code == 200, found.text
    return sorted((r["version"], r["weight"], r["role"]) for r in found.json()["routes"])


@pytest.fixture
def canary(client: TestClient, registered: Registered) -> str:
    """credit-prod in production: r1 v1, r2 v1 80 % / v2 20 % (canary), r3 the same with v3 as a shadow."""
    eng = registered.engineer
    deploy(client, eng, "credit-prod", "1", environment="production", reason="first release")
    deploy(client, eng, "credit-prod", "2", strategy="canary", weight=20, reason="try the boosted trees")
    deploy(client, eng, "credit-prod", "3", strategy="shadow")
    return "credit-prod"


def test_pages_need_a_signed_in_person(client: TestClient) -> None:
    for path in ("/deployments", "/deployments/credit"):
        r = client.get(path, headers=HTML, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/login?next=")


def test_empty_list_explains_how_to_deploy(client: TestClient, engineer: Member) -> None:
    sign_in(client, engineer)
    page = client.get("/deployments")
    assert page.status_code == 200
    assert "Deploy your first model" in page.text
    assert (
        "bridgehead endpoint deploy" in page.text and "/api/v1/endpoints/credit-scoring/deploy" in page.text
    )
    assert 'href="/deployments" class="active"' in page.text
    assert "not available in this release yet" not in page.text


def test_list_groups_endpoints_by_environment_with_traffic_and_the_last_day(
    client: TestClient, registered: Registered, canary: str, orgs: Org, admin: Member
) -> None:
    eng = registered.engineer
    deploy(client, eng, "credit-staging", "3", environment="staging", description="Next release, tried here.")
    deploy(client, admin, "loans", "1", environment="production", business_unit_id=orgs.unit("lending"))
    _predict(client, eng, canary, _records(registered, 0, 5))
    _predict(client, eng, canary, _records(registered, 5, 3))
    bad = client.post(f"/serve/{canary}/predict", json={"records": [{"age": 1.0}]}, headers=eng.headers)
    assert bad.status_code == 422  # refused before scoring: not a prediction, not counted
    _flush(client)

    sign_in(client, orgs.member(Role.DATA_SCIENTIST, unit="retail"))
    page = client.get("/deployments")
    assert page.status_code == 200
    text = page.text
    head, groups = _groups(text)
    assert head == [
        "Endpoint",
        "Business unit",
        "Status",
        "Traffic",
        "Last change",
        "Requests 24 h",
        "Errors 24 h",
    ]
    assert list(groups) == ["production 1 endpoint", "staging 1 endpoint"]  # production first
    rows = groups["production 1 endpoint"]
    assert [r[0] for r in rows] == ["credit-prod"]  # loans belongs to lending
    row = rows[0]
    assert row[1:3] == ["Retail", "active"]
    assert "v1 80 %" in row[3] and "v2 20 %" in row[3] and "shadow v3" in row[3]
    assert row[4].endswith("revision r3") and row[5] == "2" and row[6] == "0.00 %"
    staging = groups["staging 1 endpoint"]
    assert staging[0][0] == "credit-staging Next release, tried here."
    assert "v3 100 %" in staging[0][3] and staging[0][5] == "0"
    assert 'href="/deployments/credit-prod"' in text
    stats = re.findall(r'<span class="stat-n">([^<]*)</span>', text)
    assert stats[:3] == ["2", "1", "2"]

    only = client.get("/deployments", params={"environment": "staging"}).text
    assert list(_groups(only)[1]) == ["staging 1 endpoint"]

    sign_in(client, admin)  # central staff see every unit
    rows = _groups(client.get("/deployments").text)[1]["production 2 endpoints"]
    assert sorted(r[0] for r in rows) == ["credit-prod", "loans"]
    assert next(r for r in rows if r[0] == "loans")[1] == "Lending"


def test_endpoint_page_shows_routes_charts_feedback_predictions_and_history(
    client: TestClient, registered: Registered, canary: str, admin: Member
) -> None:
    eng = registered.engineer
    answer = _predict(client, eng, canary, _records(registered, 0, 4))
    _predict(client, eng, canary, _records(registered, 10, 1))
    _flush(client)
    items = [
        {"request_id": answer["ids"][0], "value": 1},
        {"request_id": answer["ids"][1], "value": 0},
        {"request_id": answer["ids"][2], "kind": "override", "value": 0, "reason": "manual review"},
    ]
    sent = client.post(f"/serve/{canary}/feedback", json={"items": items}, headers=eng.headers)
    assert sent.status_code == 200, sent.text

    sign_in(client, eng)
    page = client.get(f"/deployments/{canary}")
    assert page.status_code == 200, page.text
    text = page.text
    assert "<h1>credit-prod" in text and "production</span>" in text and "/serve/credit-prod/predict" in text
    head, routes = table(text, "routes")
    assert head[0] == ["Model", "Version", "Traffic", "Role"]
    assert routes == [
        ["credit-risk", "v1", "80 %", "route"],
        ["credit-risk", "v2", "20 %", "route"],
        ["credit-risk", "v3", "copy of all", "shadow"],
    ]
    assert 'href="/models/credit-risk/versions/2"' in text and 'href="/models/credit-risk"' in text
    # The split is drawn on the server: v1 from 0 to 80 %, v2 from 80 % (SVG attributes, no inline style).
    assert 'x="0.0%" y="0" width="80.0%"' in text and 'x="80.0%" y="0" width="20.0%"' in text
    assert " style=" not in text and "<style" not in text

    charts = islands(text)
    assert sorted(charts) == ["chart-1-data", "chart-2-data", "chart-3-data", "chart-4-data"]
    requests = charts["chart-1-data"]
    assert len(requests["series"][0]["x"]) == 24
    answered = {s["name"]: sum(s["y"]) for s in requests["series"]}
    assert answered.get("v1", 0) + answered.get("v2", 0) == 2  # every request answered by one version
    assert answered["v3 (shadow)"] == 2  # and copied to the shadow
    assert [s["name"] for s in charts["chart-3-data"]["series"]] == ["p50", "p99"]
    latency = [v for v in charts["chart-3-data"]["series"][1]["y"] if v is not None]
    assert latency and set(latency) <= set(LATENCY_BUCKETS_MS)
    _, window = table(text, "window")
    assert sum(int(r[2]) for r in window if "shadow" not in r[0]) == 5  # rows answered
    assert next(r for r in window if r[0] == "v3 (shadow)")[1:4] == ["2", "5", "0"]

    feedback = re.findall(r'<span class="stat-n">([^<]*)</span>', text.split('id="feedback"')[1])
    assert feedback[:3] == ["2", "1", "40.0 %"]  # two labels for five predicted rows

    _, predictions = table(text, "predictions")
    assert len(predictions) == 10  # five answered rows and their five shadow copies
    assert all(r[4] == "hidden (needs data.pii)" for r in predictions)
    assert "income" not in text.split('id="predictions"')[1]
    assert set(answer["ids"]) <= set(re.findall(r'data-id="([^"]+)"', text))
    assert answer["ids"][1][:8] + "….1" in {r[1] for r in predictions}
    shadow_rows = [r for r in predictions if r[3] == "shadow"]
    assert len(shadow_rows) == 5 and {r[2] for r in shadow_rows} == {"v3"}

    _, history = table(text, "revisions")
    assert [r[0] for r in history] == ["r3 in force", "r2", "r1"]
    assert [r[1] for r in history] == ["deploy", "deploy", "deploy"]
    assert history[1][2] == "v1 80 % · v2 20 %" and history[0][2] == "v1 80 % · v2 20 % · v3 shadow"
    assert history[1][3] == "try the boosted trees" and history[2][3] == "first release"
    assert history[0][4] == eng.email.split("@")[0]

    # Someone with data.pii sees the inputs; a week's window has 168 hours.
    sign_in(client, admin)
    week = client.get(f"/deployments/{canary}", params={"hours": 168})
    assert week.status_code == 200
    _, predictions = table(week.text, "predictions")
    assert all('"income"' in r[4] for r in predictions)
    assert len(islands(week.text)["chart-1-data"]["series"][0]["x"]) == 168
    assert client.get(f"/deployments/{canary}", params={"hours": 0}, headers=HTML).status_code == 422


def test_an_endpoint_without_traffic_says_so(client: TestClient, registered: Registered) -> None:
    deploy(client, registered.engineer, "quiet", "1", environment="staging")
    sign_in(client, registered.engineer)
    page = client.get("/deployments/quiet")
    assert page.status_code == 200
    assert "No predictions in the last 24 h" in page.text and "No predictions logged yet" in page.text
    assert islands(page.text) == {} and "plotly.min.js" not in page.text
    # A single version: nothing to promote, and r1 has nothing before it.
    assert "A single version serves this endpoint" in page.text
    assert "There is no earlier configuration to roll back to" in page.text


def test_retired_endpoints_are_listed_on_request_and_cannot_be_changed(
    client: TestClient, registered: Registered
) -> None:
    eng = registered.engineer
    deploy(client, eng, "old-credit", "1", environment="production")
    deploy(client, eng, "old-credit", "2", strategy="canary")
    retired = client.post(
        "/api/v1/endpoints/old-credit/retire", json={"reason": "replaced"}, headers=eng.headers
    )
    assert retired.status_code == 200, retired.text
    sign_in(client, eng)
    assert "old-credit" not in client.get("/deployments").text
    listed = client.get("/deployments", params={"retired": "true"})
    rows = _groups(listed.text)[1]["production 1 endpoint"]
    assert rows[0][0] == "old-credit" and rows[0][2] == "retired"
    page = client.get("/deployments/old-credit")
    assert page.status_code == 200 and "promote-form" not in page.text and "rollback-form" not in page.text
    token = _csrf(page.text)
    refused = client.post("/deployments/old-credit/rollback", data={"csrf": token, "confirm": "yes"})
    assert refused.status_code == 409 and "is retired" in flash_error(refused.text)


def test_a_business_user_sees_the_endpoint_without_the_buttons(
    client: TestClient, registered: Registered, canary: str, orgs: Org
) -> None:
    user = orgs.member(Role.BUSINESS_USER, unit="retail")
    sign_in(client, user)
    page = client.get(f"/deployments/{canary}")
    assert page.status_code == 200
    assert table(page.text, "routes")[1][0][1] == "v1"
    assert "promote-form" not in page.text and "rollback-form" not in page.text
    assert ">Promote<" not in page.text and ">Roll back<" not in page.text
    token = _csrf(page.text)  # the sign-out form's
    for action in ("promote", "rollback"):
        r = client.post(
            f"/deployments/{canary}/{action}", data={"csrf": token, "confirm": "yes"}, headers=HTML
        )
        assert r.status_code == 403 and "serving.deploy" in r.text
    assert _routes(client, registered.engineer, canary) == [
        (1, 80.0, "route"),
        (2, 20.0, "route"),
        (3, 100.0, "shadow"),
    ]


def test_another_units_endpoint_is_not_found(
    client: TestClient, registered: Registered, canary: str, orgs: Org
) -> None:
    outsider = orgs.member(Role.ML_ENGINEER, unit="lending")
    sign_in(client, outsider)
    listed = client.get("/deployments")
    assert "credit-prod" not in listed.text and "Deploy your first model" in listed.text
    assert client.get(f"/deployments/{canary}", headers=HTML).status_code == 404
    token = _csrf(listed.text)
    r = client.post(f"/deployments/{canary}/rollback", data={"csrf": token, "confirm": "yes"}, headers=HTML)
    assert r.status_code == 404
    assert client.get("/deployments/no-such-endpoint", headers=HTML).status_code == 404


def test_promote_and_rollback_through_the_forms(
    client: TestClient, registered: Registered, canary: str
) -> None:
    eng = registered.engineer
    url = f"/deployments/{canary}"
    sign_in(client, eng)
    page = client.get(url)
    assert 'id="promote-form"' in page.text and 'id="rollback-form"' in page.text
    assert "The challenger: v2" in page.text
    assert '<option value="credit-risk:3">v3 (shadow)</option>' in page.text
    assert 'from revision r2: <span class="strong">v1 80 % · v2 20 %</span>' in page.text
    token = _csrf(page.text)

    forged = client.post(f"{url}/promote", data={"csrf": "nope", "confirm": "yes"}, headers=HTML)
    assert forged.status_code == 403
    unconfirmed = client.post(f"{url}/promote", data={"csrf": token, "reason": "go"})
    assert unconfirmed.status_code == 400 and "confirmation box" in flash_error(unconfirmed.text)
    assert _routes(client, eng, canary) == [(1, 80.0, "route"), (2, 20.0, "route"), (3, 100.0, "shadow")]

    # The challenger (the smallest share) takes all traffic; the shadow keeps its copy.
    done = client.post(f"{url}/promote", data={"csrf": token, "confirm": "yes", "reason": "canary healthy"})
    assert done.status_code == 200 and "Promoted v2: it answers all traffic (revision 4)." in done.text
    assert _routes(client, eng, canary) == [(2, 100.0, "route"), (3, 100.0, "shadow")]
    # A named version: the shadow.
    done = client.post(f"{url}/promote", data={"csrf": token, "confirm": "yes", "version": "credit-risk:3"})
    assert "Promoted v3" in done.text
    assert _routes(client, eng, canary) == [(3, 100.0, "route")]
    _, history = table(done.text, "revisions")
    assert [r[1] for r in history[:2]] == ["promote", "promote"] and history[1][3] == "canary healthy"

    unconfirmed = client.post(f"{url}/rollback", data={"csrf": token})
    assert unconfirmed.status_code == 400 and "confirmation box" in flash_error(unconfirmed.text)
    back = client.post(f"{url}/rollback", data={"csrf": token, "confirm": "yes", "reason": "v3 misbehaves"})
    assert back.status_code == 200 and "Rolled back (revision 6): v2 100 % · v3 shadow." in back.text
    assert _routes(client, eng, canary) == [(2, 100.0, "route"), (3, 100.0, "shadow")]
    _, history = table(back.text, "revisions")
    assert history[0][:4] == ["r6 in force", "rollback restored r4", "v2 100 % · v3 shadow", "v3 misbehaves"]
    for _ in range(3):  # r4's predecessors: r3, r2, r1
        assert client.post(f"{url}/rollback", data={"csrf": token, "confirm": "yes"}).status_code == 200
    assert _routes(client, eng, canary) == [(1, 100.0, "route")]
    page = client.get(url)
    assert "There is no earlier configuration to roll back to" in page.text
    # A forged request past the disabled form: the service's 409 comes back on the page, not as an error page.
    none_left = client.post(f"{url}/rollback", data={"csrf": token, "confirm": "yes"})
    assert none_left.status_code == 409
    assert "no earlier configuration to roll back to" in flash_error(none_left.text)
    assert table(none_left.text, "routes")[1][0][1] == "v1"
    unknown = client.post(
        f"{url}/promote", data={"csrf": token, "confirm": "yes", "version": "credit-risk:9"}
    )
    assert unknown.status_code == 404  # no such version of the model: not found, like the API

    events = client.get("/api/v1/audit-events?object_type=endpoint&limit=100", headers=_admin(client).headers)
    actions = [e["action"] for e in events.json()["items"]]
    assert actions.count("endpoint.promote") == 2 and actions.count("endpoint.rollback") == 4


def test_a_refused_transition_comes_back_as_a_message(
    client: TestClient, registered: Registered, canary: str
) -> None:
    sign_in(client, registered.engineer)
    url = f"/deployments/{canary}"
    token = _csrf(client.get(url).text)
    client.app.state.plugins.register(_RefuseProduction(), name="refuse")  # type: ignore[attr-defined]
    try:
        refused = client.post(f"{url}/promote", data={"csrf": token, "confirm": "yes"})
    finally:
        client.app.state.plugins.unregister(name="refuse")  # type: ignore[attr-defined]
    assert refused.status_code == 409
    assert "The promote was refused: production changes need an approval" in flash_error(refused.text)
    assert 'id="promote-form"' in refused.text
    assert _routes(client, registered.engineer, canary) == [
        (1, 80.0, "route"),
        (2, 20.0, "route"),
        (3, 100.0, "shadow"),
    ]


def test_traffic_view_places_the_segments() -> None:
    from bridgehead.serving.service import RouteInfo

    view = pages.traffic_view(
        [
            RouteInfo("a", "credit-risk", 1, 62.5, "route"),
            RouteInfo("b", "credit-risk", 2, 37.5, "route"),
            RouteInfo("c", "fraud", 7, 100.0, "shadow"),
        ]
    )
    assert [(r["label"], r["x"], r["width"], r["color"]) for r in view.routes] == [
        ("credit-risk v1", 0.0, 62.5, 0),
        ("credit-risk v2", 62.5, 37.5, 1),
    ]
    assert view.summary == "credit-risk v1 62.5 % · credit-risk v2 37.5 % · fraud v7 shadow"


def _admin(client: TestClient) -> Member:
    return Org(client.app.state.db).member(Role.CHIEF_AI_OFFICER)  # type: ignore[attr-defined]
