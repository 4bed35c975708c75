"""Fixtures for serving: real scikit-learn models logged and registered through the SDK, deployed by an ML
engineer through the API, scored through the in-process app."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression

import bridgehead as bh
from bridgehead import errors
from bridgehead.auth.roles import Role
from bridgehead.client import Client
from tests.conftest import Member, Org

FEATURES = ["age", "income", "debt", "tenure"]


def credit_data(n: int = 400, seed: int = 7) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 80, n).astype(float),
            "income": rng.normal(4000, 1200, n),
            "debt": rng.normal(1500, 700, n),
            "tenure": rng.integers(0, 30, n).astype(float),
        }
    )
    y = ((frame["debt"] / frame["income"] + rng.normal(0, 0.1, n)) > 0.4).astype(int).to_numpy()
    return frame, y


@dataclass
class Registered:
    engineer: Member
    frame: pd.DataFrame
    y: np.ndarray
    v1: LogisticRegression
    v2: GradientBoostingClassifier
    v3: LogisticRegression


@pytest.fixture
def engineer(orgs: Org) -> Member:
    return orgs.member(Role.ML_ENGINEER, unit="retail")


@pytest.fixture
def registered(client: TestClient, engineer: Member) -> Iterator[Registered]:
    """Three versions of "credit-risk" (logistic regression, gradient boosting, logistic regression with
    another C), each registered with its input signature."""
    frame, y = credit_data()
    bh.set_client(Client("https://testserver", engineer.token, http=client))
    bh.set_experiment("credit")
    models = [
        LogisticRegression(max_iter=1000).fit(frame, y),
        GradientBoostingClassifier(n_estimators=20, max_depth=2, random_state=0).fit(frame, y),
        LogisticRegression(max_iter=1000, C=0.01).fit(frame, y),
    ]
    try:
        for model in models:
            with bh.start_run():
                bh.log_model(model, "model", registered_model_name="credit-risk", input_example=frame.head(3))
        yield Registered(engineer, frame, y, models[0], models[1], models[2])  # type: ignore[arg-type]
    finally:
        while bh.active_run() is not None:
            with contextlib.suppress(errors.BridgeheadError):
                bh.end_run()
        bh.set_client(None)


def deploy(
    client: TestClient, member: Member, endpoint: str, version: str, **body: object
) -> dict[str, object]:
    response = client.post(
        f"/api/v1/endpoints/{endpoint}/deploy",
        json={"model": "credit-risk", "version": version, **body},
        headers=member.headers,
    )
    assert response.status_code == 200, response.text
    data: dict[str, object] = response.json()
    return data
