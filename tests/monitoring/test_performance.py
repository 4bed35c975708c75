"""Production quality and fairness accumulators against scikit-learn and Fairlearn on the same data."""

from __future__ import annotations

import numpy as np
import pytest
from fairlearn.metrics import (
    demographic_parity_difference,
    demographic_parity_ratio,
    equalized_odds_difference,
)
from sklearn import metrics as skm

from bridgehead.monitoring.performance import Classification, Fairness, Regression


def binary_data(n: int = 20_000, seed: int = 11) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    score = np.clip(0.35 * y + rng.normal(0.35, 0.2, n), 0, 1)
    pred = (score >= 0.5).astype(int)
    group = rng.choice(["F", "M", "X"], size=n, p=[0.45, 0.45, 0.1])
    # A gap between groups: X is selected less often.
    pred = np.where((group == "X") & (rng.random(n) < 0.3), 0, pred)
    return y, pred, score, group


def chunks(n: int, k: int) -> list[slice]:
    edges = np.linspace(0, n, k + 1).astype(int)
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def test_binary_classification_matches_scikit_learn_chunked_and_merged() -> None:
    y, pred, score, _ = binary_data()
    parts = []
    for part in chunks(len(y), 7):
        acc = Classification(positive=1)
        acc.update(y[part], pred[part], score[part])
        parts.append(acc)
    merged = parts[0]
    for other in parts[1:]:
        merged.merge(other)
    got = merged.summary()
    assert got["rows"] == len(y)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, pred), abs=1e-12)
    assert got["precision"] == pytest.approx(skm.precision_score(y, pred), abs=1e-12)
    assert got["recall"] == pytest.approx(skm.recall_score(y, pred), abs=1e-12)
    assert got["f1"] == pytest.approx(skm.f1_score(y, pred), abs=1e-12)
    exact = skm.roc_auc_score(y, score)
    bound = got["roc_auc_error_bound"]
    assert bound is not None and bound < 1e-3
    assert got["roc_auc"] == pytest.approx(exact, abs=bound + 1e-12)


def test_multiclass_is_macro_averaged_like_scikit_learn() -> None:
    rng = np.random.default_rng(5)
    y = rng.choice(["low", "mid", "high"], 5000)
    pred = np.where(rng.random(5000) < 0.7, y, rng.choice(["low", "mid", "high"], 5000))
    acc = Classification(positive="high")
    acc.update(y, pred)
    got = acc.summary()
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, pred), abs=1e-12)
    assert got["precision"] == pytest.approx(skm.precision_score(y, pred, average="macro"), abs=1e-12)
    assert got["recall"] == pytest.approx(skm.recall_score(y, pred, average="macro"), abs=1e-12)
    assert got["f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"), abs=1e-12)
    assert got["roc_auc"] is None  # no scores given


def test_empty_and_one_class_windows_give_defined_results() -> None:
    assert Classification().summary()["accuracy"] is None
    one = Classification(positive=1)
    one.update([1, 1, 1], [1, 0, 1], [0.9, 0.2, 0.8])
    got = one.summary()
    assert got["accuracy"] == pytest.approx(2 / 3) and got["roc_auc"] is None  # AUC needs both classes
    assert Regression().summary()["mae"] is None
    with pytest.raises(ValueError, match="one value per row"):
        one.update([1, 0], [1])


def test_regression_matches_scikit_learn_chunked_and_merged() -> None:
    rng = np.random.default_rng(2)
    y = rng.normal(100, 15, 30_000)
    p = y + rng.normal(2, 5, 30_000)
    merged = Regression()
    for part in chunks(len(y), 5):
        acc = Regression()
        acc.update(y[part], p[part])
        merged.merge(acc)
    got = merged.summary()
    assert got["mae"] == pytest.approx(skm.mean_absolute_error(y, p), rel=1e-10)
    assert got["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(y, p)), rel=1e-10)
    assert got["r2"] == pytest.approx(skm.r2_score(y, p), rel=1e-9)


def test_fairness_gaps_match_fairlearn() -> None:
    y, pred, _, group = binary_data()
    merged = Fairness(positive=1)
    for part in chunks(len(y), 3):
        acc = Fairness(positive=1)
        acc.update(group[part], pred[part], y[part])
        merged.merge(acc)
    got = merged.summary()
    dp = demographic_parity_difference(y, pred, sensitive_features=group)
    eo = equalized_odds_difference(y, pred, sensitive_features=group)
    di = demographic_parity_ratio(y, pred, sensitive_features=group)
    assert got["demographic_parity_difference"] == pytest.approx(dp, abs=1e-12)
    assert got["equalized_odds_difference"] == pytest.approx(eo, abs=1e-12)
    assert got["disparate_impact_ratio"] == pytest.approx(di, abs=1e-12)
    assert got["disparate_impact_ratio"] < 0.8  # the injected gap is visible (the four-fifths rule)
    for name in ("F", "M", "X"):
        mask = group == name
        g = got["groups"][name]
        assert g["rows"] == int(mask.sum())
        assert g["selection_rate"] == pytest.approx(pred[mask].mean(), abs=1e-12)
        assert g["tpr"] == pytest.approx(skm.recall_score(y[mask], pred[mask]), abs=1e-12)


def test_fairness_uses_every_row_for_selection_and_labelled_rows_for_error_rates() -> None:
    acc = Fairness(positive=1)
    acc.update(["a", "a", "b", "b", None], [1, 0, 1, 1, 1], [1, None, 0, float("nan"), None])
    got = acc.summary()
    assert got["groups"]["a"] == {"rows": 2, "selection_rate": 0.5, "tpr": 1.0, "fpr": None}
    assert got["groups"]["b"] == {"rows": 2, "selection_rate": 1.0, "tpr": None, "fpr": 1.0}
    assert got["groups"]["(missing)"]["rows"] == 1
    assert got["demographic_parity_difference"] == pytest.approx(0.5)
    single = Fairness()
    single.update(["a"], [1])
    assert single.summary()["demographic_parity_difference"] is None  # one group: no gap to speak of
