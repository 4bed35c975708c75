"""Experiments and Models in a real browser: headless Chromium against a live `bridgehead server` on a demo
home, seeded with runs, metric histories, artifacts and registered models through the services.

Screenshots are written to docs/images/ (experiments, run, compare, models, model-version).
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select

from bridgehead import demo
from bridgehead.audit.service import ActorRef
from bridgehead.auth.models import Person
from bridgehead.auth.tokens import create_token
from bridgehead.registry import service as registry
from bridgehead.store import Database, upgrade
from bridgehead.store.artifacts import ArtifactStore
from bridgehead.tracking import service as tracking
from tests.live import bridgehead_env, running_server
from tests.tracking.seed import (
    RunSpec,
    curve,
    log_run,
    principal_for,
    register,
    run_dir,
    save_sklearn_model,
)
from tests.web.browser import ADMIN, charts_drawn, full_shot, path_of, sign_in

pytestmark = pytest.mark.browser

IGNORED_CONSOLE = r"status of 40[04]"  # console messages the tests provoke (see conftest.py)

HOUR = 3_600_000
SIGNATURE = {
    "inputs": (
        '[{"type": "double", "name": "tenure_months"}, {"type": "double", "name": "balance_eur"}, '
        '{"type": "long", "name": "products_held"}, {"type": "double", "name": "monthly_logins"}]'
    ),
    "outputs": '[{"type": "tensor", "tensor-spec": {"dtype": "int64", "shape": [-1]}}]',
}
SEEDED: dict[str, str] = {}


def _loss(final: float, steps: int, seed: float) -> list[float]:
    return curve(final, steps, rising=False, seed=seed)


def _confusion_png(tp: int, fp: int, fn: int, tn: int) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3.6, 3.0), dpi=100)
    cells = [[tn, fp], [fn, tp]]
    ax.imshow(cells, cmap="Blues")
    for i in range(2):
        for j in range(2):
            ax.text(j, i, str(cells[i][j]), ha="center", va="center", color="#0f1a33", fontsize=12)
    ax.set_xticks([0, 1], ["stays", "churns"])
    ax.set_yticks([0, 1], ["stays", "churns"])
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def seed_tracking(home: Path) -> None:
    """Experiments in three business units, a tuned churn model with two registered versions."""
    db = Database(f"sqlite:///{home}/bridgehead.db")
    store = ArtifactStore(str(home / "artifacts"))
    try:
        principals = {}
        with db.session(write=True) as session:
            for local in ("ds.retail", "ds.lending", "ds.insurance"):
                person = session.scalar(select(Person).where(Person.email == f"{local}@demo.bridgehead.dev"))
                assert person is not None
                _, secret = create_token(session, ActorRef(email="test:browser"), person, "browser-seed", 1)
                principals[local] = secret
        retail = principal_for(db, principals["ds.retail"])
        lending = principal_for(db, principals["ds.lending"])
        insurance = principal_for(db, principals["ds.insurance"])
        with db.session(write=True) as session:
            churn = tracking.create_experiment(
                session,
                retail,
                "churn-prediction",
                description="Which current-account customers close their account within 90 days.",
                tags={"use_case": "retention", "owner": "retail-analytics"},
            ).id
            credit = tracking.create_experiment(
                session,
                lending,
                "credit-default-pd",
                description="Probability of default for SME credit lines.",
                visibility="organization",
            ).id
            fraud = tracking.create_experiment(
                session, insurance, "claims-fraud", description="Flag suspicious motor claims for review."
            ).id
        customers = {
            "name": "customers-2024q4",
            "digest": "5d41402abc4b2a76",
            "source": "s3://lake/retail/customers/2024q4.parquet",
            "context": "training",
        }
        holdout = {
            "name": "customers-2025q1",
            "digest": "7d793037a0760186",
            "source": "s3://lake/retail/customers/2025q1.parquet",
            "context": "validation",
        }
        start = tracking.now_ms() - 3 * 24 * HOUR  # three days ago, so that the pages read naturally
        grid = [
            ("gbm-d4-lr0.10", "gbm", "4", "0.1", "400", 0.912, 0.241, 0.871, 0.802, "FINISHED"),
            ("gbm-d6-lr0.10", "gbm", "6", "0.1", "400", 0.905, 0.238, 0.866, 0.781, "FINISHED"),
            ("gbm-d4-lr0.05", "gbm", "4", "0.05", "800", 0.909, 0.247, 0.869, 0.795, "FINISHED"),
            ("gbm-d3-lr0.10", "gbm", "3", "0.1", "400", 0.897, 0.259, 0.861, 0.774, "FINISHED"),
            ("rf-500-trees", "random_forest", "12", "", "500", 0.889, 0.272, 0.853, 0.760, "FINISHED"),
            ("logreg-baseline", "logreg", "", "", "", 0.842, 0.338, 0.812, 0.701, "FINISHED"),
            ("gbm-d8-lr0.20", "gbm", "8", "0.2", "400", 0.861, 0.301, 0.829, 0.722, "FAILED"),
            ("gbm-d5-lr0.08", "gbm", "5", "0.08", "600", 0.903, 0.251, 0.864, 0.788, "RUNNING"),
        ]
        runs: dict[str, str] = {}
        for n, (name, model, depth, lr, trees, auc, loss, acc, f1, status) in enumerate(grid):
            params = {"model": model, "features": "v3", "class_weight": "balanced"}
            params.update(
                {k: v for k, v in (("max_depth", depth), ("learning_rate", lr), ("n_estimators", trees)) if v}
            )
            steps = 12 if status == "RUNNING" else (18 if status == "FAILED" else 40)
            histories = {
                "val_auc": curve(auc, steps, seed=n),
                "train_loss": _loss(loss, steps, seed=n),
                "accuracy": [acc],
                "f1": [f1],
                "precision": [round(f1 + 0.031, 3)],
                "recall": [round(f1 - 0.027, 3)],
            }
            if status == "RUNNING":
                histories = {k: v for k, v in histories.items() if k in ("val_auc", "train_loss")}
            runs[name] = log_run(
                db,
                retail,
                churn,
                RunSpec(
                    name,
                    params,
                    histories,
                    status=status,
                    tags={
                        "team": "retail-analytics",
                        "mlflow.source.name": "train_churn.py",
                        "mlflow.source.type": "LOCAL",
                    },
                    datasets=[customers, holdout],
                    minutes=4 + 3 * n,
                ),
                start_ms=start + n * HOUR,
            )
        with db.session(write=True) as session:
            running = tracking.get_run(session, retail, runs["gbm-d5-lr0.08"])
            running.status, running.end_ms = "RUNNING", None
            tracking.log_batch(
                session,
                retail,
                runs["gbm-d4-lr0.10"],
                tags={
                    "mlflow.note.content": "Best AUC of the depth sweep; promoted to champion after review."
                },
            )
        best = run_dir(db, retail, runs["gbm-d4-lr0.10"])
        store.put_bytes(f"{best}/plots/confusion_matrix.png", _confusion_png(1812, 402, 377, 9409))
        store.put_bytes(
            f"{best}/reports/feature_importance.csv",
            b"feature,importance\ntenure_months,0.31\nmonthly_logins,0.24\nbalance_eur,0.19\nproducts_held,0.12\n",
        )
        save_sklearn_model(store, f"{run_dir(db, retail, runs['rf-500-trees'])}/model", seed=5)
        save_sklearn_model(store, f"{best}/model", signature=SIGNATURE, seed=4)
        register(
            db,
            retail,
            store,
            "churn-classifier",
            runs["rf-500-trees"],
            description="Flags current-account customers likely to leave within 90 days, for the retention team's outreach list.",
        )
        register(db, retail, store, "churn-classifier", runs["gbm-d4-lr0.10"])
        with db.session(write=True) as session:
            registry.set_alias(session, retail, "churn-classifier", "champion", 2)
            registry.set_alias(session, retail, "churn-classifier", "baseline", 1)

        for n, (name, gini) in enumerate([("pd-glm", 0.58), ("pd-xgb", 0.66), ("pd-xgb-monotone", 0.64)]):
            rid = log_run(
                db,
                lending,
                credit,
                RunSpec(
                    name,
                    {"model": name.split("-")[1]},
                    {"gini": curve(gini, 20, seed=n), "ks": [round(gini * 0.7, 3)]},
                ),
                start_ms=start + 30 * HOUR + n * HOUR,
            )
            if name == "pd-xgb":
                save_sklearn_model(store, f"{run_dir(db, lending, rid)}/model", seed=7)
                register(
                    db,
                    lending,
                    store,
                    "sme-default-pd",
                    rid,
                    description="Twelve-month probability of default for SME credit lines.",
                    visibility="organization",
                )
        for n, name in enumerate(["iforest-baseline", "gbm-claims"]):
            log_run(
                db,
                insurance,
                fraud,
                RunSpec(name, {"model": name.split("-")[0]}, {"pr_auc": curve(0.41 + 0.1 * n, 15, seed=n)}),
                start_ms=start + 50 * HOUR + n * HOUR,
            )
        SEEDED.update(runs)
        SEEDED["churn"] = churn
    finally:
        db.dispose()


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The demo organization (people and units, as `bridgehead demo` seeds them, without its model training,
    so that the screenshots show a fixed set of runs), the tracking data above, and `bridgehead server`."""
    home = tmp_path_factory.mktemp("browser-tracking") / "home"
    home.mkdir()
    db = Database(f"sqlite:///{home}/bridgehead.db")
    try:
        upgrade(db)
        demo.seed(db, ActorRef(email="test:browser"))
    finally:
        db.dispose()
    seed_tracking(home)
    env = bridgehead_env(
        home=str(home), database_url=f"sqlite:///{home}/bridgehead.db", secret_key="browser-test-key"
    )
    with running_server(env, log=home / "server.log") as url:
        yield url


def test_experiments_runs_and_compare(page: Page) -> None:
    sign_in(page, ADMIN)
    nav = page.get_by_role("complementary", name="Main navigation").locator("nav a")
    with page.expect_navigation():
        nav.filter(has_text=re.compile(r"^Experiments$")).click()
    assert path_of(page) == "/experiments"
    expect(page.locator(".shell .content h1")).to_have_text("Experiments")
    rows = page.locator("#experiments tbody tr")
    expect(rows).to_have_count(3)
    expect(rows.first).to_contain_text("claims-fraud")
    churn_row = rows.filter(has_text="churn-prediction")
    expect(churn_row).to_contain_text("Retail Banking")
    expect(churn_row.locator("td.num")).to_contain_text("8")
    expect(churn_row.locator(".status-running")).to_have_text("1 live")
    full_shot(page, "experiments.png")

    with page.expect_navigation():
        churn_row.get_by_role("link", name="churn-prediction").click()
    runs = page.locator("#runs tbody tr")
    expect(runs).to_have_count(8)
    expect(page.locator("#runs thead")).to_contain_text("Metrics")

    # Choose the columns: three metrics, two parameters.
    page.locator(".picker > summary").click()
    menu = page.locator(".picker-menu")
    for key in ("accuracy", "recall", "train_loss", "class_weight", "features", "model", "n_estimators"):
        menu.get_by_label(key, exact=True).uncheck()
    for key in ("f1", "precision", "val_auc", "learning_rate", "max_depth"):
        menu.get_by_label(key, exact=True).check()
    with page.expect_navigation():
        menu.get_by_role("button", name="Show columns").click()
    headers = page.locator("#runs thead tr").last.locator("th")
    expect(headers).to_have_text(
        [
            "",
            re.compile("^Run"),
            re.compile("^Status"),
            re.compile("^Started"),
            "Duration",
            re.compile("^f1"),
            re.compile("^precision"),
            re.compile("^val_auc"),
            re.compile("^learning_rate"),
            re.compile("^max_depth"),
        ]
    )

    # Sort by val_auc (best first), then filter with MLflow's grammar.
    with page.expect_navigation():
        headers.filter(has_text="val_auc").get_by_role("link").click()
    expect(runs.first.locator("td.run-name")).to_have_text("gbm-d4-lr0.10")
    expect(runs.first.locator('td[data-key="val_auc"]')).to_have_text("0.912")
    page.get_by_label("Filter runs").fill("params.model = 'gbm' and metrics.val_auc > 0.9")
    with page.expect_navigation():
        page.get_by_role("button", name="Apply").click()
    expect(runs.locator("td.run-name")).to_have_text(
        ["gbm-d4-lr0.10", "gbm-d4-lr0.05", "gbm-d6-lr0.10", "gbm-d5-lr0.08"]
    )
    page.get_by_label("Filter runs").fill("metrics.val_auc >")
    with page.expect_navigation():
        page.get_by_role("button", name="Apply").click()
    expect(page.get_by_role("alert")).to_contain_text("The filter could not be applied")
    with page.expect_navigation():
        page.get_by_role("link", name="Clear filter").click()
    expect(runs).to_have_count(8)
    full_shot(page, "runs.png")

    with page.expect_navigation():
        runs.first.get_by_role("link", name="gbm-d4-lr0.10").click()
    expect(page.locator(".content h1")).to_contain_text("gbm-d4-lr0.10")
    charts_drawn(page, 2)
    expect(page.locator("#params")).to_contain_text("learning_rate")
    expect(page.locator("#datasets tbody tr")).to_have_count(2)
    expect(page.locator(".gallery img")).to_have_count(1)
    page.wait_for_function(
        "() => [...document.querySelectorAll('.gallery img')].every(i => i.complete && i.naturalWidth > 0)"
    )
    expect(page.locator("#versions")).to_contain_text("churn-classifier")
    with page.expect_download() as download:
        page.locator("#artifacts tr", has_text="feature_importance.csv").get_by_role(
            "link", name="Download"
        ).click()
    assert Path(download.value.path()).read_bytes().startswith(b"feature,importance\n")
    full_shot(page, "run.png")

    page.go_back()
    boxes = page.locator('#runs tbody input[name="ids"]')
    compare = page.locator("#compare-form button")
    expect(compare).to_be_disabled()
    for i in (0, 1, 2):
        boxes.nth(i).check()
    expect(compare).to_have_text("Compare 3 runs")
    with page.expect_navigation():
        compare.click()
    assert path_of(page) == "/runs/compare"
    expect(page.locator(".content h1")).to_have_text("Comparing 3 runs")
    expect(page.locator("#compare-params tr.diff").first).to_be_visible()
    expect(page.locator('#compare-params tr.diff[data-key="max_depth"]')).to_be_visible()
    expect(page.locator('#compare-params tr[data-key="features"]')).not_to_have_class(re.compile(r"\bdiff\b"))
    charts_drawn(page, 6)
    # Overlaid histories: one line per run on the val_auc chart.
    val_auc = page.locator(".chart-card", has_text="val_auc")
    expect(val_auc.locator("g.trace.scatter")).to_have_count(3)
    full_shot(page, "compare.png")


def test_models_and_version_lineage(page: Page) -> None:
    sign_in(page, ADMIN, path="/login?next=/models")
    assert path_of(page) == "/models"
    rows = page.locator("#models tbody tr")
    expect(rows).to_have_count(2)
    churn = rows.filter(has_text="churn-classifier")
    expect(churn).to_contain_text("v2")
    expect(churn.locator(".pill-alias")).to_have_text([re.compile("@baseline"), re.compile("@champion")])
    full_shot(page, "models.png")

    with page.expect_navigation():
        churn.get_by_role("link", name="churn-classifier").click()
    versions = page.locator("#versions tbody tr")
    expect(versions).to_have_count(2)
    expect(versions.first).to_contain_text("gbm-d4-lr0.10")
    with page.expect_navigation():
        versions.first.get_by_role("link", name="v2").click()
    lineage = page.locator("#lineage .node")
    expect(lineage).to_have_count(4)
    expect(lineage.nth(0)).to_contain_text("customers-2024q4")
    expect(lineage.nth(1)).to_contain_text("gbm-d4-lr0.10")
    expect(lineage.nth(2)).to_contain_text("v2")
    expect(lineage.nth(3)).to_contain_text("Not deployed")
    expect(page.locator("#signature-inputs tbody tr")).to_have_count(4)
    with page.expect_download() as download:
        page.locator("#files tr", has_text="model.skops").get_by_role("link", name="Download").click()
    assert Path(download.value.path()).stat().st_size > 500
    with page.expect_navigation():
        page.get_by_role("link", name="Verify files").click()
    expect(page.locator("#verify-result")).to_contain_text("match")
    full_shot(page, "model-version.png")


def test_a_business_user_of_another_unit_gets_404(page: Page, base_url: str) -> None:
    sign_in(page, "user.lending@demo.bridgehead.dev")
    page.goto("/experiments")
    expect(page.locator("#experiments tbody tr")).to_have_count(1)  # the organization-wide credit experiment
    response = page.goto(f"/experiments/{SEEDED['churn']}")
    assert response is not None and response.status == 404
    expect(page.locator(".content h1")).to_have_text("404")
    response = page.goto("/models/churn-classifier")
    assert response is not None and response.status == 404
