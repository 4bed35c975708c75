"""A monitoring report over a real prediction log: drift found where it was injected, quality and fairness on
the labelled rows equal to scikit-learn's and Fairlearn's, memory-free streaming of the window."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from fairlearn.metrics import demographic_parity_difference
from sklearn import metrics as skm
from sklearn.linear_model import LogisticRegression

from bridgehead.data.profile import profile_batches
from bridgehead.monitoring.report import ReportInputs, build_report
from bridgehead.monitoring.windows import references_from_profile
from bridgehead.serving.predlog import PredictionBatch, PredictionLog, read_log

FEATURES = ["income", "debt", "age", "region"]
T0 = 1_780_000_000_000


def applicants(n: int, seed: int, shift: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    income = rng.normal(4000, 1000, n) * (1.35 if shift else 1.0)
    debt = rng.normal(1500, 500, n) + (600 if shift else 0)
    return pd.DataFrame(
        {
            "income": income,
            "debt": debt,
            "age": rng.integers(18, 80, n).astype(float),
            "region": rng.choice(["north", "south", "east", "west"], n, p=[0.4, 0.3, 0.2, 0.1]),
        }
    )


def truth(frame: pd.DataFrame, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return ((frame["debt"] / frame["income"] + rng.normal(0, 0.08, len(frame))) > 0.4).astype(int).to_numpy()


@pytest.fixture(scope="module")
def model() -> LogisticRegression:
    ref = applicants(5000, 1)
    return LogisticRegression(max_iter=1000).fit(ref[["income", "debt", "age"]].to_numpy(), truth(ref, 2))


def log_window(root: Path, model: LogisticRegression, frame: pd.DataFrame) -> list[str]:
    log = PredictionLog(root)
    x = frame[["income", "debt", "age"]].to_numpy()
    predictions = model.predict(x).tolist()
    probabilities = model.predict_proba(x).tolist()
    ids = [f"q{i}" for i in range(len(frame))]
    for start in range(0, len(frame), 500):  # requests of 500 rows
        part = slice(start, start + 500)
        log.record(
            [
                PredictionBatch(
                    ids=ids[part],
                    endpoint="credit",
                    model_names=["credit-risk"] * len(ids[part]),
                    versions=[1] * len(ids[part]),
                    role="primary",
                    ts_ms=T0,
                    latency_ms=1.0,
                    inputs=frame.iloc[part].reset_index(drop=True),
                    predictions=predictions[part],
                    probabilities=probabilities[part],
                )
            ]
        )
    log.close()
    return ids


def reference_profile() -> dict[str, object]:
    ref = applicants(5000, 1)
    ref["defaulted"] = truth(ref, 2)
    table = pa.Table.from_pandas(ref, preserve_index=False)
    return references_from_profile(profile_batches(table.schema, table.to_batches()))  # type: ignore[return-value]


def test_the_report_finds_the_injected_drift_and_measures_quality_and_fairness(
    tmp_path: Path, model: LogisticRegression
) -> None:
    current = applicants(4000, 7, shift=True)
    y = truth(current, 8)
    ids = log_window(tmp_path, model, current)
    refs = reference_profile()
    labelled = {ids[i]: int(y[i]) for i in range(0, 4000, 2)}  # half the labels came back
    inputs = ReportInputs(
        references=refs,  # type: ignore[arg-type]
        features=FEATURES,
        target=refs["defaulted"],  # type: ignore[arg-type]
        labels=labelled,
        overrides=40,
        protected=["age", "region"],
        baseline={"accuracy": 0.9, "roc_auc": 0.95},
    )
    report = build_report(inputs, read_log(tmp_path, "credit", batch_rows=1000))

    assert report["rows"] == 4000 and report["versions"] == {"1": 4000}
    drifted = {c["column"] for c in report["drift"]["columns"] if c["drifted"]}
    assert drifted == {"income", "debt"}
    assert report["drift"]["n_columns"] == 4 and report["drift"]["share"] == 0.5
    assert report["drift"]["dataset_drift"] is True  # 2 of 4 >= Evidently's 0.5
    tests = {c["column"]: c["test"] for c in report["drift"]["columns"]}
    assert tests["income"] == "wasserstein" and tests["region"] == "jensenshannon"
    income = next(c for c in report["drift"]["columns"] if c["column"] == "income")
    assert len(income["distribution"]["labels"]) == len(income["distribution"]["current"])
    assert sum(income["distribution"]["current"]) == pytest.approx(1.0)

    x = current[["income", "debt", "age"]].to_numpy()
    pred = model.predict(x)
    half = np.arange(0, 4000, 2)
    perf = report["performance"]
    assert perf["labelled_rows"] == 2000
    assert perf["current"]["accuracy"] == pytest.approx(skm.accuracy_score(y[half], pred[half]), abs=1e-12)
    assert perf["current"]["f1"] == pytest.approx(skm.f1_score(y[half], pred[half]), abs=1e-12)
    auc = skm.roc_auc_score(y[half], model.predict_proba(x)[half, 1])
    assert perf["current"]["roc_auc"] == pytest.approx(auc, abs=perf["current"]["roc_auc_error_bound"] + 1e-9)
    assert perf["decline"]["accuracy"] == pytest.approx(0.9 - perf["current"]["accuracy"])

    # Selection rates use every row; Fairlearn on all 4,000 rows by region.
    dp = demographic_parity_difference(y, pred, sensitive_features=current["region"].to_numpy())
    assert report["fairness"]["region"]["demographic_parity_difference"] == pytest.approx(dp, abs=1e-12)
    assert len(report["fairness"]["age"]["groups"]) == 4  # a numeric attribute in reference quartile bands

    metrics = report["metrics"]
    assert metrics["drifted_columns"] == 2 and metrics["override_rate"] == pytest.approx(0.01)
    assert metrics["accuracy_decline"] == perf["decline"]["accuracy"]
    assert metrics["confidence_mean"] == pytest.approx(model.predict_proba(x).max(axis=1).mean(), rel=1e-9)
    assert (
        report["prediction"]["drift"] is not None and report["prediction"]["drift"]["column"] == "defaulted"
    )


def test_a_stable_window_shows_no_drift(tmp_path: Path, model: LogisticRegression) -> None:
    log_window(tmp_path, model, applicants(3000, 11))
    refs = reference_profile()
    report = build_report(ReportInputs(references=refs, features=FEATURES), read_log(tmp_path, "credit"))  # type: ignore[arg-type]
    assert report["drift"]["n_drifted"] == 0 and report["drift"]["dataset_drift"] is False
    assert (
        report["performance"]["labelled_rows"] == 0 and report["performance"]["current"]["accuracy"] is None
    )


def test_an_empty_window_and_a_column_missing_from_the_reference_give_defined_results(tmp_path: Path) -> None:
    refs = reference_profile()
    empty = build_report(ReportInputs(references=refs, features=FEATURES), iter(()))  # type: ignore[arg-type]
    assert empty["rows"] == 0 and empty["drift"]["columns"] == [] and empty["drift"]["dataset_drift"] is False

    frame = applicants(600, 3).assign(channel="web")  # a column the reference never had
    log = PredictionLog(tmp_path)
    log.record(
        [
            PredictionBatch(
                ids=[f"r{i}" for i in range(600)],
                endpoint="credit",
                model_names=["m"] * 600,
                versions=[2] * 600,
                role="primary",
                ts_ms=T0,
                latency_ms=1.0,
                inputs=frame,
                predictions=[0] * 600,
            )
        ]
    )
    log.close()
    report = build_report(
        ReportInputs(references=refs, features=[*FEATURES, "channel"]),  # type: ignore[arg-type]
        read_log(tmp_path, "credit"),
    )
    assert report["drift"]["schema_change"]["added"] == ["channel"]
    assert {c["column"] for c in report["drift"]["columns"]} == set(FEATURES)


def test_labels_for_unknown_request_ids_are_counted_not_matched(
    tmp_path: Path, model: LogisticRegression
) -> None:
    ids = log_window(tmp_path, model, applicants(1000, 5))
    labels: dict[str, object] = {ids[0]: 1, ids[1]: 0, "never-predicted-1": 1, "never-predicted-2": 0}
    refs = reference_profile()
    report = build_report(
        ReportInputs(references=refs, features=FEATURES, labels=labels),  # type: ignore[arg-type]
        read_log(tmp_path, "credit"),
    )
    assert report["performance"]["labelled_rows"] == 2
    assert report["performance"]["labels_received"] == 4 and report["performance"]["labels_unmatched"] == 2
    assert report["metrics"]["labels_unmatched"] == 2


def test_a_stored_report_has_no_nan_and_keeps_text_that_looks_like_one() -> None:
    from bridgehead.monitoring.service import _json_safe

    stored = _json_safe(
        {"psi": float("inf"), "low": -float("inf"), "x": [float("nan"), 1.5], "city": "NaNaimo"}
    )
    assert stored == {"psi": None, "low": None, "x": [None, 1.5], "city": "NaNaimo"}
