"""The Monitoring console: the overview of every monitor, an endpoint's monitoring page (charts over its runs,
the drift-by-input table, the latest run's verdicts, its incidents, "Run now" and the create form), a run's
report page and its downloads with the session, the incident inbox and an incident's page with the acknowledge
and resolve forms, through the real console routes with the API's permissions. SQLite and PostgreSQL.

The data is real: a model trained on an uploaded (profiled) dataset, deployed, scored with drifted traffic
and labelled (tests.monitoring.test_monitors), then monitored."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from bridgehead.auth.roles import Role
from bridgehead.monitoring import service
from bridgehead.monitoring.models import Incident
from tests.auth.test_login import _csrf
from tests.conftest import Org
from tests.monitoring.test_monitors import (  # noqa: F401 — fixtures
    Deployed,
    applicants,
    deployed,
    engineer,
    label,
    score,
)
from tests.tracking.pagetools import flash_error, islands, table
from tests.tracking.test_pages import HTML, sign_in


@dataclass
class Monitored:
    deployed: Deployed
    monitor_id: str
    run_ids: list[str]
    incident_id: str


def _run(client: TestClient, monitor_id: str) -> str:
    """One run of the monitor over the window ending now, computed in-process (as the worker does)."""
    app = client.app
    with app.state.db.session(write=True) as session:  # type: ignore[attr-defined]
        run = service.run_monitor(
            session,
            monitor_id,
            log_root=app.state.settings.resolved_prediction_log_dir,  # type: ignore[attr-defined]
            trigger="manual",
        )
        assert run.status == "succeeded", run.error
        return run.id


@pytest.fixture
def monitored(client: TestClient, deployed: Deployed) -> Monitored:  # noqa: F811
    """The "credit" endpoint with a monitor that ran twice over drifted, half-labelled traffic: two runs, one
    open incident (dataset drift, PSI, accuracy decline)."""
    eng = deployed.engineer
    current = applicants(800, 7, shift=True)
    ids = score(client, eng, current)
    label(client, eng, ids[::2], current["defaulted"].to_numpy()[::2])
    created = client.post(
        "/api/v1/endpoints/credit/monitors",
        json={"name": "drift and quality", "every_minutes": 60, "window_minutes": 60},
        headers=eng.headers,
    )
    assert created.status_code == 201, created.text
    monitor_id = created.json()["id"]
    runs = [_run(client, monitor_id), _run(client, monitor_id)]
    with client.app.state.db.session() as session:  # type: ignore[attr-defined]
        incident = session.scalar(select(Incident).where(Incident.monitor_id == monitor_id))
        assert incident is not None and incident.status == "open"
        return Monitored(deployed, monitor_id, runs, incident.id)


def test_pages_need_a_signed_in_person(client: TestClient) -> None:
    for path in (
        "/monitoring",
        "/monitoring/credit",
        "/monitoring/runs/x",
        "/monitoring/runs/x/report.html",
        "/incidents",
        "/incidents/x",
    ):
        r = client.get(path, headers=HTML, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/login?next="), path


def test_empty_pages_explain_how_to_start(client: TestClient, orgs: Org) -> None:
    sign_in(client, orgs.member(Role.ML_ENGINEER, unit="retail"))
    page = client.get("/monitoring")
    assert page.status_code == 200
    assert "Watch your first endpoint" in page.text and "bridgehead monitor create" in page.text
    assert 'href="/monitoring" class="active"' in page.text and 'href="/incidents"' in page.text
    assert "not available in this release yet" not in page.text
    inbox = client.get("/incidents")
    assert inbox.status_code == 200 and 'href="/incidents" class="active"' in inbox.text
    assert "Nothing needs attention" in inbox.text


def test_overview_endpoint_page_and_report(client: TestClient, monitored: Monitored, orgs: Org) -> None:
    eng = monitored.deployed.engineer
    sign_in(client, eng)
    overview = client.get("/monitoring")
    assert overview.status_code == 200, overview.text
    head, rows = table(overview.text, "monitors")
    assert head[0] == [
        "Endpoint",
        "Monitor",
        "Schedule",
        "Last run",
        "Drift",
        "Accuracy vs baseline",
        "Incidents",
    ]
    assert len(rows) == 1
    row = rows[0]
    assert row[0].startswith("credit") and "production" in row[0] and row[1] == "drift and quality"
    assert row[2] == "hourly last hour each run"
    assert "breach" in row[3] and "800 rows" in row[3]
    assert row[4].startswith("drift 2 of 3 inputs")
    assert "baseline 0.950" in row[5] and re.search(r"\(?-0\.\d{3}", row[5])
    assert row[6] == "critical 1"
    assert f'href="/monitoring/credit?monitor={monitored.monitor_id}"' in overview.text
    stats = re.findall(r'<span class="stat-n">([^<]*)</span>', overview.text)
    assert stats[:4] == ["1", "1", "1", "1"]

    page = client.get("/monitoring/credit")
    assert page.status_code == 200, page.text
    text = page.text
    assert "<h1>credit" in text and " style=" not in text and "<style" not in text
    charts = islands(text)
    assert sorted(charts) == ["chart-1-data", "chart-2-data", "chart-3-data", "chart-4-data"]
    share = charts["chart-1-data"]["series"]
    assert share[0]["name"] == "drifted share" and len(share[0]["x"]) == 2
    assert share[0]["y"] == [pytest.approx(2 / 3, abs=1e-4)] * 2 and share[1]["dash"] == "dash"
    psi = {s["name"]: s for s in charts["chart-2-data"]["series"]}
    assert {"income", "debt", "age", "significant (0.25)"} == set(psi)
    assert min(psi["debt"]["y"]) > 0.25 and max(psi["age"]["y"]) < 0.25
    quality = [s["name"] for s in charts["chart-3-data"]["series"]]
    assert quality[0] == "Accuracy" and quality[-1] == "baseline accuracy 0.95"
    fairness = [s["name"] for s in charts["chart-4-data"]["series"]]
    assert "disparate impact ratio" in fairness and fairness[-1] == "four-fifths rule (0.8)"

    _, heat = table(text, "heat")
    assert sorted(r[0] for r in heat) == ["age", "debt", "income"] and all(len(r) == 3 for r in heat)
    assert text.count('class="heat-drift"') == 4  # income and debt drifted in both runs
    _, columns = table(text, "columns")
    verdicts = {r[0]: r[5] for r in columns}
    assert verdicts == {"income": "drift", "debt": "drift", "age": "stable"}
    assert [r[0] for r in columns][-1] == "age"  # drifted inputs first
    _, runs = table(text, "runs")
    assert len(runs) == 2 and all(r[1] == "manual" and r[3] == "800" for r in runs)
    assert all(f'href="/monitoring/runs/{run_id}"' in text for run_id in monitored.run_ids)
    _, incidents = table(text, "endpoint-incidents")
    assert len(incidents) == 1 and incidents[0][0] == "critical" and incidents[0][2] == "open"
    _, rules = table(text, "rules")
    assert any(r[0] == "dataset_drift >= 1" and r[2].startswith("breached") for r in rules)
    assert 'id="run-now-form"' in text and 'id="create-monitor"' not in text

    report = client.get(f"/monitoring/runs/{monitored.run_ids[-1]}")
    assert report.status_code == 200, report.text
    body = report.text
    assert "Monitoring report" in body and "credit-risk v1" in body and 'id="report"' in body
    assert "<h2>Data drift</h2>" in body and "<svg" in body and "<h2>Fairness</h2>" in body
    assert " style=" not in body and 'class="legend-key legend-ref"' in body
    assert f'href="/monitoring/runs/{monitored.run_ids[0]}" rel="prev"' in body
    assert f'href="/incidents/{monitored.incident_id}"' in body
    html = client.get(f"/monitoring/runs/{monitored.run_ids[-1]}/report.html")
    assert html.status_code == 200 and "attachment" in html.headers["content-disposition"]
    assert "<svg" in html.text and "income" in html.text and "<script" not in html.text
    as_json = client.get(f"/monitoring/runs/{monitored.run_ids[-1]}/report.json")
    assert as_json.status_code == 200 and "attachment" in as_json.headers["content-disposition"]
    assert as_json.json()["report"]["drift"]["n_drifted"] == 2

    # Central staff see every unit's monitors.
    sign_in(client, orgs.member(Role.CHIEF_AI_OFFICER))
    assert len(table(client.get("/monitoring").text, "monitors")[1]) == 1
    assert client.get("/monitoring/nosuch", headers=HTML).status_code == 404
    assert client.get("/monitoring/runs/nosuchrun", headers=HTML).status_code == 404
    assert client.get("/monitoring/credit?monitor=nosuch", headers=HTML).status_code == 404


def test_create_a_monitor_and_run_it_now_through_the_forms(client: TestClient, deployed: Deployed) -> None:  # noqa: F811
    eng = deployed.engineer
    score(client, eng, applicants(300, 11))
    sign_in(client, eng)
    overview = client.get("/monitoring")
    _, unwatched = table(overview.text, "unwatched")
    assert unwatched[0][0] == "credit" and unwatched[0][2] == "Set up monitoring"
    page = client.get("/monitoring/credit")
    assert page.status_code == 200 and "Not monitored yet" in page.text and 'id="create-monitor"' in page.text
    assert islands(page.text) == {} and "plotly.min.js" not in page.text
    token = _csrf(page.text)
    url = "/monitoring/credit/monitors"
    body = {"name": "hourly", "every_minutes": "60", "window_minutes": "60"}
    assert client.post(url, data=body, headers=HTML).status_code == 403  # no CSRF token
    assert client.post(url, data={**body, "csrf": "forged"}, headers=HTML).status_code == 403
    bad = client.post(url, data={**body, "csrf": token, "every_minutes": "often"})
    assert bad.status_code == 422 and "whole number of minutes" in flash_error(bad.text)
    assert 'value="often"' in bad.text  # the form keeps what was typed
    bad = client.post(url, data={**body, "csrf": token, "window_minutes": "0"})
    assert bad.status_code == 422 and "window_minutes" in flash_error(bad.text)
    made = client.post(url, data={**body, "csrf": token})
    assert made.status_code == 200, made.text
    assert "Monitor &#39;hourly&#39; created: it runs hourly" in made.text
    monitor_id = client.get("/api/v1/monitors", headers=eng.headers).json()[0]["id"]
    assert 'id="create-monitor"' not in made.text and 'id="run-now-form"' in made.text
    taken = client.post(url, data={**body, "csrf": token})
    assert taken.status_code == 409 and "already has a monitor" in flash_error(taken.text)

    run_url = f"/monitoring/credit/monitors/{monitor_id}/run"
    assert client.post(run_url, data={"csrf": "nope"}, headers=HTML).status_code == 403
    queued = client.post(run_url, data={"csrf": token})
    assert queued.status_code == 200 and "Run queued" in queued.text
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        page = client.get(f"/monitoring/credit?monitor={monitor_id}")
        if 'id="runs"' in page.text:
            break
        time.sleep(0.2)
    _, runs = table(page.text, "runs")
    assert runs[0][1] == "manual" and runs[0][2] != "failed" and runs[0][3] == "300"
    charts = islands(page.text)  # no labels came back: no quality chart
    assert charts["chart-1-data"]["series"][0]["name"] == "drifted share"
    assert "Quality against the baseline" not in page.text and "chart-4-data" not in charts
    assert (
        client.post(
            f"/monitoring/other/monitors/{monitor_id}/run", data={"csrf": token}, headers=HTML
        ).status_code
        == 404
    )


def test_a_business_user_sees_without_forms_and_another_unit_sees_nothing(
    client: TestClient, monitored: Monitored, orgs: Org
) -> None:
    viewer = orgs.member(Role.BUSINESS_USER, unit="retail")
    sign_in(client, viewer)
    page = client.get("/monitoring/credit")
    assert page.status_code == 200 and len(table(page.text, "runs")[1]) == 2
    assert 'id="run-now-form"' not in page.text and ">Run now<" not in page.text
    incident = client.get(f"/incidents/{monitored.incident_id}")
    assert incident.status_code == 200
    assert 'id="acknowledge-form"' not in incident.text and 'id="resolve-form"' not in incident.text
    assert client.get(f"/monitoring/runs/{monitored.run_ids[0]}").status_code == 200
    token = _csrf(page.text)  # the sign-out form's
    for path, data in (
        (f"/monitoring/credit/monitors/{monitored.monitor_id}/run", {"csrf": token}),
        ("/monitoring/credit/monitors", {"csrf": token, "name": "mine"}),
        (f"/incidents/{monitored.incident_id}/acknowledge", {"csrf": token}),
        (f"/incidents/{monitored.incident_id}/resolve", {"csrf": token, "confirm": "yes", "resolution": "x"}),
    ):
        r = client.post(path, data=data, headers=HTML)
        assert r.status_code == 403, path
    assert re.search(r"incident\.handle|monitoring\.manage", r.text)

    outsider = orgs.member(Role.ML_ENGINEER, unit="wholesale")
    sign_in(client, outsider)
    overview = client.get("/monitoring")
    assert 'href="/monitoring/credit' not in overview.text and "Watch your first endpoint" in overview.text
    assert "Nothing needs attention" in client.get("/incidents").text
    for path in (
        "/monitoring/credit",
        f"/monitoring/runs/{monitored.run_ids[0]}",
        f"/monitoring/runs/{monitored.run_ids[0]}/report.html",
        f"/monitoring/runs/{monitored.run_ids[0]}/report.json",
        f"/incidents/{monitored.incident_id}",
    ):
        assert client.get(path, headers=HTML).status_code == 404, path
    token = _csrf(overview.text)
    for path, data in (
        (f"/monitoring/credit/monitors/{monitored.monitor_id}/run", {"csrf": token}),
        (f"/incidents/{monitored.incident_id}/acknowledge", {"csrf": token}),
        (f"/incidents/{monitored.incident_id}/resolve", {"csrf": token, "confirm": "yes", "resolution": "x"}),
    ):
        assert client.post(path, data=data, headers=HTML).status_code == 404, path


def test_acknowledge_and_resolve_through_the_forms(client: TestClient, monitored: Monitored) -> None:
    eng = monitored.deployed.engineer
    incident_id = monitored.incident_id
    sign_in(client, eng)
    inbox = client.get("/incidents")
    head, rows = table(inbox.text, "incidents")
    assert head[0] == ["Severity", "Incident", "Status", "Opened", "Open for", "Runs", "Owner"]
    assert len(rows) == 1 and rows[0][0] == "critical" and rows[0][2] == "open" and rows[0][5] == "2"
    assert rows[0][1].startswith("credit / drift and quality:") and "accuracy_decline" in rows[0][1]
    assert rows[0][6] == eng.email.split("@")[0]  # the monitor's owner

    url = f"/incidents/{incident_id}"
    page = client.get(url)
    assert page.status_code == 200
    text = page.text
    assert 'id="acknowledge-form"' in text and 'id="resolve-form"' in text
    breached = {r[0] for r in table(text, "breaches")[1]}
    assert {"dataset_drift", "accuracy_decline"} <= breached
    _, evidence = table(text, "evidence")
    assert len(evidence) == 2 and all(f'href="/monitoring/runs/{r}"' in text for r in monitored.run_ids)
    assert "Opened by the monitor" in text and "Waiting for someone to acknowledge" in text
    # The unit has no notification channel: the page says why nothing was sent, the API lists no delivery.
    assert 'id="notifications"' not in text and "No notification was sent" in text
    assert client.get(f"/api/v1/incidents/{incident_id}", headers=eng.headers).json()["notifications"] == []
    token = _csrf(text)

    assert client.post(f"{url}/acknowledge", data={"note": "x"}, headers=HTML).status_code == 403
    acked = client.post(f"{url}/acknowledge", data={"csrf": token, "note": "looking at the income shift"})
    assert acked.status_code == 200 and "Acknowledged: you own this incident" in acked.text
    assert 'id="acknowledge-form"' not in acked.text and 'id="resolve-form"' in acked.text
    assert "looking at the income shift" in acked.text and "Being handled" in acked.text
    again = client.post(f"{url}/acknowledge", data={"csrf": token})
    assert again.status_code == 409 and "only an open incident" in flash_error(again.text)
    assert table(client.get("/incidents").text, "incidents")[1][0][2] == "acknowledged"

    unconfirmed = client.post(f"{url}/resolve", data={"csrf": token, "resolution": "retrained"})
    assert unconfirmed.status_code == 400 and "confirmation box" in flash_error(unconfirmed.text)
    empty = client.post(f"{url}/resolve", data={"csrf": token, "confirm": "yes", "resolution": "  "})
    assert empty.status_code == 422 and "resolved" in flash_error(empty.text)
    done = client.post(
        f"{url}/resolve",
        data={"csrf": token, "confirm": "yes", "resolution": "retrained on recent applications"},
    )
    assert done.status_code == 200 and "Resolved." in done.text
    assert 'id="resolve-form"' not in done.text and "retrained on recent applications" in done.text
    steps = re.findall(r'<li class="tl-(\w+)">', done.text)
    assert steps == ["open", "acknowledge", "resolve"]
    detail = client.get(f"/api/v1/incidents/{incident_id}", headers=eng.headers).json()
    assert detail["status"] == "resolved" and detail["resolution"] == "retrained on recent applications"

    assert "Nothing needs attention" in client.get("/incidents").text
    resolved = client.get("/incidents", params={"status": "resolved"})
    assert [r[2] for r in table(resolved.text, "incidents")[1]] == ["resolved"]
    assert len(table(client.get("/incidents", params={"status": "all"}).text, "incidents")[1]) == 1
    assert client.get("/incidents", params={"status": "bogus"}, headers=HTML).status_code == 422
    by_endpoint = client.get("/incidents", params={"status": "all", "endpoint": "credit"})
    assert len(table(by_endpoint.text, "incidents")[1]) == 1
