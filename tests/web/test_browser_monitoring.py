"""Monitoring in a real browser: headless Chromium against a live `bridgehead server` on a demo home, seeded
through the services: a credit model trained on an uploaded (profiled) applications dataset, deployed to
production, a day of predictions written through the prediction log hour by hour (stable at first, a short
spike of odd traffic, then a growing shift in income and debt), outcomes for most of them, and a monitor run
once per hour of that day. The spike opened an incident that was acknowledged and resolved as a false alarm;
the shift opened the one still open. An ML engineer reads the charts, acknowledges the open incident through
the inbox and reads a run's report.

Screenshots are written to docs/images/ (monitoring, incidents, drift-report).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import skops.io
from playwright.sync_api import Page, expect
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
from sqlalchemy import select

from bridgehead import demo
from bridgehead.audit.service import ActorRef
from bridgehead.data import service as data
from bridgehead.hookspecs import plugin_manager
from bridgehead.monitoring import service as monitoring
from bridgehead.monitoring.models import Incident
from bridgehead.serving import service as serving
from bridgehead.serving.predlog import PredictionLog, PredictionRecord
from bridgehead.store import Database, upgrade
from bridgehead.store.artifacts import ArtifactStore
from bridgehead.tracking import service as tracking
from tests.live import bridgehead_env, running_server
from tests.tracking.seed import MANIFEST, RunSpec, log_run, principal_for, register, run_dir
from tests.web.browser import ADMIN, charts_drawn, full_shot, path_of, sign_in
from tests.web.test_browser_serving import _tokens

pytestmark = pytest.mark.browser

IGNORED_CONSOLE = r"status of 4(00|04|09|22)"  # console messages the tests provoke (see conftest.py)

HOUR = 3_600_000
ENGINEER = "mle.retail@demo.bridgehead.dev"
FEATURES = ["income", "debt", "age"]
SIGNATURE = {"inputs": json.dumps([{"type": "double", "name": name} for name in FEATURES])}
HOURS = 24
SEEDED: dict[str, Any] = {}
# Hourly windows hold a few hundred rows: thresholds that a bank would set for that size (the standard
# five-point accuracy rule, a wider margin on fairness gaps, whose groups hold a hundred rows an hour).
HOURLY_RULES = [
    {"metric": "dataset_drift", "op": ">=", "threshold": 1, "severity": "warning"},
    {"metric": "psi_max", "op": ">=", "threshold": 0.25, "severity": "warning"},
    {"metric": "accuracy_decline", "op": ">", "threshold": 0.05, "severity": "critical"},
    {"metric": "demographic_parity_difference", "op": ">", "threshold": 0.25, "severity": "warning"},
]


def applications(n: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    """Credit applications; ``shift`` (0 to 1) raises incomes and debts, and makes debt weigh more."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "income": np.round(rng.normal(4000, 1000, n) * (1 + 0.35 * shift), 2),
            "debt": np.round(np.abs(rng.normal(1500, 500, n) + 650 * shift), 2),
            "age": rng.integers(19, 80, n).astype(float),
        }
    )
    noise = rng.normal(0, 0.08, n)
    frame["defaulted"] = ((frame["debt"] / frame["income"] + noise) > 0.4 - 0.07 * shift).astype(int)
    return frame


def _shift(hours_ago: int) -> float:
    """Stable, a two-hour spike of odd traffic 15 and 14 hours ago, stable again, then a growing shift."""
    if hours_ago in (15, 14):
        return 0.9
    if hours_ago <= 8:
        return min(1.0, (9 - hours_ago) / 7)
    return 0.0


def _model(db: Database, store: ArtifactStore, home: Path, scientist: Any) -> tuple[str, dict[str, float]]:
    """Train, register (credit-risk v1) and return the training dataset version and validation baseline."""
    train = applications(4000, 1)
    holdout = applications(1500, 2)
    path = home / "credit-applications-2026.parquet"
    train.to_parquet(path, index=False)
    with db.session(write=True) as session:
        dataset = data.create_dataset(
            session,
            scientist,
            "credit-applications-2026",
            description="Consumer credit applications with the default outcome 12 months later.",
            source_system="Loan origination (LOS)",
        )
        version, _ = data.upload_version(
            session, scientist, dataset, store, path.name, [path.read_bytes()], max_bytes=10**9
        )
        reference = version.id
    model = LogisticRegression(max_iter=1000).fit(train[FEATURES], train["defaulted"])
    scores = model.predict_proba(holdout[FEATURES])[:, 1]
    baseline = {
        "accuracy": float(accuracy_score(holdout["defaulted"], scores > 0.5)),
        "f1": float(f1_score(holdout["defaulted"], scores > 0.5)),
        "roc_auc": float(roc_auc_score(holdout["defaulted"], scores)),
    }
    with db.session(write=True) as session:
        experiment = tracking.create_experiment(session, scientist, "credit-risk-training").id
    run = log_run(
        db,
        scientist,
        experiment,
        RunSpec(
            "logreg-baseline", {"model": "logistic_regression"}, {"val_accuracy": [baseline["accuracy"]]}
        ),
        start_ms=tracking.now_ms() - 40 * 24 * HOUR,
    )
    directory = f"{run_dir(db, scientist, run)}/model"
    store.put_bytes(f"{directory}/model.skops", skops.io.dumps(model))
    store.put_bytes(
        f"{directory}/bridgehead-model.json", json.dumps({**MANIFEST, "signature": SIGNATURE}).encode()
    )
    register(db, scientist, store, "credit-risk", run, description="Consumer credit default risk.")
    SEEDED["model"] = model
    return reference, baseline


def _traffic(
    log: PredictionLog, endpoint: str, model: LogisticRegression, now: int, *, scale: float
) -> list[dict[str, Any]]:
    """A day of scored applications, hour by hour (busier in business hours); returns their outcomes."""
    outcomes = []
    top = now // HOUR * HOUR
    for hours_ago in range(HOURS, 0, -1):
        start = top - hours_ago * HOUR
        clock = (start // HOUR) % 24
        n = int((250 + 350 * max(0.0, np.sin((clock - 6) / 14 * np.pi))) * scale)
        frame = applications(max(n, 30), 100 + hours_ago, _shift(hours_ago) if scale == 1.0 else 0.0)
        probabilities = model.predict_proba(frame[FEATURES])
        rng = np.random.default_rng(hours_ago)
        stamps = np.sort(rng.integers(start, start + HOUR - 1, len(frame)))
        records = []
        for i, row in enumerate(frame.itertuples(index=False)):
            request_id = f"{endpoint[:6]}-{start}-{i:04d}"
            p = probabilities[i]
            records.append(
                PredictionRecord(
                    request_id=request_id,
                    endpoint=endpoint,
                    model_name="credit-risk",
                    version=1,
                    role="primary",
                    ts_ms=int(stamps[i]),
                    latency_ms=float(rng.lognormal(np.log(6.0), 0.4)),
                    inputs=json.dumps({"income": row.income, "debt": row.debt, "age": row.age}),
                    outputs=json.dumps(
                        {"prediction": int(p[1] > 0.5), "probabilities": [round(p[0], 4), round(p[1], 4)]}
                    ),
                )
            )
            if rng.random() < 0.7:  # outcomes come back for most applications
                outcomes.append({"request_id": request_id, "kind": "label", "value": int(row.defaulted)})
        log.record(records)
    log.flush()
    return outcomes


def seed_monitoring(home: Path) -> None:
    db = Database(f"sqlite:///{home}/bridgehead.db")
    store = ArtifactStore(str(home / "artifacts"))
    try:
        secrets = _tokens(db, "ds.retail", "mle.retail")
        scientist = principal_for(db, secrets["ds.retail"])
        engineer = principal_for(db, secrets["mle.retail"])
        reference, baseline = _model(db, store, home, scientist)
        hooks = plugin_manager(load_entry_points=False).hook
        with db.session(write=True) as session:
            serving.deploy(
                session,
                engineer,
                hooks,
                endpoint="credit-scoring",
                model="credit-risk",
                version="1",
                environment="production",
                description="Scores consumer credit applications, branch and online.",
                reason="first release, approved in CR-118",
            )
            serving.deploy(
                session,
                engineer,
                hooks,
                endpoint="credit-scoring-staging",
                model="credit-risk",
                version="1",
                environment="staging",
                reason="release candidate",
            )
            serving.deploy(
                session, engineer, hooks, endpoint="credit-limits", model="credit-risk", version="1",
                environment="staging", reason="trial for credit-limit decisions",
            )  # fmt: skip

        def aggregate(table: pa.Table) -> None:
            with db.session(write=True) as session:
                serving.add_hours(session, table)

        now = tracking.now_ms()
        log = PredictionLog(home / "predictions", on_flush=aggregate)
        model = SEEDED["model"]
        outcomes = _traffic(log, "credit-scoring", model, now, scale=1.0)
        staging = _traffic(log, "credit-scoring-staging", model, now, scale=0.3)
        log.close()
        with db.session(write=True) as session:
            serving.add_feedback(session, engineer, "credit-scoring", outcomes)
            serving.add_feedback(session, engineer, "credit-scoring-staging", staging)
            watch = monitoring.create_monitor(
                session,
                engineer,
                "credit-scoring",
                name="drift and quality",
                description="Hourly: inputs against the training applications, accuracy once outcomes return.",
                every_minutes=60,
                window_minutes=60,
                reference_version_id=reference,
                settings={"baseline": baseline},
                rules=HOURLY_RULES,
            ).id
            daily = monitoring.create_monitor(
                session,
                engineer,
                "credit-scoring-staging",
                name="daily drift",
                every_minutes=1440,
                window_minutes=480,
                reference_version_id=reference,
                settings={"baseline": baseline},
                rules=HOURLY_RULES[:2],
            ).id
        top = now // HOUR * HOUR
        log_root = home / "predictions"
        # The runs happen as the scheduler would have made them: each a couple of minutes after its window.
        for hours_ago in range(HOURS - 1, -1, -1):
            end = top - hours_ago * HOUR
            with (
                mock.patch.object(monitoring, "now_ms", return_value=end + 90_000),
                db.session(write=True) as session,
            ):
                run = monitoring.run_monitor(session, watch, log_root=log_root, end_ms=end)
                assert run.status == "succeeded", run.error
                if hours_ago in (16, 8, 0):
                    staged = monitoring.run_monitor(session, daily, log_root=log_root, end_ms=end)
                    assert staged.status == "succeeded", staged.error
            if hours_ago == 13:  # the spike's incident: looked at, then closed as a false alarm
                spike = _incident(db, watch)
                with (
                    mock.patch.object(monitoring, "now_ms", return_value=end + 25 * 60_000),
                    db.session(write=True) as session,
                ):
                    monitoring.acknowledge(session, scientist, spike, "two hours of odd applications")
                with (
                    mock.patch.object(monitoring, "now_ms", return_value=end + 70 * 60_000),
                    db.session(write=True) as session,
                ):
                    monitoring.resolve_incident(
                        session,
                        scientist,
                        spike,
                        "False alarm: a batch of test applications from the branch pilot; excluded upstream.",
                    )
        SEEDED["open"] = _incident(db, watch)
    finally:
        db.dispose()


def _incident(db: Database, monitor_id: str) -> str:
    with db.session() as session:
        found = session.scalar(
            select(Incident.id).where(Incident.monitor_id == monitor_id, Incident.status != "resolved")
        )
        assert found is not None
        return str(found)


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("browser-monitoring") / "home"
    home.mkdir()
    db = Database(f"sqlite:///{home}/bridgehead.db")
    try:
        upgrade(db)
        demo.seed(db, ActorRef(email="test:browser"))
    finally:
        db.dispose()
    seed_monitoring(home)
    env = bridgehead_env(
        home=str(home), database_url=f"sqlite:///{home}/bridgehead.db", secret_key="browser-test-key"
    )
    with running_server(env, log=home / "server.log") as url:
        yield url


def test_monitoring_overview_and_an_endpoint(page: Page) -> None:
    sign_in(page, ADMIN)
    nav = page.get_by_role("complementary", name="Main navigation").locator("nav a")
    with page.expect_navigation():
        nav.filter(has_text=re.compile(r"^Monitoring$")).click()
    assert path_of(page) == "/monitoring"
    expect(page.locator(".shell .content h1")).to_have_text("Monitoring")
    rows = page.locator("#monitors tbody tr")
    expect(rows).to_have_count(2)
    credit = rows.filter(has=page.locator("a", has_text=re.compile(r"^credit-scoring$")))
    expect(credit).to_contain_text("hourly")
    expect(credit.locator(".verdict-drift")).to_have_count(1)
    expect(credit).to_contain_text("critical")
    expect(rows.filter(has_text="credit-scoring-staging").locator(".verdict-stable")).to_have_count(1)
    expect(page.locator("#unwatched tbody tr")).to_have_count(1)
    expect(page.locator("#unwatched")).to_contain_text("credit-limits")

    with page.expect_navigation():
        credit.get_by_role("link", name="credit-scoring", exact=True).click()
    assert path_of(page) == "/monitoring/credit-scoring"
    charts_drawn(page, 4)
    expect(page.locator("#chart-2 g.trace")).to_have_count(4)  # income, debt, age and the 0.25 line
    expect(page.locator("#runs tbody tr")).to_have_count(HOURS)
    expect(page.locator("#heat tbody tr")).to_have_count(3)
    assert page.locator("#heat td.heat-drift").count() >= 6  # the spike and the shift
    expect(page.locator("#columns tr[data-column='income'] .verdict-drift")).to_have_count(1)
    expect(page.locator("#columns tr[data-column='age'] .verdict-stable")).to_have_count(1)
    expect(page.locator("#endpoint-incidents tbody tr")).to_have_count(2)
    expect(page.locator("#run-now-form")).to_be_visible()  # the chief AI officer may run it
    full_shot(page, "monitoring.png")


def test_an_engineer_acknowledges_an_incident_from_the_inbox(page: Page) -> None:
    sign_in(page, ENGINEER)
    page.goto("/incidents")
    rows = page.locator("#incidents tbody tr")
    expect(rows).to_have_count(1)  # the false alarm was resolved
    expect(rows.first).to_contain_text("credit-scoring / drift and quality")
    expect(rows.first.locator(".sev-critical")).to_have_count(1)
    expect(rows.first.locator(".status-failed")).to_have_text("open")
    expect(page.locator("#incident-stats")).to_contain_text("mean time to acknowledge")
    full_shot(page, "incidents.png")

    with page.expect_navigation():
        rows.first.locator("a.strong").click()
    assert path_of(page) == f"/incidents/{SEEDED['open']}"
    expect(page.locator("#breaches tbody tr").first).to_be_visible()
    assert page.locator("#evidence tbody tr").count() >= 3
    form = page.locator("#acknowledge-form")
    form.get_by_label("Note").fill(
        "income and debt shifted since this morning; checking with the branch team"
    )
    with page.expect_navigation():
        form.get_by_role("button", name="Acknowledge").click()
    expect(page.get_by_role("status")).to_contain_text("Acknowledged")
    expect(page.locator("#incident-meta .status-running")).to_have_text("acknowledged")
    expect(page.locator("#acknowledge-form")).to_have_count(0)
    expect(page.locator("#timeline li.tl-acknowledge")).to_contain_text("checking with the branch team")
    expect(page.locator("#timeline li.tl-acknowledge")).to_contain_text("Jonas Weber")

    # The resolve form asks for a resolution and a confirmation before anything is sent.
    resolve = page.locator("#resolve-form")
    resolve.get_by_role("button", name="Resolve").click()
    assert resolve.locator("textarea[name=resolution]").evaluate("e => e.validity.valueMissing")
    assert path_of(page) == f"/incidents/{SEEDED['open']}"

    page.goto("/incidents?status=resolved")
    expect(page.locator("#incidents tbody tr")).to_have_count(1)
    expect(page.locator("#incidents tbody tr").first).to_contain_text("resolved")


def test_a_run_report(page: Page) -> None:
    sign_in(page, ENGINEER)
    page.goto("/monitoring/credit-scoring")
    with page.expect_navigation():
        page.locator("#latest-h").locator("xpath=..").get_by_role("link", name="Full report").click()
    assert re.fullmatch(r"/monitoring/runs/\w+", path_of(page))
    expect(page.locator(".content h1")).to_contain_text("Monitoring report")
    report = page.locator("#report")
    expect(report.get_by_role("heading", name="Data drift")).to_be_visible()
    expect(report.locator("svg").first).to_be_visible()
    expect(report.locator(".tag.drift").first).to_be_visible()
    expect(report.get_by_role("heading", name="Fairness")).to_be_visible()
    expect(page.get_by_role("link", name="Download HTML")).to_have_attribute(
        "href", re.compile(r"report\.html$")
    )
    with page.expect_download() as download:
        page.get_by_role("link", name="Download JSON").click()
    saved = json.loads(Path(download.value.path()).read_text())
    assert saved["report"]["drift"]["n_drifted"] >= 1
    full_shot(page, "drift-report.png")

    with page.expect_navigation():
        page.get_by_role("link", name="← Previous run").click()
    expect(page.locator("#report")).to_be_visible()
