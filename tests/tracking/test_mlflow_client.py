"""The real ``mlflow`` client (3.17.2), unchanged, against a live Bridgehead server on SQLite and PostgreSQL:
what it logs must be what Bridgehead's own services read."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import func, select

from bridgehead.audit.models import AuditEvent
from bridgehead.data import service as data_service
from bridgehead.registry import service as registry
from bridgehead.settings import Settings
from bridgehead.tracking import logged_models
from bridgehead.tracking import service as tracking
from bridgehead.tracking.models import Metric as MetricRow
from tests.tracking.mlflow_live import Live, live_server
from tests.tracking.seed import principal_for

pytestmark = pytest.mark.slow


@pytest.fixture
def live(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Live]:
    with live_server(settings, tmp_path, monkeypatch) as server:
        yield server


def test_mlflow_client_end_to_end(live: Live, tmp_path: Path) -> None:
    import mlflow
    import mlflow.data
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag
    from sklearn.linear_model import LogisticRegression

    client = MlflowClient()
    rng = np.random.default_rng(7)
    x = rng.normal(size=(120, 4))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int)
    model = LogisticRegression(max_iter=200).fit(x, y)
    accuracy = float(model.score(x, y))

    experiment = mlflow.set_experiment("credit-risk")  # get-by-name answers RESOURCE_DOES_NOT_EXIST: created
    assert mlflow.set_experiment("credit-risk").experiment_id == experiment.experiment_id
    plots = tmp_path / "plots"
    plots.mkdir()
    (plots / "roc.txt").write_text("roc")
    (plots / "pr.txt").write_text("pr")
    notes = tmp_path / "notes.txt"
    notes.write_text("trained on the 2025 book")

    with mlflow.start_run(run_name="baseline") as run:
        run_id = run.info.run_id
        mlflow.log_param("C", 1.0)
        mlflow.log_params({"penalty": "l2", "solver": "lbfgs"})
        features = mlflow.data.from_pandas(
            pd.DataFrame(x, columns=["income", "debt", "age", "email_len"]), name="credit-2025"
        )
        mlflow.log_input(features, context="training")
        for step, loss in enumerate([0.9, 0.6, 0.4]):
            mlflow.log_metric("loss", loss, step=step)
        mlflow.log_metrics({"accuracy": accuracy, "f1": 0.8})
        mlflow.log_metric("unstable", float("nan"))
        mlflow.log_metric("ceiling", float("inf"))
        mlflow.set_tag("team", "risk")
        now = int(time.time() * 1000)
        client.log_batch(
            run_id,
            metrics=[Metric("batch_loss", 1 / (i + 1), now + i, i) for i in range(50)],
            params=[Param("batch_size", "32")],
            tags=[RunTag("stage", "pilot")],
        )
        mlflow.log_artifact(str(notes))
        mlflow.log_artifacts(str(plots), artifact_path="plots")
        mlflow.log_dict({"threshold": 0.5}, "config/threshold.json")
        with mlflow.start_run(run_name="fold-1", nested=True) as child:
            mlflow.log_metric("fold_accuracy", 0.7)
        info = mlflow.sklearn.log_model(model, name="model", registered_model_name="credit-clf")
    assert info.registered_model_version == "1"

    with mlflow.start_run(run_name="retrain") as second:
        mlflow.log_metric("accuracy", accuracy)
        # The model exists: registered-models/create answers RESOURCE_ALREADY_EXISTS, the client goes on.
        second_info = mlflow.sklearn.log_model(model, name="model", registered_model_name="credit-clf")
    assert second_info.registered_model_version == "2"

    # Reading back through the client.
    got = client.get_run(run_id)
    assert got.info.status == "FINISHED" and got.info.run_name == "baseline"
    assert got.data.params == {"C": "1.0", "penalty": "l2", "solver": "lbfgs", "batch_size": "32"}
    assert got.data.metrics["loss"] == 0.4 and got.data.metrics["accuracy"] == accuracy
    assert math.isnan(got.data.metrics["unstable"]) and got.data.metrics["ceiling"] == math.inf
    assert got.data.tags["team"] == "risk" and got.data.tags["stage"] == "pilot"
    assert [o.model_id for o in got.outputs.model_outputs] == [info.model_id]
    child_run = client.get_run(child.info.run_id)
    assert child_run.data.tags["mlflow.parentRunId"] == run_id
    history = client.get_metric_history(run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(0, 0.9), (1, 0.6), (2, 0.4)]
    assert len(client.get_metric_history(run_id, "batch_loss")) == 50

    listed = sorted(f.path for f in client.list_artifacts(run_id))
    assert listed == ["config", "notes.txt", "plots"]
    assert sorted(f.path for f in client.list_artifacts(run_id, "plots")) == ["plots/pr.txt", "plots/roc.txt"]
    downloaded = Path(mlflow.artifacts.download_artifacts(run_id=run_id, dst_path=str(tmp_path / "dl")))
    assert (downloaded / "notes.txt").read_text() == "trained on the 2025 book"
    assert (downloaded / "plots" / "roc.txt").read_text() == "roc"
    assert mlflow.artifacts.load_dict(f"runs:/{run_id}/config/threshold.json") == {"threshold": 0.5}

    found = mlflow.search_experiments(filter_string="name = 'credit-risk'")
    assert [e.experiment_id for e in found] == [experiment.experiment_id]
    frame = mlflow.search_runs(
        experiment_ids=[experiment.experiment_id],
        filter_string="metrics.accuracy > 0.5",
        order_by=["metrics.accuracy DESC", "attributes.start_time ASC"],
    )
    assert list(frame["run_id"]) == [run_id, second.info.run_id]
    paged, token = [], None
    while True:
        page = client.search_runs([experiment.experiment_id], max_results=1, page_token=token)
        paged += [r.info.run_id for r in page]
        token = page.token
        if not token:
            break
    assert sorted(paged) == sorted([run_id, second.info.run_id, child.info.run_id])

    models = client.search_registered_models(filter_string="name LIKE '%credit%'")
    assert [m.name for m in models] == ["credit-clf"]
    assert [v.version for v in models[0].latest_versions] == ["2"]
    client.set_registered_model_alias("credit-clf", "champion", "1")
    champion = client.get_model_version_by_alias("credit-clf", "champion")
    assert champion.version == "1" and champion.run_id == run_id and champion.aliases == ["champion"]
    (tmp_path / "model").mkdir()
    loaded = mlflow.pyfunc.load_model("models:/credit-clf@champion", dst_path=str(tmp_path / "model"))
    assert np.array_equal(loaded.predict(x), model.predict(x))

    # The same rows, read natively.
    db = live.db
    principal = principal_for(db, live.scientist.token)
    with db.session() as session:
        native_run = tracking.get_run(session, principal, run_id)
        assert native_run.experiment_id == experiment.experiment_id
        assert native_run.user_name == live.scientist.email
        assert native_run.business_unit_id == live.scientist.business_unit_id
        assert tracking.get_run(session, principal, child.info.run_id).parent_run_id == run_id
        data = tracking.run_data(session, [run_id])[run_id]
        assert data.params["batch_size"] == "32"
        assert len(tracking.metric_history(session, principal, run_id, "batch_loss")) == 50
        version = registry.get_version(session, principal, "credit-clf", 1)
        assert version.flavor == "sklearn"
        assert len(version.sha256) == 64
        assert version.run_id == run_id
        assert version.logged_model_id == info.model_id
        assert version.metrics["accuracy"] == accuracy and version.metrics["loss"] == 0.4
        assert (version.metrics["unstable"], version.metrics["ceiling"]) == ("NaN", "Infinity")  # JSON-safe
        assert registry.get_version(session, principal, "credit-clf", 2).run_id == second.info.run_id
        assert registry.get_version_by_alias(session, principal, "credit-clf", "champion").version == 1
        logged = logged_models.get_logged_model(session, principal, info.model_id)
        assert logged.status == "LOGGED_MODEL_READY" and logged.source_run_id == run_id
        # The input logged through mlflow is a dataset version natively, with mlflow's digest and row count.
        dataset = data_service.dataset_by_name(session, principal, "credit-2025")
        [data_version] = data_service.list_versions(session, dataset)
        assert data_version.digest == features.digest and data_version.row_count == 120
        assert data_version.origin == "tracking" and data_version.column_tags["age"]["tags"] == ["protected"]
        actions = set(session.scalars(select(AuditEvent.action)))
    assert {"experiment.create", "model.create", "model_version.create", "model.set_alias"} <= actions


def test_concurrent_writers_lose_nothing(live: Live) -> None:
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    client = MlflowClient()
    experiment_id = client.create_experiment("concurrent")
    run_id = client.create_run(experiment_id).info.run_id
    now = int(time.time() * 1000)

    def writer(n: int) -> None:
        for chunk in range(2):
            steps = range(chunk * 250, (chunk + 1) * 250)
            metrics = [Metric(f"w{n}", float(s), now + s, s) for s in steps]
            metrics += [Metric("shared", float(n * 1000 + s), now + s, n * 1000 + s) for s in steps]
            client.log_batch(run_id, metrics=metrics)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(writer, range(8)))
    with live.db.session() as session:
        rows = session.scalar(select(func.count()).select_from(MetricRow).where(MetricRow.run_id == run_id))
    assert rows == 8 * 2 * 500
    latest = client.get_run(run_id).data.metrics
    assert latest["shared"] == 7 * 1000 + 499  # the highest step wins, whichever writer came last
    assert all(latest[f"w{n}"] == 499 for n in range(8))

    # Racing creations of one name: one wins, the rest get what the client handles (RESOURCE_ALREADY_EXISTS).
    for path, body in (
        ("experiments/create", {"name": "race"}),
        ("registered-models/create", {"name": "race"}),
    ):
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(live.post, [live.scientist] * 8, [path] * 8, [body] * 8))
        statuses = sorted(a.status_code for a in answers)
        assert statuses == [200] + [400] * 7, [a.text for a in answers]
        assert {a.json()["error_code"] for a in answers if a.status_code == 400} == {
            "RESOURCE_ALREADY_EXISTS"
        }
