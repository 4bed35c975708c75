"""The Python SDK (``import bridgehead as bh``) against the real app in process, on SQLite and PostgreSQL:
real models round-trip through log -> register -> alias -> load with the same predictions; unsafe formats,
tampered files and disallowed skops types are refused; metrics are batched without losing a point."""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import pickle
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

import bridgehead as bh
from bridgehead import errors
from bridgehead.auth.roles import Role
from bridgehead.client import Client
from bridgehead.settings import Settings
from tests.conftest import Member, Org


@pytest.fixture
def data() -> tuple[np.ndarray, np.ndarray]:
    x, y = make_classification(n_samples=300, n_features=6, n_informative=4, random_state=7)
    return x.astype(np.float32), y


@pytest.fixture
def me(client: TestClient, orgs: Org) -> Iterator[Member]:
    """A data scientist whose token the SDK uses, through the in-process app."""
    member = orgs.member(Role.DATA_SCIENTIST, unit="retail")
    bh.set_client(Client("https://testserver", member.token, http=client))
    yield member
    while bh.active_run() is not None:
        with contextlib.suppress(errors.BridgeheadError):
            bh.end_run()
    bh.set_client(None)


def version_dir(settings: Settings, run: bh.ActiveRun, name: str) -> Path:
    return Path(settings.resolved_artifact_root) / run.experiment_id / run.id / "artifacts" / name


def test_the_sdk_offers_what_the_issue_names() -> None:
    """``import bridgehead as bh`` exposes the fluent functions the tracking issue names, each callable, and
    everything declared public exists."""
    named = [
        "set_experiment",
        "start_run",
        "log_param",
        "log_params",
        "log_metric",
        "log_metrics",
        "set_tag",
        "log_artifact",
        "log_dataset",
        "log_model",
        "load_model",
    ]
    assert all(name in bh.__all__ and callable(getattr(bh, name)) for name in named)
    assert all(hasattr(bh, name) for name in bh.__all__)
    assert "step" in inspect.signature(bh.log_metric).parameters
    assert "registered_model_name" in inspect.signature(bh.log_model).parameters


def test_sklearn_round_trip(me: Member, client: TestClient, data: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = data
    model = LogisticRegression(max_iter=500).fit(x, y)
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(x.shape[1])]).assign(label=y)
    exp = bh.set_experiment("churn")
    assert bh.set_experiment("churn").id == exp.id  # found, not created again
    with bh.start_run(run_name="lr") as run:
        assert bh.active_run() is run
        bh.log_params({"C": 1.0, "max_iter": 500})
        bh.set_tag("team", "retail")
        bh.log_metric("accuracy", model.score(x, y))
        dataset = bh.log_dataset(frame, name="train")
        info = bh.log_model(model, "model", registered_model_name="churn-lr", input_example=x[:3])
    assert bh.active_run() is None
    assert info.flavor == "sklearn" and info.registered_model_version == 1
    assert info.model_uri == f"runs:/{run.id}/model"

    stored = bh.get_client().get_run(run.id)
    assert stored.status == "FINISHED" and stored.experiment_id == exp.id
    assert stored.params == {"C": "1.0", "max_iter": "500"} and stored.tags["team"] == "retail"
    assert stored.inputs[0].digest == dataset.digest and len(dataset.digest) == 64
    assert [c["name"] for c in json.loads(stored.inputs[0].schema_)["columns"]][-1] == "label"
    # The digest is of the content: the same frame gives the same digest, a changed one another.
    with bh.start_run():
        assert bh.log_dataset(frame, name="again").digest == dataset.digest
        assert bh.log_dataset(frame.assign(f0=0.0), name="changed").digest != dataset.digest

    bh.get_client().set_alias("churn-lr", "champion", 1)
    version = bh.get_client().get_version_by_alias("churn-lr", "champion")
    assert version.metrics["accuracy"] == pytest.approx(model.score(x, y))
    assert version.signature["inputs"]["shape"] == [-1, 6]
    for uri in ("models:/churn-lr@champion", "models:/churn-lr/1", "models:/churn-lr/latest"):
        loaded = bh.load_model(uri)
        np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
        np.testing.assert_allclose(loaded.predict_proba(x), model.predict_proba(x))
    lineage = bh.get_client().version_lineage("churn-lr", 1)
    assert lineage.run is not None and lineage.run.id == run.id
    assert [d.digest for d in lineage.datasets] == [dataset.digest]
    with pytest.raises(errors.NotFound):
        bh.load_model("models:/churn-lr@challenger")
    with pytest.raises(errors.BadRequest):
        bh.load_model("runs:/x/model")


def test_onnx_round_trip(me: Member, data: tuple[np.ndarray, np.ndarray]) -> None:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    x, y = data
    sk = LogisticRegression(max_iter=500).fit(x, y)
    onnx_model = convert_sklearn(
        sk,
        initial_types=[("input", FloatTensorType([None, x.shape[1]]))],
        options={id(sk): {"zipmap": False}},
    )
    with bh.start_run():
        info = bh.log_model(onnx_model, "onnx", registered_model_name="churn-onnx")
    assert info.flavor == "onnx"
    bh.get_client().set_alias("churn-onnx", "champion", info.registered_model_version or 0)
    loaded = bh.load_model("models:/churn-onnx@champion")
    np.testing.assert_array_equal(loaded.predict(x), sk.predict(x))
    np.testing.assert_allclose(loaded.predict_proba(x), sk.predict_proba(x), atol=1e-5)


def test_lightgbm_and_xgboost_round_trip(me: Member, data: tuple[np.ndarray, np.ndarray]) -> None:
    import lightgbm
    import xgboost

    x, y = data
    models = {
        "lgbm": lightgbm.LGBMClassifier(n_estimators=20, num_leaves=8, verbose=-1).fit(x, y),
        "xgb": xgboost.XGBClassifier(n_estimators=20, max_depth=3, n_jobs=1).fit(x, y),
    }
    with bh.start_run():
        for name, model in models.items():
            info = bh.log_model(model, name, registered_model_name=f"churn-{name}")
            assert info.flavor == {"lgbm": "lightgbm", "xgb": "xgboost"}[name]
            bh.get_client().set_alias(f"churn-{name}", "champion", 1)
    for name, model in models.items():
        loaded = bh.load_model(f"models:/churn-{name}@champion")
        np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
        np.testing.assert_allclose(loaded.predict_proba(x), model.predict_proba(x), rtol=1e-6, atol=1e-6)


def test_pickle_is_stored_but_loaded_only_when_trusted(
    me: Member,
    admin: Member,
    client: TestClient,
    app: FastAPI,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    data: tuple[np.ndarray, np.ndarray],
) -> None:
    x, y = data
    model = LogisticRegression().fit(x, y)
    with pytest.raises(errors.BadRequest, match="flavor"), bh.start_run():
        bh.log_model(object(), "opaque")
    with bh.start_run():
        info = bh.log_model(model, "pickled", registered_model_name="legacy", flavor="pickle")
    assert info.flavor == "pickle"

    monkeypatch.delenv("BRIDGEHEAD_TRUSTED_FLAVORS", raising=False)
    with pytest.raises(errors.PermissionDenied) as refused:
        bh.load_model("models:/legacy/1")
    assert refused.value.details["flavor"] == "pickle"
    # Trusted here but not by the server: the server refuses too.
    monkeypatch.setenv("BRIDGEHEAD_TRUSTED_FLAVORS", '["pickle"]')
    with pytest.raises(errors.PermissionDenied, match="installation"):
        bh.load_model("models:/legacy/1")
    assert _trusted_loads(client, admin) == []

    app.state.settings = settings.model_copy(update={"trusted_flavors": ["pickle"]})
    loaded = bh.load_model("models:/legacy/1")
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    events = _trusted_loads(client, admin)
    assert len(events) == 1 and events[0]["actor_email"] == me.email
    assert events[0]["changes"]["model"] == "legacy" and events[0]["changes"]["flavor"] == "pickle"


def _trusted_loads(client: TestClient, admin: Member) -> list[dict[str, Any]]:
    response = client.get(
        "/api/v1/audit-events", headers=admin.headers, params={"action": "model_version.trusted_load"}
    )
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def test_tampered_model_files_are_refused(
    me: Member, settings: Settings, data: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = data
    with bh.start_run() as run:
        bh.log_model(LogisticRegression().fit(x, y), "model", registered_model_name="tamper")
    assert bh.load_model("models:/tamper/1") is not None
    stored = version_dir(settings, run, "model") / "model.skops"
    # Same size, one byte changed: still "a model", but not the one registered.
    original = stored.read_bytes()
    content = bytearray(original)
    content[len(content) // 2] ^= 0xFF
    stored.write_bytes(bytes(content))
    with pytest.raises(errors.Conflict, match="SHA-256"):
        bh.load_model("models:/tamper/1")
    # A file slipped in beside the model changes the digest as well.
    stored.write_bytes(original)
    (stored.parent / "extra.pkl").write_bytes(pickle.dumps("payload"))
    with pytest.raises(errors.Conflict):
        bh.load_model("models:/tamper/1")
    (stored.parent / "extra.pkl").unlink()
    assert bh.load_model("models:/tamper/1") is not None


def test_skops_types_outside_the_allow_list_are_refused(
    me: Member, data: tuple[np.ndarray, np.ndarray]
) -> None:
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    x, y = data
    # A model that would call os.system (or eval) on the data it predicts on.
    for name, func in (("shell", os.system), ("evaluator", eval)):
        model = make_pipeline(FunctionTransformer(func=func), LogisticRegression())
        with bh.start_run():
            bh.log_model(model, "model", registered_model_name=name)
        with pytest.raises(errors.PermissionDenied, match="allow-list") as refused:
            bh.load_model(f"models:/{name}/1")
        assert refused.value.details["types"] in (["posix.system"], ["nt.system"], ["builtins.eval"])
    # numpy ufuncs are functions too, and allowed.
    ok = make_pipeline(FunctionTransformer(func=np.log1p), LogisticRegression()).fit(np.abs(x), y)
    with bh.start_run():
        bh.log_model(ok, "model", registered_model_name="log1p")
    np.testing.assert_array_equal(bh.load_model("models:/log1p/1").predict(np.abs(x)), ok.predict(np.abs(x)))


def test_metrics_are_batched_in_the_background_and_all_stored(me: Member) -> None:
    points = 2500
    with bh.start_run() as run:
        for step in range(points):
            bh.log_metric("loss", 1.0 / (step + 1), step=step)
        bh.log_metrics({"nan": float("nan"), "inf": float("-inf")})
        # The background thread sends batches while the run is still going.
        deadline = time.monotonic() + 10
        while bh.get_client().metric_history(run.id, "loss", limit=1).total < 2000:
            assert time.monotonic() < deadline, "metrics were not flushed in the background"
            time.sleep(0.05)
    history = bh.get_client().metric_history(run.id, "loss", limit=points + 10)
    assert history.total == points
    assert [p.step for p in history.items] == list(range(points))
    assert [p.value for p in history.items] == [1.0 / (s + 1) for s in range(points)]
    latest = {m.key: m.value for m in bh.get_client().get_run(run.id).metrics}
    assert np.isnan(latest["nan"]) and latest["inf"] == float("-inf")
    assert latest["loss"] == 1.0 / points


def test_flush_errors_surface_on_the_next_call_and_at_end_run(me: Member) -> None:
    run = bh.start_run()
    for bad in ("", "a/../b", "/abs"):
        with pytest.raises(errors.ValidationFailed):
            bh.log_metric(bad, 1.0)  # refused before it is queued
    client = bh.get_client()
    # The run is deleted behind the SDK's back: the background flush fails, the next call says so.
    client.delete_run(run.id)
    bh.log_metric("lost", 1.0)
    deadline = time.monotonic() + 10
    with pytest.raises(errors.BadRequest) as surfaced:
        while time.monotonic() < deadline:
            bh.log_metric("probe", 0.0)
            time.sleep(0.05)
    assert any("were not stored" in note for note in surfaced.value.__notes__)
    client.restore_run(run.id)
    bh.log_metric("fine", 1.0)  # each failure is reported once; logging goes on
    bh.end_run()
    stored = client.get_run(run.id)
    assert stored.status == "FINISHED" and "fine" in [m.key for m in stored.metrics]
    assert "lost" not in [m.key for m in stored.metrics]

    # At end_run the last flush's failure is raised, after the run is no longer active.
    second = bh.start_run()
    bh.log_metric("queued", 1.0)
    client.delete_run(second.id)
    with pytest.raises(errors.BadRequest) as at_end:
        bh.end_run()
    assert any("were not stored" in note for note in at_end.value.__notes__)
    assert bh.active_run() is None


def test_runs_fail_on_exceptions_and_nest(me: Member) -> None:
    with pytest.raises(RuntimeError), bh.start_run() as failed:
        bh.log_metric("m", 1.0)
        raise RuntimeError("training crashed")
    stored = bh.get_client().get_run(failed.id)
    assert stored.status == "FAILED" and stored.end_time is not None
    assert [m.key for m in stored.metrics] == ["m"]

    with bh.start_run(run_name="parent") as parent:
        with pytest.raises(errors.BadRequest, match="already active"):
            bh.start_run()
        with bh.start_run(run_name="child", nested=True) as child:
            assert bh.active_run() is child
        assert bh.active_run() is parent
    assert bh.get_client().get_run(child.id).parent_run_id == parent.id
    bh.end_run()  # nothing active: no-op
    with pytest.raises(errors.BadRequest, match="No active run"):
        bh.log_param("a", 1)


def test_artifacts_and_file_datasets(me: Member, tmp_path: Path) -> None:
    report = tmp_path / "report.txt"
    report.write_text("hello")
    plots = tmp_path / "plots"
    (plots / "sub").mkdir(parents=True)
    (plots / "a.png").write_bytes(b"\x89PNG")
    (plots / "sub" / "b.png").write_bytes(b"\x89PNG2")
    table = tmp_path / "train.csv"
    table.write_text("age,income\n31,4000\n45,5200\n")
    with bh.start_run() as run:
        bh.log_artifact(report)
        bh.log_artifact(report, "docs")
        bh.log_artifact(plots)
        info = bh.log_dataset(table)
    client = bh.get_client()
    assert [f.path for f in client.list_artifacts(run.id).files] == ["docs", "plots", "report.txt"]
    assert [f.path for f in client.list_artifacts(run.id, "plots").files] == ["plots/a.png", "plots/sub"]
    target = client.download_artifact(run.id, "plots/sub/b.png", tmp_path / "down" / "b.png")
    assert target.read_bytes() == b"\x89PNG2"
    assert info.name == "train.csv" and info.source == table.resolve().as_uri()
    assert [c["name"] for c in info.schema["columns"]] == ["age", "income"]
    import hashlib

    assert info.digest == hashlib.sha256(table.read_bytes()).hexdigest()
    # The run sits in the shared default experiment; the logged file is registered in the author's unit.
    registered = client.find_dataset("train.csv")
    assert registered is not None and registered.business_unit_id == me.business_unit_id


def test_sdk_configuration_and_errors(client: TestClient, orgs: Org, monkeypatch: pytest.MonkeyPatch) -> None:
    bh.set_client(None)
    monkeypatch.delenv("BRIDGEHEAD_URL", raising=False)
    monkeypatch.delenv("BRIDGEHEAD_TOKEN", raising=False)
    with pytest.raises(errors.BadRequest, match="BRIDGEHEAD_URL"):
        bh.set_experiment("x")
    viewer = orgs.member(Role.BUSINESS_USER, unit="retail")
    bh.set_client(Client("https://testserver", viewer.token, http=client))
    try:
        with pytest.raises(errors.PermissionDenied) as denied:
            bh.set_experiment("not-mine")
        assert denied.value.details["action"] == "tracking.write"
        bh.set_client(Client("https://testserver", "bh_wrong", http=client))
        with pytest.raises(errors.Unauthenticated):
            bh.get_client().list_experiments()
    finally:
        bh.set_client(None)
    monkeypatch.setenv("BRIDGEHEAD_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("BRIDGEHEAD_TOKEN", "bh_x")
    try:
        assert bh.get_client().url == "http://127.0.0.1:9"
        with pytest.raises(errors.StoreUnavailable, match="Could not reach"):
            bh.get_client().list_experiments()
    finally:
        bh.get_client().close()
        bh.set_client(None)
