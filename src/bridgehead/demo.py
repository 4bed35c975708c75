"""The demo organization: three business units, the central team, and a person in every role."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bridgehead.audit.service import Actor
from bridgehead.auth.roles import ROLE_LABELS, Role
from bridgehead.org import service
from bridgehead.org.models import BusinessUnit
from bridgehead.store import Database

__all__ = ["DEMO_PASSWORD", "demo_tokens", "seed", "train_models"]

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
    """API tokens for the demo's data scientists, so the demo logs as they would."""
    from bridgehead.auth.tokens import create_token, find_person

    tokens = {}
    with db.session(write=True) as session:
        for local in ("ds.retail", "ds.lending"):
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


def train_models(url: str, tokens: dict[str, str], say: Callable[[str], None]) -> None:
    """Train real models on generated credit data; log them with the SDK (retail) and with the real
    mlflow client (lending), and register them with aliases."""
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, roc_auc_score
    from sklearn.model_selection import train_test_split

    import bridgehead as bh

    data = _credit_data()
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
            bh.log_dataset(data, name="credit-applications-2026", context="training")
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
            bh.log_model(model, "model", registered_model_name="credit-risk-scorer")
    client = bh.get_client()
    client.set_alias("credit-risk-scorer", "champion", 3)
    client.set_alias("credit-risk-scorer", "challenger", 2)
    bh.set_client(None)
    _mlflow_run(url, tokens["ds.lending"], say)


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
