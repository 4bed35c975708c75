"""Builds experiments, runs (with real metric histories), artifacts and registered model versions straight
through the services, for the console tests (in-process and in the browser)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from bridgehead.auth.service import Principal, authenticate_token
from bridgehead.errors import NotFound
from bridgehead.registry import service as registry
from bridgehead.store import Database
from bridgehead.store.artifacts import ArtifactStore
from bridgehead.tracking import service as tracking
from bridgehead.tracking.service import MetricIn

MANIFEST = {"flavor": "sklearn", "files": ["model.skops"], "meta": {"file": "model.skops"}, "signature": {}}
T0 = 1_735_689_600_000  # 2025-01-01 00:00 UTC


def principal_for(db: Database, token: str) -> Principal:
    with db.session() as session:
        return authenticate_token(session, token)


def curve(final: float, steps: int, *, rising: bool = True, seed: float = 0.0) -> list[float]:
    """A smooth learning curve ending exactly at ``final``, with a little deterministic wobble."""
    values = []
    for step in range(steps):
        progress = 1 - math.exp(-4 * (step + 1) / steps)
        end = 1 - math.exp(-4)
        base = (
            0.5 + (final - 0.5) * progress / end if rising else final + (1.2 - final) * (1 - progress / end)
        )
        wobble = 0.006 * math.sin(step * 1.7 + seed) if step < steps - 1 else 0.0
        values.append(round(base + wobble, 5))
    return values


@dataclass
class RunSpec:
    name: str
    params: dict[str, str]
    histories: dict[str, list[float]]
    status: str = "FINISHED"
    tags: dict[str, str] | None = None
    datasets: list[dict[str, Any]] | None = None
    parent: str | None = None
    minutes: int = 7


def log_run(db: Database, principal: Principal, experiment_id: str, spec: RunSpec, *, start_ms: int) -> str:
    tags = dict(spec.tags or {})
    if spec.parent:
        tags["mlflow.parentRunId"] = spec.parent
    with db.session(write=True) as session:
        run = tracking.create_run(
            session, principal, experiment_id, name=spec.name, start_ms=start_ms, tags=tags
        )
        metrics = [
            MetricIn(key=key, value=value, timestamp_ms=start_ms + 1000 * (step + 1), step=step)
            for key, values in spec.histories.items()
            for step, value in enumerate(values)
        ]
        tracking.log_batch(session, principal, run.id, metrics=metrics, params=spec.params)
        if spec.datasets:
            tracking.log_inputs(session, principal, run.id, spec.datasets)
        tracking.update_run(
            session, principal, run.id, status=spec.status, end_ms=start_ms + spec.minutes * 60_000
        )
        return run.id


def run_dir(db: Database, principal: Principal, run_id: str) -> str:
    with db.session() as session:
        run = tracking.get_run(session, principal, run_id)
        return run.artifact_uri.removeprefix("mlflow-artifacts:/")


def save_sklearn_model(
    store: ArtifactStore, directory: str, *, signature: dict[str, Any] | None = None, seed: int = 0
) -> bytes:
    """A real scikit-learn model saved with skops, with Bridgehead's manifest beside it; returns its bytes."""
    import skops.io
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression

    x, y = make_classification(n_samples=80, n_features=4, random_state=seed)
    data: bytes = skops.io.dumps(LogisticRegression().fit(x, y))
    store.put_bytes(f"{directory}/model.skops", data)
    manifest = {**MANIFEST, "signature": signature or {}}
    store.put_bytes(f"{directory}/bridgehead-model.json", json.dumps(manifest).encode())
    return data


def register(
    db: Database,
    principal: Principal,
    store: ArtifactStore,
    model: str,
    run_id: str,
    *,
    description: str = "",
    visibility: str = "private",
) -> int:
    with db.session(write=True) as session:
        try:
            registry.get_registered_model(session, principal, model)
        except NotFound:  # the first version creates the model
            registry.create_registered_model(
                session, principal, model, description=description, visibility=visibility
            )
        version = registry.create_model_version(
            session, principal, store, model, f"runs:/{run_id}/model", run_id=run_id
        )
        return version.version
