"""Data in a real browser: headless Chromium against a live `bridgehead server` on a demo home, seeded through
the services with an uploaded customer file (profiled on the server), a contract and its failing validation,
a derived feature table, the run that trained on it and the model it produced.

Screenshots are written to docs/images/ (data, dataset, data-profile, lineage).
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select

from bridgehead import demo
from bridgehead.audit.service import ActorRef
from bridgehead.auth.models import Person
from bridgehead.auth.tokens import create_token
from bridgehead.data import service as data
from bridgehead.data.pii import detect_columns
from bridgehead.data.profile import Profiler
from bridgehead.store import Database, upgrade
from bridgehead.store.artifacts import ArtifactStore
from bridgehead.tracking import service as tracking
from tests.live import bridgehead_env, running_server
from tests.tracking.seed import RunSpec, curve, log_run, principal_for, register, run_dir, save_sklearn_model
from tests.web.browser import charts_drawn, full_shot, path_of, sign_in

pytestmark = pytest.mark.browser

IGNORED_CONSOLE = r"status of 4(00|04|22)"  # console messages the tests provoke (see conftest.py)

SCIENTIST = "ds.retail@demo.bridgehead.dev"
ROWS = 600
CONTRACT = """columns:
  customer_id: {type: string, nullable: false, unique: true, regex: "^C[0-9]{6}$"}
  email: {type: string, nullable: false}
  age: {type: integer, min: 18, max: 100}
  balance_eur: {type: number, min: 0}
  segment: {type: string, allowed_values: [mass, affluent, private]}
rows: {min: 100}
"""
SEEDED: dict[str, str] = {}


def customers_csv() -> bytes:
    rng = np.random.default_rng(11)
    first = ["anna", "ben", "carla", "dev", "elif", "femi", "greta", "hugo", "ines", "jonas", "kai", "lea"]
    age = np.clip(rng.normal(44, 14, ROWS), 18, 92).astype(int)
    tenure = np.clip(rng.gamma(2.2, 28, ROWS), 1, 360).astype(int)
    balance = np.round(rng.lognormal(7.6, 1.0, ROWS) - 400, 2)  # a few overdrawn accounts
    opened = np.datetime64("2024-12-31") - tenure.astype("timedelta64[D]") * 30
    table = pa.table(
        {
            "customer_id": [f"C{100000 + i}" for i in range(ROWS)],
            "email": [f"{first[i % len(first)]}.{i}@example.com" for i in range(ROWS)],
            "age": age,
            "tenure_months": tenure,
            "balance_eur": balance,
            "segment": rng.choice(["mass", "affluent", "private"], ROWS, p=[0.72, 0.23, 0.05]),
            "region": rng.choice(["north", "south", "east", "west"], ROWS, p=[0.35, 0.3, 0.2, 0.15]),
            "gender": rng.choice(["f", "m"], ROWS),
            "opened_on": pa.array(opened.astype("datetime64[D]")),
            "churned": rng.random(ROWS) < 0.14,
        }
    )
    out = io.BytesIO()
    pacsv.write_csv(table, out)
    return out.getvalue()


def features_table(raw: bytes) -> pa.Table:
    table = pacsv.read_csv(io.BytesIO(raw))
    balance = table["balance_eur"].to_numpy()
    return pa.table(
        {
            "customer_id": table["customer_id"],
            "age": table["age"],
            "tenure_bucket": pa.array(
                np.where(table["tenure_months"].to_numpy() < 24, "new", "established").tolist()
            ),
            "balance_z": np.round((balance - balance.mean()) / balance.std(), 3),
            "segment": table["segment"],
            "churned": table["churned"],
        }
    )


def seed_data(home: Path) -> None:
    db = Database(f"sqlite:///{home}/bridgehead.db")
    store = ArtifactStore(str(home / "artifacts"))
    try:
        secrets = {}
        with db.session(write=True) as session:
            for local in ("ds.retail", "de.retail", "ds.lending"):
                person = session.scalar(select(Person).where(Person.email == f"{local}@demo.bridgehead.dev"))
                assert person is not None
                _, secrets[local] = create_token(session, ActorRef(email="test:browser"), person, "seed", 1)
        engineer = principal_for(db, secrets["de.retail"])
        scientist = principal_for(db, secrets["ds.retail"])
        lending = principal_for(db, secrets["ds.lending"])
        raw = customers_csv()
        with db.session(write=True) as session:
            customers = data.create_dataset(
                session,
                engineer,
                "customers-2024q4",
                description="Current-account customers at the end of 2024, one row each, from the core banking export.",
                source_system="core-banking",
                tags={"domain": "retail", "refresh": "quarterly"},
                contract=CONTRACT,
            )
            version, _ = data.upload_version(
                session, engineer, customers, store, "customers.csv", [raw], max_bytes=10_000_000
            )
            data.validate_stored_version(session, engineer, customers, version, store)
            SEEDED["customers"] = customers.id
            SEEDED["customers_v1"] = version.id

            features = features_table(raw)
            with Profiler(features.schema, threads=1) as profiler:
                profiler.update(features)
            sink = io.BytesIO()
            pacsv.write_csv(features, sink)
            digest = hashlib.sha256(sink.getvalue()).hexdigest()
            derived = data.create_dataset(
                session,
                engineer,
                "churn-features",
                description="Model-ready churn features: no direct identifiers beyond the customer id.",
                source_system="feature-pipeline",
            )
            data.register_version(
                session,
                engineer,
                derived,
                digest=digest,
                location="s3://lake/retail/churn-features/2024q4.parquet",
                format="parquet",
                profile=profiler.profile.to_state(),
                origin="client",
                parents=[(version.id, "drop e-mail, tenure buckets, balance z-score")],
                column_tags=detect_columns(features.to_batches()[0]),
            )
            SEEDED["features"] = derived.id
            branches = data.create_dataset(
                session, engineer, "branch-visits", description="Weekly branch footfall.", source_system="iot"
            )
            data.register_version(
                session,
                engineer,
                branches,
                digest=hashlib.sha256(b"branch visits").hexdigest(),
                location="s3://lake/retail/branches/2024.parquet",
                format="parquet",
                schema=[{"name": "branch", "type": "string"}, {"name": "visits", "type": "int64"}],
                row_count=5200,
            )
            data.create_dataset(
                session,
                lending,
                "sme-loans",
                description="SME credit lines and their twelve-month default flag.",
                source_system="loan-origination",
                visibility="organization",
            )
            churn = tracking.create_experiment(session, scientist, "churn-prediction").id
        run = log_run(
            db,
            scientist,
            churn,
            RunSpec(
                "gbm-d4-lr0.10",
                {"model": "gbm", "max_depth": "4"},
                {"val_auc": curve(0.91, 20)},
                datasets=[
                    {
                        "name": "churn-features",
                        "digest": digest,
                        "source": "s3://lake/retail/churn-features/2024q4.parquet",
                        "context": "training",
                    }
                ],
            ),
            start_ms=tracking.now_ms() - 2 * 3_600_000,
        )
        save_sklearn_model(store, f"{run_dir(db, scientist, run)}/model", seed=4)
        register(
            db, scientist, store, "churn-classifier", run, description="Flags customers likely to leave."
        )
        SEEDED["run"] = run
    finally:
        db.dispose()


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("browser-data") / "home"
    home.mkdir()
    db = Database(f"sqlite:///{home}/bridgehead.db")
    try:
        upgrade(db)
        demo.seed(db, ActorRef(email="test:browser"))
    finally:
        db.dispose()
    seed_data(home)
    env = bridgehead_env(
        home=str(home), database_url=f"sqlite:///{home}/bridgehead.db", secret_key="browser-test-key"
    )
    with running_server(env, log=home / "server.log") as url:
        yield url


def test_datasets_profile_contract_and_lineage(page: Page) -> None:
    sign_in(page, SCIENTIST)
    nav = page.get_by_role("complementary", name="Main navigation").locator("nav a")
    with page.expect_navigation():
        nav.filter(has_text=re.compile(r"^Data$")).click()
    assert path_of(page) == "/data"
    expect(page.locator(".shell .content h1")).to_have_text("Data")
    rows = page.locator("#datasets tbody tr")
    expect(rows).to_have_count(4)  # retail's three and lending's organization-wide one
    customers = rows.filter(has_text="customers-2024q4")
    expect(customers).to_contain_text("Retail Banking")
    expect(customers).to_contain_text("600")
    expect(customers.locator(".status-failed")).to_have_text("failed")
    expect(rows.filter(has_text="sme-loans")).to_contain_text("shared organization-wide")
    full_shot(page, "data.png")

    with page.expect_navigation():
        customers.get_by_role("link", name="customers-2024q4").click()
    expect(page.locator(".content h1")).to_have_text("customers-2024q4")
    expect(page.locator("#versions tbody tr")).to_have_count(1)
    expect(page.locator("#versions tbody tr").first).to_contain_text("1 pii")
    expect(page.locator("#contract-text")).to_have_value(CONTRACT)
    report = page.locator("details.report").first
    report.locator("summary").click()
    failing = report.locator(".expectations tr.fail")
    expect(failing.first).to_contain_text("balance_eur")
    expect(report).to_contain_text("•••")  # sample e-mails are masked for a data scientist
    expect(report).not_to_contain_text("@example.com")
    full_shot(page, "dataset.png")

    # An invalid contract is refused and the typed text stays in the editor.
    page.locator("#contract-text").fill("columns:\n  age: {min: 90, max: 18}\n")
    with page.expect_navigation():
        page.get_by_role("button", name="Save contract").click()
    expect(page.get_by_role("alert")).to_contain_text("min is greater than max")
    expect(page.locator("#contract-text")).to_have_value("columns:\n  age: {min: 90, max: 18}\n")
    # Validate again with the stored contract.
    page.goto(f"/data/{SEEDED['customers']}")
    with page.expect_navigation():
        page.locator("#versions").get_by_role("button", name="Validate").click()
    expect(page.get_by_role("status")).to_contain_text("Version 1 validated: failed")
    expect(page.locator("details.report")).to_have_count(2)

    with page.expect_navigation():
        page.locator("#versions").get_by_role("link", name="v1").click()
    assert path_of(page) == f"/data/{SEEDED['customers']}/versions/1"
    cards = page.locator(".column-card")
    expect(cards).to_have_count(10)
    charts = page.locator(".column-card .chart").count()
    assert charts >= 6
    charts_drawn(page, charts)
    expect(page.locator(".js-plotly-plot").first).to_be_visible()
    email = cards.filter(has=page.locator(".chart-title", has_text="email"))
    expect(email.locator(".pill-masked")).to_have_text("masked")
    expect(email.locator(".pill-pii")).to_be_visible()
    expect(page.locator("#masked-note")).to_be_visible()
    age = cards.filter(has=page.locator(".chart-title", has_text=re.compile(r"^age$")))
    expect(age.locator("g.trace.bars")).to_have_count(1)
    expect(page.locator("body")).not_to_contain_text("@example.com")
    full_shot(page, "data-profile.png")

    with page.expect_navigation():
        page.get_by_role("link", name="All versions").click()
    with page.expect_navigation():
        page.locator("#lineage-link").click()
    graph = page.locator("svg#lineage-graph")
    expect(graph).to_be_visible()
    nodes = graph.locator("a.lg-node")
    expect(nodes).to_have_count(4)
    expect(graph.locator(".lg-current")).to_have_count(1)
    expect(graph).to_contain_text("drop e-mail, tenure buckets")
    expect(graph).to_contain_text("training")
    expect(page.locator("#lineage-edges tbody tr")).to_have_count(3)
    box = graph.bounding_box()
    assert box is not None and box["width"] > 600
    full_shot(page, "lineage.png")
    with page.expect_download() as download:
        page.locator("#openlineage").click()
    assert b'"eventType"' in Path(download.value.path()).read_bytes()
    with page.expect_navigation():
        nodes.filter(has_text="gbm-d4-lr0.10").click()
    assert path_of(page) == f"/runs/{SEEDED['run']}"


def test_another_unit_gets_404_for_a_private_dataset(page: Page) -> None:
    sign_in(page, "ds.lending@demo.bridgehead.dev")
    page.goto("/data")
    expect(page.locator("#datasets tbody tr")).to_have_count(1)  # its own, organization-wide sme-loans
    response = page.goto(f"/data/{SEEDED['customers']}")
    assert response is not None and response.status == 404
    expect(page.locator(".content h1")).to_have_text("404")
