"""Deployments in a real browser: headless Chromium against a live `bridgehead server` on a demo home, seeded
through the services with registered credit and churn models, endpoints in production and staging (a canary
with a shadow, an A/B split in another unit), a week of predictions written through the prediction log (which
fills the hourly statistics), and feedback. An ML engineer promotes and rolls back through the forms, a
prediction made against the live server shows up on the page, and other people see what they may.

Screenshots are written to docs/images/ (deployments, endpoint).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select, update

from bridgehead import demo
from bridgehead.audit.service import ActorRef
from bridgehead.auth.models import Person
from bridgehead.auth.service import Principal
from bridgehead.auth.tokens import create_token
from bridgehead.hookspecs import plugin_manager
from bridgehead.serving import service as serving
from bridgehead.serving.models import Endpoint, EndpointRevision
from bridgehead.serving.predlog import PredictionLog, PredictionRecord
from bridgehead.store import Database, upgrade
from bridgehead.store.artifacts import ArtifactStore
from bridgehead.tracking import service as tracking
from tests.live import bridgehead_env, running_server
from tests.tracking.seed import RunSpec, curve, log_run, principal_for, register, run_dir, save_sklearn_model
from tests.web.browser import ADMIN, charts_drawn, full_shot, path_of, sign_in

pytestmark = pytest.mark.browser

IGNORED_CONSOLE = r"status of 4(00|04|09|22)"  # console messages the tests provoke (see conftest.py)

HOUR = 3_600_000
ENGINEER = "mle.retail@demo.bridgehead.dev"
FEATURES = ["age", "income", "debt", "tenure"]
SIGNATURE = {"inputs": json.dumps([{"type": "double", "name": name} for name in FEATURES])}
SEEDED: dict[str, str] = {}


def _tokens(db: Database, *locals_: str) -> dict[str, str]:
    secrets = {}
    with db.session(write=True) as session:
        for local in locals_:
            person = session.scalar(select(Person).where(Person.email == f"{local}@demo.bridgehead.dev"))
            assert person is not None
            _, secrets[local] = create_token(session, ActorRef(email="test:browser"), person, "seed", 1)
    return secrets


def _models(db: Database, store: ArtifactStore, scientist: Principal, model: str, runs: list[str]) -> None:
    with db.session(write=True) as session:
        experiment = tracking.create_experiment(session, scientist, f"{model}-training").id
    for index, name in enumerate(runs):
        run = log_run(
            db,
            scientist,
            experiment,
            RunSpec(name, {"model": name.split("-")[0]}, {"val_auc": curve(0.8 + index * 0.02, 12)}),
            start_ms=tracking.now_ms() - (40 - index * 10) * 24 * HOUR,
        )
        save_sklearn_model(store, f"{run_dir(db, scientist, run)}/model", signature=SIGNATURE, seed=index)
        register(db, scientist, store, model, run, description=f"{model}, trained on the 2024 book.")


def _deploy(
    db: Database, principal: Principal, endpoint: str, steps: list[tuple[str, str, dict[str, Any]]]
) -> None:
    """Each step is (model, version, deploy arguments); then the revisions are spread over the past (their
    ages in hours given as "age" in the step), as if the endpoint had lived for a while."""
    hooks = plugin_manager(load_entry_points=False).hook
    ages = []
    for model, version, options in steps:
        args = dict(options)
        ages.append(float(args.pop("age")))
        with db.session(write=True) as session:
            serving.deploy(session, principal, hooks, endpoint=endpoint, model=model, version=version, **args)
    now = tracking.now_ms()
    with db.session(write=True) as session:
        found = session.scalar(select(Endpoint).where(Endpoint.name == endpoint))
        assert found is not None
        for number, age in enumerate(ages, start=1):
            session.execute(
                update(EndpointRevision)
                .where(EndpointRevision.endpoint_id == found.id, EndpointRevision.revision == number)
                .values(created_ms=int(now - age * HOUR))
            )
        found.created_ms = int(now - ages[0] * HOUR)
        found.updated_ms = int(now - ages[-1] * HOUR)


def _traffic(
    log: PredictionLog,
    endpoint: str,
    model: str,
    plan: list[tuple[float, dict[int, float], int | None]],
    *,
    peak: int,
    seed: int,
) -> list[str]:
    """A week of requests, busier in business hours. ``plan``: (from how many hours ago, {version: share},
    shadow version), oldest first. Version 2 is a little slower and now and then fails. Returns the ids."""
    rng = np.random.default_rng(seed)
    now = tracking.now_ms()
    ids = []
    start = now // HOUR * HOUR - 7 * 24 * HOUR
    for hour in range(start, now, HOUR):
        age = (now - hour) / HOUR
        stage = [p for p in plan if p[0] >= age]
        if not stage:
            continue
        _, shares, shadow = stage[-1]
        clock = (hour // HOUR + 1) % 24  # hours in UTC; business hours in Europe
        busy = 0.25 + 0.75 * max(0.0, math.sin((clock - 6) / 14 * math.pi)) if 6 <= clock <= 20 else 0.2
        count = int(rng.poisson(peak * busy * min(1.0, (now - hour) / HOUR)))
        versions = list(shares)
        for _ in range(count):
            ts = hour + int(rng.integers(0, max(1, min(HOUR, now - 60_000 - hour))))
            request_id = f"{int(rng.integers(0, 2**63)):016x}{int(rng.integers(0, 2**63)):016x}"
            version = int(rng.choice(versions, p=[shares[v] / 100 for v in versions]))
            income = round(float(rng.normal(4100, 1200)), 2)
            debt = round(float(abs(rng.normal(1500, 700))), 2)
            customer = {
                "customer_id": f"C{int(rng.integers(100000, 999999))}",
                "age": int(rng.integers(19, 80)),
                "income": income,
                "debt": debt,
                "tenure": int(rng.integers(0, 30)),
            }
            p = 1 / (1 + math.exp(-(debt / max(income, 500) - 0.4) * 8))
            fails = version == 2 and rng.random() < 0.012
            slow = 1.7 if version == 2 else 1.0
            outputs = (
                {"error": "the model could not score this row"}
                if fails
                else {"prediction": int(p > 0.5), "probabilities": [round(1 - p, 4), round(p, 4)]}
            )
            answers = [(version, "primary", slow, fails, outputs)]
            if shadow is not None:
                answers.append(
                    (
                        shadow,
                        "shadow",
                        0.8,
                        False,
                        {"prediction": int(p > 0.45), "probabilities": [round(1 - p, 4), round(p, 4)]},
                    )
                )
            for answered, role, factor, failed, output in answers:
                log.record(
                    [
                        PredictionRecord(
                            request_id=request_id,
                            endpoint=endpoint,
                            model_name=model,
                            version=answered,
                            role=role,
                            ts_ms=ts,
                            latency_ms=float(rng.lognormal(math.log(6.5 * factor), 0.45)),
                            inputs=json.dumps(customer),
                            outputs=json.dumps(output),
                            status="error" if failed else "ok",
                        )
                    ]
                )
            if age > 12:  # labels arrive later: only for older predictions
                ids.append(request_id)
    log.flush()
    return ids


def seed_serving(home: Path) -> None:
    db = Database(f"sqlite:///{home}/bridgehead.db")
    store = ArtifactStore(str(home / "artifacts"))
    try:
        secrets = _tokens(db, "ds.retail", "mle.retail", "ds.lending", "mle.lending")
        retail_ds, retail_mle = (
            principal_for(db, secrets["ds.retail"]),
            principal_for(db, secrets["mle.retail"]),
        )
        lending_ds, lending_mle = (
            principal_for(db, secrets["ds.lending"]),
            principal_for(db, secrets["mle.lending"]),
        )
        _models(db, store, retail_ds, "credit-risk", ["logreg-c1", "gbm-d3", "logreg-c001"])
        _models(db, store, retail_ds, "churn-classifier", ["gbm-d4"])
        _models(db, store, lending_ds, "sme-default", ["logreg-base", "gbm-sectors"])
        production = {"environment": "production"}
        _deploy(
            db,
            retail_mle,
            "credit-scoring",
            [
                (
                    "credit-risk",
                    "1",
                    {
                        **production,
                        "age": 30 * 24,
                        "reason": "first release, approved in CR-118",
                        "description": "Scores consumer credit applications, branch and online.",
                    },
                ),
                (
                    "credit-risk",
                    "2",
                    {
                        "strategy": "canary",
                        "weight": 10,
                        "age": 60,
                        "reason": "boosted trees: +3 points AUC offline",
                    },
                ),
                (
                    "credit-risk",
                    "3",
                    {
                        "strategy": "shadow",
                        "age": 20,
                        "reason": "compare the regularised model on live traffic",
                    },
                ),
            ],
        )
        _deploy(
            db,
            retail_mle,
            "credit-scoring-staging",
            [("credit-risk", "3", {"environment": "staging", "age": 26, "reason": "release candidate"})],
        )
        _deploy(
            db,
            retail_mle,
            "churn-alerts",
            [
                (
                    "churn-classifier",
                    "1",
                    {
                        **production,
                        "age": 9 * 24,
                        "reason": "weekly churn list",
                        "description": "Flags current-account customers likely to leave.",
                    },
                )
            ],
        )
        _deploy(
            db,
            lending_mle,
            "sme-default",
            [
                ("sme-default", "1", {**production, "age": 14 * 24}),
                (
                    "sme-default",
                    "2",
                    {"strategy": "ab", "age": 100, "reason": "A/B against the sector model"},
                ),
            ],
        )

        def aggregate(table: pa.Table) -> None:
            with db.session(write=True) as session:
                serving.add_hours(session, table)

        log = PredictionLog(home / "predictions", on_flush=aggregate)
        ids = _traffic(
            log,
            "credit-scoring",
            "credit-risk",
            [(7 * 24, {1: 100.0}, None), (60, {1: 90.0, 2: 10.0}, None), (20, {1: 90.0, 2: 10.0}, 3)],
            peak=70,
            seed=1,
        )
        _traffic(log, "churn-alerts", "churn-classifier", [(7 * 24, {1: 100.0}, None)], peak=12, seed=2)
        _traffic(
            log,
            "sme-default",
            "sme-default",
            [(7 * 24, {1: 100.0}, None), (100, {1: 50.0, 2: 50.0}, None)],
            peak=20,
            seed=3,
        )
        log.close()
        labels = [
            {"request_id": i, "kind": "label", "value": int(n % 5 == 0)} for n, i in enumerate(ids[::3])
        ]
        overrides = [
            {"request_id": i, "kind": "override", "value": 0, "reason": "income verified by the branch"}
            for i in ids[1:200:17]
        ]
        with db.session(write=True) as session:
            serving.add_feedback(session, retail_mle, "credit-scoring", labels + overrides)
        SEEDED["labels"], SEEDED["overrides"] = f"{len(labels):,}", str(len(overrides))
        SEEDED["engineer_token"] = secrets["mle.retail"]
    finally:
        db.dispose()


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("browser-serving") / "home"
    home.mkdir()
    db = Database(f"sqlite:///{home}/bridgehead.db")
    try:
        upgrade(db)
        demo.seed(db, ActorRef(email="test:browser"))
    finally:
        db.dispose()
    seed_serving(home)
    env = bridgehead_env(
        home=str(home), database_url=f"sqlite:///{home}/bridgehead.db", secret_key="browser-test-key"
    )
    with running_server(env, log=home / "server.log") as url:
        yield url


def test_deployments_list_and_an_endpoint(page: Page) -> None:
    sign_in(page, ADMIN)
    nav = page.get_by_role("complementary", name="Main navigation").locator("nav a")
    with page.expect_navigation():
        nav.filter(has_text=re.compile(r"^Deployments$")).click()
    assert path_of(page) == "/deployments"
    expect(page.locator(".shell .content h1")).to_have_text("Deployments")
    expect(page.locator(".content .empty")).to_have_count(0)  # no "coming soon" placeholder
    production = page.locator("#env-production tr[data-endpoint]")
    expect(production).to_have_count(3)
    expect(page.locator("#env-staging tr[data-endpoint]")).to_have_count(1)
    credit = production.filter(has_text="credit-scoring")
    expect(credit).to_contain_text("Retail Banking")
    expect(credit.locator(".traffic-legend")).to_contain_text("v1 90 %")
    expect(credit.locator(".traffic-legend")).to_contain_text("v2 10 %")
    expect(credit.locator(".traffic-legend")).to_contain_text("shadow v3")
    expect(credit.locator("svg.traffic-bar rect[fill='#1f4fd6']")).to_have_count(1)
    expect(production.filter(has_text="sme-default")).to_contain_text("Corporate Lending")
    requests = int(credit.locator("td").nth(5).inner_text().replace(",", ""))
    assert requests > 200
    full_shot(page, "deployments.png")

    with page.expect_navigation():
        credit.get_by_role("link", name="credit-scoring").click()
    assert path_of(page) == "/deployments/credit-scoring"
    expect(page.locator(".content h1")).to_contain_text("credit-scoring")
    expect(page.locator("#routes tbody tr")).to_have_count(3)
    expect(page.locator("#traffic-split")).to_be_visible()
    box = page.locator("#traffic-split").bounding_box()
    assert box is not None and box["width"] > 400
    charts_drawn(page, 4)
    expect(page.locator("#chart-1 g.trace")).to_have_count(3)  # v1, v2 and the v3 shadow
    expect(page.locator("#window tbody tr")).to_have_count(3)
    expect(page.locator("#feedback")).to_contain_text(SEEDED["labels"])
    expect(page.locator("#predictions tbody tr")).to_have_count(20)
    expect(page.locator("#predictions")).to_contain_text("customer_id")  # the admin may see personal data
    expect(page.locator("#revisions tbody tr")).to_have_count(3)
    expect(page.locator("#revisions tbody tr").first).to_contain_text("compare the regularised model")
    expect(page.locator("#promote-form")).to_be_visible()
    full_shot(page, "endpoint.png")

    with page.expect_navigation():
        page.get_by_role("link", name="7 days").click()
    assert "hours=168" in page.url
    charts_drawn(page, 4)
    expect(page.get_by_role("heading", name="Last 7 days")).to_be_visible()


def test_an_engineer_promotes_and_rolls_back(page: Page, base_url: str) -> None:
    sign_in(page, ENGINEER)
    page.goto("/deployments/credit-scoring")
    expect(page.locator("#predictions tbody tr").first).to_contain_text("hidden (needs data.pii)")
    expect(page.locator("#predictions")).not_to_contain_text("customer_id")

    form = page.locator("#promote-form")
    form.get_by_label("Reason").fill("canary healthy for two days")
    form.get_by_role("button", name="Promote").click()  # the confirmation box is required: nothing is sent
    assert form.locator("input[name=confirm]").evaluate("e => e.validity.valueMissing")
    assert path_of(page) == "/deployments/credit-scoring"
    expect(page.get_by_role("status")).to_have_count(0)
    form.get_by_role("checkbox").check()
    with page.expect_navigation():
        form.get_by_role("button", name="Promote").click()
    expect(page.get_by_role("status")).to_have_text("Promoted v2: it answers all traffic (revision 4).")
    rows = page.locator("#routes tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.first).to_contain_text("v2")
    expect(rows.first).to_contain_text("100 %")
    expect(page.locator("#revisions tbody tr").first).to_contain_text("canary healthy for two days")

    # A prediction against the live server is answered by v2 and reaches the page through the log.
    record = {"age": 41.0, "income": 3900.0, "debt": 2100.0, "tenure": 6.0}
    answer = httpx.post(
        f"{base_url}/serve/credit-scoring/predict",
        json={"records": [record]},
        headers={"Authorization": f"Bearer {SEEDED['engineer_token']}"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["version"] == 2
    request_id = answer.json()["request_id"]
    for _ in range(40):
        page.goto("/deployments/credit-scoring")
        if page.locator(f"#predictions td[data-id='{request_id}']").count():
            break
        time.sleep(0.25)
    first = page.locator("#predictions tbody tr").first
    expect(first.locator("td").nth(1)).to_have_attribute("data-id", request_id)
    expect(first).to_contain_text("v2")

    rollback = page.locator("#rollback-form")
    expect(rollback).to_contain_text("from revision r3")
    rollback.get_by_label("Reason").fill("back to the canary while we look at errors")
    rollback.get_by_role("checkbox").check()
    with page.expect_navigation():
        rollback.get_by_role("button", name="Roll back").click()
    expect(page.get_by_role("status")).to_have_text(
        "Rolled back (revision 5): v1 90 % · v2 10 % · v3 shadow."
    )
    expect(page.locator("#routes tbody tr")).to_have_count(3)
    expect(page.locator("#revisions tbody tr").first).to_contain_text("restored r3")


def test_others_see_what_they_may(page: Page) -> None:
    sign_in(page, "user.retail@demo.bridgehead.dev")
    page.goto("/deployments/credit-scoring")
    expect(page.locator("#routes tbody tr").first).to_be_visible()
    expect(page.locator("#promote-form")).to_have_count(0)
    expect(page.locator("#rollback-form")).to_have_count(0)
    expect(page.get_by_role("button", name="Promote")).to_have_count(0)

    page.context.clear_cookies()
    sign_in(page, "user.lending@demo.bridgehead.dev")
    page.goto("/deployments")
    expect(page.locator("#endpoints tr[data-endpoint]")).to_have_count(1)
    expect(page.locator("#env-production")).to_contain_text("sme-default")
    expect(page.locator("#env-staging")).to_have_count(0)
    response = page.goto("/deployments/credit-scoring")
    assert response is not None and response.status == 404
    expect(page.locator(".content h1")).to_have_text("404")
