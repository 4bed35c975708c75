"""The demo organization: three business units, the central team, and a person in every role."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bridgehead.audit.service import Actor
from bridgehead.auth.roles import ROLE_LABELS, Role
from bridgehead.org import service
from bridgehead.org.models import BusinessUnit
from bridgehead.settings import Settings
from bridgehead.store import Database

__all__ = ["DEMO_PASSWORD", "demo_tokens", "register_data", "replay_monitoring", "seed", "train_models"]

DEMO_PASSWORD = "bridgehead-demo"  # noqa: S105 — printed to the user on purpose; demo data only
DOMAIN = "demo.bridgehead.dev"

UNITS = [
    ("retail-banking", "Retail Banking", "Current accounts, cards and consumer credit."),
    ("corporate-lending", "Corporate Lending", "Loans and credit lines for businesses."),
    ("insurance", "Insurance", "Home, motor and life insurance."),
]

# (local part, name, role, unit slug; None = central platform team)
PEOPLE: list[tuple[str, str, Role, str | None]] = [
    ("admin", "Amara Okafor", Role.CHIEF_AI_OFFICER, None),
    ("pm", "Lukas Brenner", Role.AI_PROGRAM_MANAGER, None),
    ("ethics", "Sofia Marchetti", Role.ETHICS_COMPLIANCE_OFFICER, None),
    ("ds.retail", "Priya Raman", Role.DATA_SCIENTIST, "retail-banking"),
    ("mle.retail", "Jonas Weber", Role.ML_ENGINEER, "retail-banking"),
    ("de.retail", "Chen Wei", Role.DATA_ENGINEER, "retail-banking"),
    ("champion.retail", "Fatima Zahra", Role.AI_CHAMPION, "retail-banking"),
    ("user.retail", "Tom Hughes", Role.BUSINESS_USER, "retail-banking"),
    ("ds.lending", "Elena Petrova", Role.DATA_SCIENTIST, "corporate-lending"),
    ("mle.lending", "Kwame Mensah", Role.ML_ENGINEER, "corporate-lending"),
    ("user.lending", "Grace Kim", Role.BUSINESS_USER, "corporate-lending"),
    ("ds.insurance", "Mateo García", Role.DATA_SCIENTIST, "insurance"),
    ("champion.insurance", "Aiko Tanaka", Role.AI_CHAMPION, "insurance"),
    ("user.insurance", "Noah Fischer", Role.BUSINESS_USER, "insurance"),
]


def seed(db: Database, actor: Actor) -> list[tuple[str, str, str]]:
    """Seed the organization; returns (e-mail, role label, unit name) for each person."""
    created: list[tuple[str, str, str]] = []
    with db.session(write=True) as session:
        central = service.ensure_central_unit(session, actor)
        units: dict[str | None, BusinessUnit] = {None: central}
        for slug, name, description in UNITS:
            units[slug] = service.create_unit(session, actor, slug, name, description)
        for local, name, role, unit_slug in PEOPLE:
            unit = units[unit_slug]
            person, _ = service.invite_person(
                session,
                actor,
                email=f"{local}@{DOMAIN}",
                name=name,
                role=role,
                business_unit_id=unit.id,
                password=DEMO_PASSWORD,
            )
            created.append((person.email, ROLE_LABELS[role], unit.name))
    return created


# --- experiments and models -------------------------------------------------------------------

FEATURES = [
    "income_k",
    "debt_ratio",
    "credit_lines",
    "late_payments",
    "tenure_years",
    "age",
    "utilisation",
    "inquiries",
]


def demo_tokens(db: Database, actor: Actor) -> dict[str, str]:
    """API tokens for the demo's data scientists, ML engineer and AI champion, so the demo logs, deploys and
    gives feedback as they would."""
    from bridgehead.auth.tokens import create_token, find_person

    tokens = {}
    with db.session(write=True) as session:
        for local in ("ds.retail", "ds.lending", "mle.retail", "champion.retail"):
            person = find_person(session, f"{local}@{DOMAIN}")
            _, secret = create_token(session, actor, person, "demo", 30)
            tokens[local] = secret
    return tokens


def _credit_data(seed: int = 7) -> Any:
    import pandas as pd
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=3000, n_features=len(FEATURES), n_informative=5, weights=[0.8], random_state=seed
    )
    frame = pd.DataFrame(x, columns=FEATURES)
    frame["defaulted"] = y
    return frame


TRAINING_CONTRACT = """
columns:
  applicant_email: {type: string, nullable: false, regex: "^[^@ ]+@[^@ ]+$"}
  gender: {type: string, allowed_values: [female, male, other]}
  income_k: {type: number, max_null_share: 0.01}
  defaulted: {type: integer, allowed_values: [0, 1]}
rows: {min: 1000}
"""

BRANCH_CONTRACT = """
columns:
  application_id: {type: string, nullable: false, unique: true, regex: "^BR-[0-9]{6}$"}
  applied_on: {type: date, nullable: false, standardize: {date_format: "%d/%m/%Y"}}
  amount_eur: {type: number, min: 0, standardize: {decimal_separator: ",", thousands_separator: "."}}
  region: {type: string, allowed_values: [north, south, east, west],
           standardize: {strip: true, case: lower, map: {N: north, S: south, E: east, W: west}}}
rows: {min: 100}
"""


def _applicants(data: Any, seed: int = 7) -> Any:
    """The credit data as the bank holds it: with the applicant's name and e-mail (personal data) and
    gender (a protected attribute the fairness audit will group by)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    first = ["Anna", "John", "Maria", "David", "Sophie", "Lukas", "Emma", "Omar", "Julia", "Peter"]
    last = ["Schmidt", "Smith", "Rossi", "Dubois", "Jansen", "Novak", "Garcia", "Kowalski"]
    frame = data.copy()
    names = [f"{first[i % len(first)]} {last[(i * 7) % len(last)]}" for i in range(len(frame))]
    frame.insert(0, "applicant_name", names)
    frame.insert(1, "applicant_email", [f"applicant{i}@mail.example" for i in range(len(frame))])
    frame.insert(2, "gender", rng.choice(["female", "male", "other"], len(frame), p=[0.49, 0.49, 0.02]))
    return frame


def _branch_export(seed: int = 3) -> str:
    """A second source in the usual mess: day-first dates, decimal commas, region spellings, and a few
    rows that no clean-up can save (an unknown region, a date that is not one)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    spellings = ["North", " north", "N", "south", "S", "SOUTH ", "East", "E", "west", "W"]
    lines = ["application_id,applied_on,amount_eur,region"]
    for i in range(400):
        day, month = int(rng.integers(1, 29)), int(rng.integers(1, 12))
        amount = f"{int(rng.integers(1, 90))}.{int(rng.integers(0, 999)):03d},{int(rng.integers(0, 99)):02d}"
        region = spellings[i % len(spellings)]
        date = f"{day:02d}/{month:02d}/2026"
        if i in (17, 230):
            region = "Nrth"  # a spelling the contract does not know
        if i == 311:
            date = "31/02/2026"  # not a date
        lines.append(f'BR-{100000 + i},{date},"{amount}",{region}')
    return "\n".join(lines) + "\n"


def register_data(url: str, token: str, say: Callable[[str], None], workdir: Path) -> Path:
    """Register the demo's data the way a data engineer would: the credit applications (uploaded, with PII
    and a protected attribute, passing its contract), a messy branch export (failing its contract, visibly),
    and its standardized version derived from it. Returns the training file the models will log."""
    import polars as pl

    import bridgehead as bh
    from bridgehead.data.contracts import parse_contract, standardize
    from bridgehead.data.local import describe

    client = bh.Client(url, token)
    training = workdir / "credit-applications-2026.parquet"
    _applicants(_credit_data()).to_parquet(training, index=False)
    say("registering credit-applications-2026 (PII and a protected attribute, with a contract)")
    credit = client.create_dataset(
        "credit-applications-2026",
        description="Consumer credit applications with the default outcome 12 months later.",
        source_system="Loan origination (LOS)",
        contract=TRAINING_CONTRACT,
    )
    client.upload_dataset_version(credit.id, training.name, training)
    client.validate_dataset_version(credit.id, 1)

    say("registering branch-applications (a messy export that fails its contract)")
    raw = workdir / "branch-applications.csv"
    raw.write_text(_branch_export())
    branch = client.create_dataset(
        "branch-applications",
        description="Weekly CSV export from the branch network: day-first dates, decimal commas.",
        source_system="Branch CRM export",
        contract=BRANCH_CONTRACT,
    )
    raw_version = client.upload_dataset_version(branch.id, raw.name, raw)
    client.validate_dataset_version(branch.id, 1)

    clean = workdir / "branch-applications-clean.parquet"
    contract = parse_contract(BRANCH_CONTRACT)
    standardize(pl.scan_csv(raw, infer_schema=False), contract).collect().write_parquet(clean)
    cleaned = client.create_dataset(
        "branch-applications-clean",
        description="The branch export with the contract's standardization applied.",
        source_system="Bridgehead standardization",
    )
    described = describe(str(clean))
    client.register_dataset_version(
        cleaned.id,
        **described.registration(),
        parents=[
            {"version_id": raw_version.id, "transformation": "standardize: dates, decimals, region spellings"}
        ],
    )
    client.close()
    return training


def train_models(
    url: str, tokens: dict[str, str], say: Callable[[str], None], settings: Settings | None = None
) -> None:
    """Train real models on generated credit data; log them with the SDK (retail) and with the real
    mlflow client (lending), and register them with aliases. With the server's settings (same host), also
    replay four weeks of monitored production history."""
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, roc_auc_score
    from sklearn.model_selection import train_test_split

    import bridgehead as bh

    data = _credit_data()
    workdir = Path(tempfile.mkdtemp(prefix="bridgehead-demo-data-"))
    training = register_data(url, tokens["ds.retail"], say, workdir)
    x_train, x_test, y_train, y_test = train_test_split(
        data[FEATURES], data["defaulted"], test_size=0.3, random_state=0
    )
    bh.set_client(bh.Client(url, tokens["ds.retail"]))
    bh.set_experiment("credit-risk-scoring")
    candidates: list[tuple[str, Any, dict[str, Any]]] = [
        ("logreg-c0.1", LogisticRegression(C=0.1, max_iter=500), {"model": "logistic_regression", "C": 0.1}),
        ("logreg-c1", LogisticRegression(C=1.0, max_iter=500), {"model": "logistic_regression", "C": 1.0}),
        (
            "gbt-100",
            GradientBoostingClassifier(n_estimators=100, max_depth=3, random_state=0),
            {"model": "gradient_boosting", "n_estimators": 100, "max_depth": 3},
        ),
    ]
    for name, model, params in candidates:
        say(f"training {name} (SDK, Retail Banking)")
        with bh.start_run(run_name=name):
            bh.log_params(params)
            # The file registered above: same bytes, same digest, so lineage links the run to that version.
            bh.log_dataset(training, name="credit-applications-2026", context="training")
            model.fit(x_train, y_train)
            if hasattr(model, "staged_predict_proba"):
                for step, proba in enumerate(model.staged_predict_proba(x_test)):
                    bh.log_metric("val_auc", float(roc_auc_score(y_test, proba[:, 1])), step=step)
            proba = model.predict_proba(x_test)[:, 1]
            bh.log_metrics(
                {
                    "val_auc": float(roc_auc_score(y_test, proba)),
                    "val_accuracy": float(accuracy_score(y_test, proba > 0.5)),
                },
                step=int(params.get("n_estimators", 1)),
            )
            bh.log_model(
                model, "model", registered_model_name="credit-risk-scorer", input_example=x_test.head(3)
            )
    client = bh.get_client()
    client.set_alias("credit-risk-scorer", "champion", 3)
    client.set_alias("credit-risk-scorer", "challenger", 2)
    bh.set_client(None)
    _mlflow_run(url, tokens["ds.lending"], say)
    serve_traffic(url, tokens, say, x_test, y_test)
    if settings is not None:
        replay_monitoring(url, tokens, say, settings, candidates[2][1], x_test, y_test)


SERVING_ENDPOINT = "credit-risk"


def serve_traffic(
    url: str, tokens: dict[str, str], say: Callable[[str], None], x: Any, y: Any, requests: int = 2000
) -> None:
    """The ML engineer deploys the champion to production and canaries the challenger at 10 %; applications
    are scored one request each (keyed by applicant, so each meets one version); outcomes come back for most of
    them, and the retail AI champion overrides a few decisions after manual review."""
    import numpy as np

    from bridgehead.client import Client

    engineer = Client(url, tokens["mle.retail"])
    say("deploying the champion to production")
    engineer.deploy(
        SERVING_ENDPOINT,
        "credit-risk-scorer",
        "champion",
        environment="production",
        description="Scores consumer credit applications at the branch and online.",
        reason="first production release after validation",
    )
    engineer.deploy(
        SERVING_ENDPOINT,
        "credit-risk-scorer",
        "challenger",
        strategy="canary",
        weight=10,
        reason="canary the logistic-regression challenger before an A/B decision",
    )
    rng = np.random.default_rng(5)
    rows = rng.integers(0, len(x), requests)
    ids: list[str] = []
    truth: list[int] = []
    for n, i in enumerate(rows):
        if n % 250 == 0:
            say(f"scoring applications on {SERVING_ENDPOINT} ({n:,}/{requests:,})")
        record = {k: float(v) for k, v in x.iloc[int(i)].items()}
        answer = engineer.predict(SERVING_ENDPOINT, [record], keys=[f"applicant-{int(i)}"])
        ids.append(answer.ids[0])
        truth.append(int(y.iloc[int(i)]))
    say("recording outcomes and overrides")
    labelled = [
        {"request_id": rid, "kind": "label", "value": label}
        for rid, label in zip(ids, truth, strict=True)
        if rng.random() < 0.7  # outcomes arrive for most applications, not all
    ]
    for start in range(0, len(labelled), 500):
        engineer.feedback(SERVING_ENDPOINT, labelled[start : start + 500])
    champion = Client(url, tokens["champion.retail"])
    overrides = [
        {
            "request_id": rid,
            "kind": "override",
            "value": 0,
            "reason": "approved after manual review of payslips",
        }
        for rid in ids[:: max(1, len(ids) // 12)][:12]
    ]
    champion.feedback(SERVING_ENDPOINT, overrides)
    engineer.close()
    champion.close()


REPLAY_DAYS = 28
REPLAY_ROWS_PER_DAY = 960
# Launch looks like validation, minus outcome noise (about 88 % accurate); from day 7 income and debt ratio
# drift, more for younger applicants, until the model is about 79 % accurate and flags the young as
# defaulting far more often than the old (a fairness gap in "age", tagged protected when registered).
REPLAY_SHIFT = 2.75
REPLAY_LABEL_NOISE = 0.05
DEMO_RULES = [
    {"metric": "psi_max", "op": ">=", "threshold": 0.25, "severity": "warning"},
    # Against the validation accuracy recorded at registration (about 93 %; production starts near 88 %).
    {"metric": "accuracy_decline", "op": ">", "threshold": 0.08, "severity": "critical"},
    # Age is a model input, so the bands' flag rates differ by 0.1-0.18 at launch; alert when the gap widens.
    {"metric": "demographic_parity_difference", "op": ">", "threshold": 0.2, "severity": "warning"},
    {"metric": "dataset_drift", "op": ">=", "threshold": 1, "severity": "warning"},
]


def _replay_day(x: Any, y: Any, day: int, rng: Any) -> tuple[Any, Any]:
    import numpy as np

    idx = rng.integers(0, len(x), REPLAY_ROWS_PER_DAY)
    frame = x.iloc[idx].reset_index(drop=True).copy()
    truth = y.iloc[idx].to_numpy().copy()
    flip = rng.random(len(truth)) < REPLAY_LABEL_NOISE
    truth[flip] = 1 - truth[flip]
    shift = 0.0 if day < 7 else REPLAY_SHIFT * (day - 7) / (REPLAY_DAYS - 8)
    k = np.where(frame["age"].to_numpy() < 0, shift, shift / 4)
    frame["income_k"] = frame["income_k"] + k
    frame["debt_ratio"] = frame["debt_ratio"] - k
    return frame, truth


def replay_monitoring(
    url: str,
    tokens: dict[str, str],
    say: Callable[[str], None],
    settings: Settings,
    model: Any,
    x: Any,
    y: Any,
) -> None:
    """Four weeks of production history for the credit-risk endpoint, replayed: back-dated prediction-log files
    (requests cannot be back-dated over HTTP) written where the server keeps its log, outcomes sent through the
    feedback API, a daily monitor created through the API and run once per past day. Drift appears in two
    features, accuracy falls from about 88 % to about 79 %, a fairness gap opens, rules fire, an incident is
    opened, and the ML engineer acknowledges it."""
    import time as _time

    import numpy as np

    from bridgehead.client import Client
    from bridgehead.monitoring import service as monitoring
    from bridgehead.serving import service as serving
    from bridgehead.serving.predlog import PredictionBatch, PredictionLog

    engineer = Client(url, tokens["mle.retail"])
    endpoint = engineer.get_endpoint(SERVING_ENDPOINT)
    champion = next(r for r in endpoint.routes if r.role == "route" and r.weight >= 50)
    db = Database(settings.resolved_database_url)

    def aggregate(table: Any) -> None:
        with db.session(write=True) as session:
            serving.add_hours(session, table)

    rng = np.random.default_rng(17)
    day_ms = 86_400_000
    today = int(_time.time() * 1000) // day_ms * day_ms
    start = today - REPLAY_DAYS * day_ms
    labels: list[dict[str, Any]] = []
    say(f"replaying {REPLAY_DAYS} days of production traffic on {SERVING_ENDPOINT}")
    log = PredictionLog(settings.resolved_prediction_log_dir, flush_interval_s=3600, on_flush=aggregate)
    for day in range(REPLAY_DAYS):
        frame, truth = _replay_day(x, y, day, rng)
        predictions = model.predict(frame).tolist()
        probabilities = model.predict_proba(frame).tolist()
        for hour in range(12):  # a batch every two hours, 80 applications each
            part = slice(hour * 80, hour * 80 + 80)
            ids = [f"replay-{day:02d}-{hour:02d}-{i:02d}" for i in range(80)]
            log.record(
                [
                    PredictionBatch(
                        ids=ids,
                        endpoint=SERVING_ENDPOINT,
                        model_names=[champion.model] * 80,
                        versions=[champion.version] * 80,
                        role="primary",
                        ts_ms=start + day * day_ms + (8 + hour) * 3_600_000,
                        latency_ms=float(rng.uniform(2, 6)),
                        inputs=frame.iloc[part].reset_index(drop=True),
                        predictions=predictions[part],
                        probabilities=probabilities[part],
                    )
                ]
            )
            labels += [
                {"request_id": rid, "kind": "label", "value": int(v)}
                for rid, v in zip(ids, truth[part], strict=True)
                if rng.random() < 0.7
            ]
    log.close()
    say("recording outcomes for the replayed applications")
    for first in range(0, len(labels), 500):
        engineer.feedback(SERVING_ENDPOINT, labels[first : first + 500])
    monitor = engineer.create_monitor(
        SERVING_ENDPOINT,
        "daily drift, quality and fairness",
        description="Each morning: yesterday's applications against the training data.",
        every_minutes=1440,
        window_minutes=1440,
        rules=DEMO_RULES,
    )
    say("running the daily monitor over the replayed weeks")
    for day in range(REPLAY_DAYS):
        with db.session(write=True) as session:
            monitoring.run_monitor(
                session,
                monitor.id,
                log_root=settings.resolved_prediction_log_dir,
                trigger="replay",
                end_ms=start + (day + 1) * day_ms,
                notify_attempts=settings.notification_max_attempts,
            )
    incidents = engineer.list_incidents(endpoint=SERVING_ENDPOINT)
    if incidents:
        engineer.acknowledge_incident(
            incidents[-1].id, "Drift in income and debt ratio confirmed; retraining on recent applications."
        )
    db.dispose()
    engineer.close()


def _mlflow_run(url: str, token: str, say: Callable[[str], None]) -> None:
    try:
        import mlflow
        import mlflow.sklearn
    except ImportError:
        say("mlflow is not installed: skipping the run logged through the mlflow client")
        return
    import os

    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split

    say("training churn-forest (unchanged mlflow client, Corporate Lending)")
    # The mlflow client reads its token from the environment only.
    os.environ["MLFLOW_TRACKING_TOKEN"] = token
    mlflow.set_tracking_uri(url)
    data = _credit_data(seed=11)
    x_train, x_test, y_train, y_test = train_test_split(data[FEATURES], data["defaulted"], random_state=1)
    mlflow.set_experiment("lending-churn")
    with mlflow.start_run(run_name="churn-forest"):
        model = RandomForestClassifier(n_estimators=60, max_depth=6, random_state=0).fit(x_train, y_train)
        mlflow.log_params({"n_estimators": 60, "max_depth": 6})
        mlflow.log_metric("val_auc", float(roc_auc_score(y_test, model.predict_proba(x_test)[:, 1])))
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            registered_model_name="lending-churn",
            input_example=x_test.iloc[:3],
            # Forest node arrays: created here, so trusted (see docs/tracking.md on skops and trees).
            skops_trusted_types=["sklearn.tree._tree.Tree"],
        )
    mlflow.MlflowClient().set_registered_model_alias(
        "lending-churn", "champion", info.registered_model_version
    )
