"""Model quality and fairness in production, from predictions joined to the labels that came back (pure: numpy).

Everything here is an *accumulator* fed chunk by chunk and mergeable (`merge`), so a window of any size costs
the same memory: confusion counts per group, and for ROC AUC a histogram of scores per class on a fixed grid.

- Classification: accuracy, precision, recall and F1 of the positive class (binary) or macro-averaged
  (several classes), and ROC AUC (binary, from the positive-class probability). AUC is computed from
  ``AUC_BINS`` equal-width score bins in [0, 1]: pairs whose scores fall in the same bin count one half, as
  ties do in the exact formula, so the error is at most half the share of (positive, negative) pairs that
  share a bin (reported as ``roc_auc_error_bound``; under 1e-3 for any spread-out scores). Compared with
  scikit-learn in the tests.
- Regression: MAE, RMSE and R² from running sums (Chan's merge), equal to scikit-learn's to rounding.
- Fairness, per group of a protected attribute: selection rate (share predicted positive), true and false
  positive rates; demographic-parity difference (largest minus smallest selection rate), equalized-odds
  difference (the larger of the TPR and FPR spreads) and disparate-impact ratio (smallest over largest
  selection rate). These are Fairlearn's ``demographic_parity_difference``, ``equalized_odds_difference`` and
  ``demographic_parity_ratio`` (its default ``between_groups`` method), compared with Fairlearn in the tests.
  A group without labelled positives (negatives) has no TPR (FPR) and is left out of that spread; a group is
  named ``(missing)`` when the attribute is null.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["AUC_BINS", "Classification", "Fairness", "Regression"]

AUC_BINS = 2000


def _labels(values: Any) -> np.ndarray:
    return np.asarray(values, dtype=object)


@dataclass
class Classification:
    """Confusion counts over the classes seen, plus positive-class score histograms for ROC AUC."""

    positive: Any = 1
    counts: dict[tuple[Any, Any], int] = field(default_factory=dict)  # (true, predicted) -> rows
    pos_scores: np.ndarray = field(default_factory=lambda: np.zeros(AUC_BINS, dtype=np.int64))
    neg_scores: np.ndarray = field(default_factory=lambda: np.zeros(AUC_BINS, dtype=np.int64))

    def update(self, y_true: Any, y_pred: Any, positive_score: Any | None = None) -> None:
        truth, pred = _labels(y_true), _labels(y_pred)
        if truth.shape != pred.shape:
            raise ValueError("labels and predictions need one value per row")
        for key, c in Counter(zip(truth.tolist(), pred.tolist(), strict=True)).items():
            self.counts[key] = self.counts.get(key, 0) + c
        if positive_score is not None:
            scores = np.clip(np.asarray(positive_score, dtype=float), 0.0, 1.0)
            bins = np.minimum((scores * AUC_BINS).astype(np.int64), AUC_BINS - 1)
            is_pos = np.asarray([t == self.positive for t in truth.tolist()], dtype=bool)
            self.pos_scores += np.bincount(bins[is_pos], minlength=AUC_BINS)
            self.neg_scores += np.bincount(bins[~is_pos], minlength=AUC_BINS)

    def merge(self, other: Classification) -> Classification:
        for key, c in other.counts.items():
            self.counts[key] = self.counts.get(key, 0) + c
        self.pos_scores += other.pos_scores
        self.neg_scores += other.neg_scores
        return self

    @property
    def rows(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> dict[str, float | None]:
        """accuracy, precision, recall, f1, roc_auc (None when undefined), rows and the AUC error bound."""
        n = self.rows
        if n == 0:
            return {
                "rows": 0,
                "accuracy": None,
                "precision": None,
                "recall": None,
                "f1": None,
                "roc_auc": None,
            }
        classes = sorted({k[0] for k in self.counts} | {k[1] for k in self.counts}, key=str)
        correct = sum(c for (t, p), c in self.counts.items() if t == p)
        binary = len(classes) <= 2 and any(c == self.positive for c in classes)
        per_class = [self.positive] if binary else classes
        precisions, recalls, f1s = [], [], []
        for cls in per_class:
            tp = self.counts.get((cls, cls), 0)
            fp = sum(c for (t, p), c in self.counts.items() if p == cls and t != cls)
            fn = sum(c for (t, p), c in self.counts.items() if t == cls and p != cls)
            precision = tp / (tp + fp) if tp + fp else 0.0
            recall = tp / (tp + fn) if tp + fn else 0.0
            precisions.append(precision)
            recalls.append(recall)
            f1s.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
        out: dict[str, float | None] = {
            "rows": n,
            "accuracy": correct / n,
            "precision": float(np.mean(precisions)),
            "recall": float(np.mean(recalls)),
            "f1": float(np.mean(f1s)),
            "roc_auc": None,
        }
        auc = self._auc()
        if auc is not None:
            out["roc_auc"], out["roc_auc_error_bound"] = auc
        return out

    def _auc(self) -> tuple[float, float] | None:
        pos, neg = self.pos_scores.astype(float), self.neg_scores.astype(float)
        n_pos, n_neg = pos.sum(), neg.sum()
        if n_pos == 0 or n_neg == 0:
            return None
        below = np.cumsum(neg) - neg  # negatives in lower bins
        pairs = n_pos * n_neg
        auc = float((pos * below).sum() + 0.5 * (pos * neg).sum()) / pairs
        return auc, float(0.5 * (pos * neg).sum() / pairs)


@dataclass
class Regression:
    """Running sums for MAE, RMSE and R² (mergeable)."""

    n: int = 0
    abs_err: float = 0.0
    sq_err: float = 0.0
    mean: float = 0.0  # of y_true
    m2: float = 0.0  # sum of squared deviations of y_true

    def update(self, y_true: Any, y_pred: Any) -> None:
        t, p = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
        if t.shape != p.shape:
            raise ValueError("labels and predictions need one value per row")
        if t.size == 0:
            return
        err = t - p
        self.abs_err += float(np.abs(err).sum())
        self.sq_err += float((err**2).sum())
        self._moments(t.size, float(t.mean()), float(((t - t.mean()) ** 2).sum()))

    def _moments(self, n: int, mean: float, m2: float) -> None:
        total = self.n + n
        delta = mean - self.mean
        self.m2 += m2 + delta**2 * self.n * n / total
        self.mean += delta * n / total
        self.n = total

    def merge(self, other: Regression) -> Regression:
        if other.n:
            self.abs_err += other.abs_err
            self.sq_err += other.sq_err
            self._moments(other.n, other.mean, other.m2)
        return self

    def summary(self) -> dict[str, float | None]:
        if self.n == 0:
            return {"rows": 0, "mae": None, "rmse": None, "r2": None}
        r2 = 1.0 - self.sq_err / self.m2 if self.m2 > 0 else None
        return {
            "rows": self.n,
            "mae": self.abs_err / self.n,
            "rmse": math.sqrt(self.sq_err / self.n),
            "r2": r2,
        }


@dataclass
class _Group:
    rows: int = 0
    selected: int = 0  # predicted positive
    positives: int = 0  # actually positive (labelled rows)
    true_positives: int = 0
    negatives: int = 0
    false_positives: int = 0


@dataclass
class Fairness:
    """Per-group selection rate, TPR and FPR for one protected attribute; see the module docstring.

    ``update`` takes predictions for every row and labels where known (None for unlabelled rows): selection
    rates use every row, TPR and FPR only the labelled ones.
    """

    positive: Any = 1
    groups: dict[str, _Group] = field(default_factory=dict)

    def update(self, group: Any, y_pred: Any, y_true: Any | None = None) -> None:
        g = [("(missing)" if v is None or (isinstance(v, float) and v != v) else str(v)) for v in list(group)]
        pred = list(y_pred)
        truth = list(y_true) if y_true is not None else [None] * len(pred)
        if not len(g) == len(pred) == len(truth):
            raise ValueError("groups, predictions and labels need one value per row")
        for name, p, t in zip(g, pred, truth, strict=True):
            s = self.groups.get(name)
            if s is None:
                s = self.groups[name] = _Group()
            s.rows += 1
            hit = p == self.positive
            s.selected += hit
            if t is None or (isinstance(t, float) and t != t):
                continue
            if t == self.positive:
                s.positives += 1
                s.true_positives += hit
            else:
                s.negatives += 1
                s.false_positives += hit

    def merge(self, other: Fairness) -> Fairness:
        for name, o in other.groups.items():
            s = self.groups.setdefault(name, _Group())
            s.rows += o.rows
            s.selected += o.selected
            s.positives += o.positives
            s.true_positives += o.true_positives
            s.negatives += o.negatives
            s.false_positives += o.false_positives
        return self

    def summary(self) -> dict[str, Any]:
        """Per group rows, selection_rate, tpr, fpr; and the three gaps (None when fewer than two groups have
        the numbers they need)."""
        per: dict[str, dict[str, float | int | None]] = {}
        for name, s in sorted(self.groups.items()):
            per[name] = {
                "rows": s.rows,
                "selection_rate": s.selected / s.rows if s.rows else None,
                "tpr": s.true_positives / s.positives if s.positives else None,
                "fpr": s.false_positives / s.negatives if s.negatives else None,
            }

        def spread(key: str) -> float | None:
            values = [v[key] for v in per.values() if v[key] is not None]
            return float(max(values) - min(values)) if len(values) >= 2 else None  # type: ignore[type-var,operator]

        rates = [float(v["selection_rate"]) for v in per.values() if v["selection_rate"] is not None]
        dp = spread("selection_rate")
        tpr, fpr = spread("tpr"), spread("fpr")
        eo = None if tpr is None and fpr is None else max(x for x in (tpr, fpr) if x is not None)
        ratio = None
        if len(rates) >= 2:
            ratio = min(rates) / max(rates) if max(rates) > 0 else None
        return {
            "groups": per,
            "demographic_parity_difference": dp,
            "equalized_odds_difference": eo,
            "disparate_impact_ratio": ratio,
        }
