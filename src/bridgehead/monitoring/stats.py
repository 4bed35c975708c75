"""Drift statistics as pure functions on arrays and on binned counts (numpy and scipy only).

Every test exists in two forms: on raw values (the in-memory reference implementation, checked against scipy in
the tests) and on counts over shared bins or grid points (what the streaming windows in
`bridgehead.monitoring.windows` feed it). Nothing here touches a database, a file or the network.

Default choice of test and thresholds: Evidently's DataDriftPreset
----------------------------------------------------------------------
Verified against the evidently source (evidentlyai/evidently, ``src/evidently/legacy/calculations/stattests/``
``registry.py`` ``_get_default_stattest``; ``ks_stattest.py``, ``chisquare_stattest.py``, ``z_stattest.py``,
``jensenshannon.py``, ``wasserstein_distance_norm.py``, ``psi.py``, ``utils.py`` ``get_binned_data``;
``src/evidently/legacy/calculations/data_drift.py`` ``get_one_column_drift`` and ``get_dataset_drift``;
``src/evidently/presets/drift.py`` ``DataDriftPreset``, evidently 0.7.x), read through the code search index:

- nulls and +-inf are dropped from both samples before any test; the reference size is what remains;
- reference <= 1000 rows: numerical columns with n_unique <= 5 get chi-square when n_unique > 2, else the Z-test
  for two proportions; numerical columns with n_unique > 5 get two-sample KS; categorical columns get
  chi-square when n_unique > 2, else the Z-test. All are p-value tests with threshold 0.05; KS is drifted at
  ``p <= 0.05``, chi-square and Z at ``p < 0.05`` (the code compares exactly so);
- reference > 1000 rows: numerical with n_unique <= 5 and all categorical get the Jensen-Shannon distance,
  numerical with n_unique > 5 the Wasserstein distance divided by ``max(np.std(reference), 0.001)``
  (population std, ddof=0); both drifted at ``distance >= 0.1``;
- Jensen-Shannon is ``scipy.spatial.distance.jensenshannon`` with the default base (natural log, so at most
  sqrt(ln 2) = 0.833). Its frequencies: for numerical columns whose *reference* has more than 20 distinct
  values, ``np.histogram`` counts on ``np.histogram_bin_edges(concat(reference, current), bins="sturges")``;
  otherwise the share of each value over the union of values of both samples. No zero filling;
- chi-square is ``scipy.stats.chisquare(f_obs=current counts, f_exp=reference counts * n_cur / n_ref)`` over
  the union of values (a goodness-of-fit test against the reference shares, not a contingency test);
- the Z-test codes each value 0 when it equals the smallest of the union of values (sorted), 1 otherwise, and
  returns the two-sided p-value of the pooled two-proportion z statistic (1 when both samples hold the same
  single value);
- PSI (``psi.py``) is ``sum((ref% - cur%) * ln(ref% / cur%))`` with empty shares replaced, per sample, by
  0.0001 (or by the smallest non-zero share / 1e6 when that share is <= 0.0001); threshold 0.1;
- dataset drift: ``share of drifted columns >= drift_share`` with drift_share 0.5.

Where Bridgehead deliberately differs (documented in docs/monitoring.md):

- n_unique is the *reference's* distinct count (stored in the reference profile), not recomputed over
  reference + current as Evidently does, so the test chosen for a monitor does not change from window to window;
- PSI is always reported, on 10 bins at the reference deciles (right-closed bins ``(e[i-1], e[i]]``, as
  finance practice expects), with bands < 0.1 "none", < 0.25 "moderate", else "significant"; Evidently's own
  PSI stattest bins on Sturges edges. PSI is not the default gate (it can be chosen per monitor);
- an empty window, or a column with no usable reference values, yields a defined `DriftTest` with
  ``statistic=None``, ``drifted=False`` and a reason, where Evidently raises;
- the Z-test p-value uses ``2 * norm.sf(|z|)`` rather than ``2 * (1 - norm.cdf(|z|))``: equal to 1e-16, and
  accurate for tiny p.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from scipy import stats as _st  # type: ignore[import-untyped]
from scipy.spatial import distance as _distance  # type: ignore[import-untyped]

__all__ = [
    "DISTANCE_THRESHOLD",
    "DRIFT_SHARE",
    "JS_HISTOGRAM_MIN_UNIQUE",
    "LOW_CARDINALITY",
    "PSI_BINS",
    "PSI_MODERATE",
    "PSI_SIGNIFICANT",
    "P_VALUE_THRESHOLD",
    "SMALL_REFERENCE_ROWS",
    "TESTS",
    "WASSERSTEIN_MIN_NORM",
    "DatasetDrift",
    "DriftOverrides",
    "DriftTest",
    "NullRateChange",
    "SchemaChange",
    "TestChoice",
    "bin_counts",
    "chi_square",
    "choose_test",
    "dataset_drift",
    "decile_edges",
    "drift_kind",
    "drift_test",
    "is_drifted",
    "jensen_shannon",
    "js_frequencies",
    "ks",
    "ks_from_cdfs",
    "ks_from_counts",
    "ks_p_value",
    "null_rate_change",
    "out_of_range_share",
    "psi",
    "psi_band",
    "psi_from_values",
    "schema_change",
    "skipped",
    "sturges_edges",
    "unseen_categories",
    "wasserstein_normed",
    "z_test_proportions",
]

FloatArray = npt.NDArray[np.float64]
Kind = Literal["numeric", "categorical"]
PsiBand = Literal["none", "moderate", "significant"]

SMALL_REFERENCE_ROWS = 1000
LOW_CARDINALITY = 5
P_VALUE_THRESHOLD = 0.05
DISTANCE_THRESHOLD = 0.1
DRIFT_SHARE = 0.5
PSI_BINS = 10
PSI_MODERATE = 0.1
PSI_SIGNIFICANT = 0.25
WASSERSTEIN_MIN_NORM = 0.001
# Evidently bins a numerical column on Sturges edges for JS/PSI only when its reference has more distinct values.
JS_HISTOGRAM_MIN_UNIQUE = 20
_PSI_FILL = 0.0001
_KS_EXACT_MAX_N = 10_000  # scipy's ks_2samp(method="auto") is exact up to this sample size

# name -> (kinds it applies to, "p_value" or "distance", default threshold)
TESTS: dict[str, tuple[frozenset[str], str, float]] = {
    "ks": (frozenset({"numeric"}), "p_value", P_VALUE_THRESHOLD),
    "chisquare": (frozenset({"numeric", "categorical"}), "p_value", P_VALUE_THRESHOLD),
    "z": (frozenset({"numeric", "categorical"}), "p_value", P_VALUE_THRESHOLD),
    "jensenshannon": (frozenset({"numeric", "categorical"}), "distance", DISTANCE_THRESHOLD),
    "wasserstein": (frozenset({"numeric"}), "distance", DISTANCE_THRESHOLD),
    "psi": (frozenset({"numeric", "categorical"}), "distance", PSI_MODERATE),
}


# -- choice of test ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DriftOverrides:
    """Per-monitor (or per-column) choice: a test name from `TESTS` and/or a threshold. None keeps the default."""

    test: str | None = None
    threshold: float | None = None


@dataclass(frozen=True)
class TestChoice:
    test: str
    threshold: float
    score: str  # "p_value" (drifted when small) or "distance" (drifted when large)


def drift_kind(profile_kind: str) -> Kind | None:
    """Maps a profile column kind (`bridgehead.data.profile.column_kind`) to the drift kind: numbers and dates
    (as epoch seconds) are numeric, strings and booleans categorical; nested/binary columns have no drift test."""
    if profile_kind in ("numeric", "datetime"):
        return "numeric"
    if profile_kind in ("string", "boolean"):
        return "categorical"
    return None


def choose_test(
    kind: str, n_reference: int, n_unique: int, overrides: DriftOverrides | None = None
) -> TestChoice:
    """Evidently's DataDriftPreset default (see the module docstring), unless `overrides` names a test or a
    threshold. ``n_reference`` is the reference's count of non-null finite values, ``n_unique`` its distinct
    count (from the reference profile)."""
    if kind not in ("numeric", "categorical"):
        raise ValueError(f"no drift test for columns of kind {kind!r}")
    test = overrides.test if overrides is not None and overrides.test else None
    if test is None:
        if n_reference <= SMALL_REFERENCE_ROWS:
            if kind == "numeric" and n_unique > LOW_CARDINALITY:
                test = "ks"
            else:
                test = "chisquare" if n_unique > 2 else "z"
        elif kind == "numeric" and n_unique > LOW_CARDINALITY:
            test = "wasserstein"
        else:
            test = "jensenshannon"
    if test not in TESTS:
        raise ValueError(f"unknown drift test {test!r} (known: {', '.join(sorted(TESTS))})")
    kinds, score, default = TESTS[test]
    if kind not in kinds:
        raise ValueError(f"drift test {test!r} does not apply to {kind} columns")
    threshold = overrides.threshold if overrides is not None and overrides.threshold is not None else default
    return TestChoice(test, float(threshold), score)


def is_drifted(test: str, score: float, threshold: float) -> bool:
    """Evidently's comparisons: KS ``p <= t``; chi-square and Z ``p < t``; distances and PSI ``d >= t``."""
    if math.isnan(score):
        return False
    if test == "ks":
        return score <= threshold
    if TESTS[test][1] == "p_value":
        return score < threshold
    return score >= threshold


def psi_band(value: float | None) -> PsiBand | None:
    """The finance convention: < 0.1 no shift, 0.1 to 0.25 moderate, >= 0.25 significant."""
    if value is None or math.isnan(value):
        return None
    if value < PSI_MODERATE:
        return "none"
    if value < PSI_SIGNIFICANT:
        return "moderate"
    return "significant"


# -- results ----------------------------------------------------------------------------------------------


@dataclass
class DriftTest:
    """One column's drift result.

    ``statistic`` is the test's own statistic (KS D, chi-square, z, JS distance, normed Wasserstein, PSI);
    ``p_value`` is set for p-value tests; ``score`` is what the threshold is compared with (the p-value or the
    distance, Evidently's ``drift_score``). ``statistic is None`` means the test could not run (see ``reason``);
    then ``drifted`` is False. ``approximate`` says the value came from sketches rather than exact counts, and
    ``error_bound`` bounds the absolute error of ``score`` when a bound is known.
    """

    column: str
    test: str
    statistic: float | None
    p_value: float | None
    threshold: float
    drifted: bool
    psi: float | None = None
    psi_band: PsiBand | None = None
    n_reference: int = 0
    n_current: int = 0
    approximate: bool = False
    error_bound: float | None = None
    reason: str | None = None

    @property
    def score(self) -> float | None:
        return self.p_value if TESTS.get(self.test, (None, "distance"))[1] == "p_value" else self.statistic

    def as_dict(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "test": self.test,
            "statistic": self.statistic,
            "p_value": self.p_value,
            "score": self.score,
            "threshold": self.threshold,
            "drifted": self.drifted,
            "psi": self.psi,
            "psi_band": self.psi_band,
            "n_reference": self.n_reference,
            "n_current": self.n_current,
            "approximate": self.approximate,
            "error_bound": self.error_bound,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class DatasetDrift:
    n_columns: int
    n_drifted: int
    share: float
    drift_share: float
    drifted: bool


def dataset_drift(results: Iterable[DriftTest], share: float = DRIFT_SHARE) -> DatasetDrift:
    """Evidently's rule: the dataset drifted when drifted columns / columns >= ``share``. Columns whose test
    could not run (``statistic is None``) are left out of both counts; with none left, nothing drifted."""
    ran = [r for r in results if r.statistic is not None]
    n_drifted = sum(1 for r in ran if r.drifted)
    fraction = n_drifted / len(ran) if ran else 0.0
    return DatasetDrift(len(ran), n_drifted, fraction, share, bool(ran) and fraction >= share)


def skipped(
    column: str, choice: TestChoice, reason: str, n_reference: int = 0, n_current: int = 0
) -> DriftTest:
    return DriftTest(
        column, choice.test, None, None, choice.threshold, False, n_reference=n_reference,
        n_current=n_current, reason=reason,
    )  # fmt: skip


# -- Kolmogorov-Smirnov -----------------------------------------------------------------------------------


def ks(reference: npt.ArrayLike, current: npt.ArrayLike) -> tuple[float, float]:
    """Two-sided two-sample KS (statistic D, p-value) on raw values; non-finite values are dropped. Exactly
    ``scipy.stats.ks_2samp(reference, current)`` (method "auto": exact p up to 10 000 values per sample)."""
    ref, cur = _finite(reference), _finite(current)
    result = _st.ks_2samp(ref, cur)
    return float(result.statistic), float(result.pvalue)


def ks_p_value(d: float, n_reference: int, n_current: int) -> float:
    """The two-sided p-value scipy's ``ks_2samp(method="auto")`` gives for statistic ``d`` and these sample
    sizes: the exact distribution when both are <= 10 000 (falling back to the asymptotic one where scipy
    would, without its warning), else Smirnov's asymptotic ``kstwo.sf(d, round(n*m/(n+m)))``."""
    n1, n2 = int(n_reference), int(n_current)
    if min(n1, n2) <= 0:
        raise ValueError("KS needs two non-empty samples")
    if max(n1, n2) <= _KS_EXACT_MAX_N:
        # scipy has no public function from (d, n1, n2) to the exact p-value; the tests pin this private one.
        from scipy.stats._stats_py import _attempt_exact_2kssamp  # type: ignore[import-untyped]

        ok, _, prob = _attempt_exact_2kssamp(n1, n2, math.gcd(n1, n2), d, "two-sided")
        if ok:
            return float(np.clip(prob, 0.0, 1.0))
    m, n = sorted([float(n1), float(n2)], reverse=True)
    en = m * n / (m + n)
    return float(np.clip(_st.kstwo.sf(d, np.round(en)), 0.0, 1.0))


def ks_from_cdfs(
    ref_cdf: npt.ArrayLike,
    ref_cdf_below: npt.ArrayLike,
    cur_cdf: npt.ArrayLike,
    cur_cdf_below: npt.ArrayLike,
) -> float:
    """KS statistic from both CDFs at grid points x_1 < ... < x_k: F(x_i) and the left limit F(x_i-).

    Exact when every reference value is a grid point. Then F_ref is constant between grid points (0 below
    x_1, 1 from x_k on) while F_cur only rises, so on each gap |F_cur - F_ref| is largest at one of its two
    ends: at x_i itself or just below x_{i+1}. The supremum over the real line is therefore the largest of
    |F_cur(x_i) - F_ref(x_i)| and |F_cur(x_i-) - F_ref(x_i-)|, which is what ``ks_2samp`` computes over the
    pooled sample. Current values between grid points need no storing, only counting.
    """
    a = np.abs(np.asarray(ref_cdf, np.float64) - np.asarray(cur_cdf, np.float64))
    b = np.abs(np.asarray(ref_cdf_below, np.float64) - np.asarray(cur_cdf_below, np.float64))
    return float(max(a.max(initial=0.0), b.max(initial=0.0)))


def ks_from_counts(
    ref_at: npt.ArrayLike, cur_at: npt.ArrayLike, cur_between: npt.ArrayLike
) -> tuple[float, float]:
    """Exact two-sample KS (D, p) from counts on the distinct reference values x_1 < ... < x_k.

    ``ref_at[i]``: reference values equal to x_i (the reference has no other values); ``cur_at[i]``: current
    values equal to x_i; ``cur_between[i]`` (length k+1): current values strictly between x_i and x_{i+1}
    (``cur_between[0]`` below x_1, ``cur_between[k]`` above x_k). Equal to ``scipy.stats.ks_2samp`` on the
    values themselves (see `ks_from_cdfs` for why)."""
    r = np.asarray(ref_at, np.float64)
    c = np.asarray(cur_at, np.float64)
    g = np.asarray(cur_between, np.float64)
    if len(g) != len(c) + 1 or len(r) != len(c):
        raise ValueError("ks_from_counts needs ref_at and cur_at of length k and cur_between of length k+1")
    n_ref, n_cur = r.sum(), c.sum() + g.sum()
    if n_ref <= 0 or n_cur <= 0:
        raise ValueError("KS needs two non-empty samples")
    ref_cdf = np.cumsum(r) / n_ref
    ref_below = ref_cdf - r / n_ref
    below = np.cumsum(g[:-1]) + np.concatenate([[0.0], np.cumsum(c)[:-1]])
    cur_below = below / n_cur
    cur_cdf = (below + c) / n_cur
    d = ks_from_cdfs(ref_cdf, ref_below, cur_cdf, cur_below)
    return d, ks_p_value(d, round(n_ref), round(n_cur))


# -- distances ---------------------------------------------------------------------------------------------


def wasserstein_normed(reference: npt.ArrayLike, current: npt.ArrayLike) -> float:
    """``scipy.stats.wasserstein_distance(reference, current) / max(np.std(reference), 0.001)`` on the finite
    values: Evidently's normed Wasserstein. The 0.001 floor keeps a constant reference from dividing by zero
    (then any shift of more than 0.0001 in absolute units reaches the 0.1 threshold)."""
    ref, cur = _finite(reference), _finite(current)
    if len(ref) == 0 or len(cur) == 0:
        raise ValueError("Wasserstein distance needs two non-empty samples")
    return float(_st.wasserstein_distance(ref, cur)) / max(float(np.std(ref)), WASSERSTEIN_MIN_NORM)


def jensen_shannon(ref_freq: npt.ArrayLike, cur_freq: npt.ArrayLike, base: float | None = None) -> float:
    """Jensen-Shannon *distance* (the square root of the divergence) between two frequency vectors over the
    same bins or categories, each normalized to sum 1: ``scipy.spatial.distance.jensenshannon`` with natural
    log by default (range 0 to sqrt(ln 2)). Bins where one sample is empty need no smoothing."""
    p = np.asarray(ref_freq, np.float64)
    q = np.asarray(cur_freq, np.float64)
    if p.sum() <= 0 or q.sum() <= 0:
        raise ValueError("Jensen-Shannon distance needs two non-empty frequency vectors")
    return float(_distance.jensenshannon(p, q, base))


def sturges_edges(low: float, high: float, n: int) -> FloatArray:
    """``np.histogram_bin_edges(x, bins="sturges")`` for data with min ``low``, max ``high`` and ``n`` values,
    without the data (so streaming windows can bin the way Evidently bins reference + current)."""
    if n <= 0:
        raise ValueError("Sturges bins need at least one value")
    if high == low:
        return np.linspace(low - 0.5, high + 0.5, 2)
    width = (high - low) / (np.log2(n) + 1.0)
    bins = int(np.ceil((high - low) / width)) if width else 1
    return np.linspace(low, high, bins + 1)


def js_frequencies(
    reference: npt.ArrayLike, current: npt.ArrayLike, kind: str
) -> tuple[FloatArray, FloatArray]:
    """Evidently's binning for Jensen-Shannon on raw (non-null) values: Sturges histogram of the pooled
    sample for numeric columns whose reference has more than 20 distinct values, else value frequencies over
    the union of values. Returns the reference and current shares."""
    if kind == "numeric":
        ref, cur = _finite(reference), _finite(current)
        if len(np.unique(ref)) > JS_HISTOGRAM_MIN_UNIQUE:
            edges = np.histogram_bin_edges(np.concatenate([ref, cur]), bins="sturges")
            return (
                np.histogram(ref, edges)[0] / len(ref),
                np.histogram(cur, edges)[0] / len(cur),
            )
        _, ref_counts, cur_counts = _union_counts(ref, cur)
    else:
        _, ref_counts, cur_counts = _union_counts(_labels(reference), _labels(current))
    return ref_counts / ref_counts.sum(), cur_counts / cur_counts.sum()


# -- p-value tests on categories ---------------------------------------------------------------------------


def chi_square(ref_counts: npt.ArrayLike, cur_counts: npt.ArrayLike) -> tuple[float, float]:
    """Evidently's chi-square: ``scipy.stats.chisquare(f_obs=cur, f_exp=ref * n_cur / n_ref)`` over aligned
    category counts. Categories absent from both are ignored; a category the reference never saw but the
    current has makes the statistic infinite and p = 0 (what scipy returns, minus its divide-by-zero warning)."""
    r = np.asarray(ref_counts, np.float64)
    c = np.asarray(cur_counts, np.float64)
    keep = (r > 0) | (c > 0)
    r, c = r[keep], c[keep]
    if r.sum() <= 0 or c.sum() <= 0:
        raise ValueError("chi-square needs two non-empty samples")
    expected = r * (c.sum() / r.sum())
    if np.any((expected == 0) & (c > 0)):
        return math.inf, 0.0
    if len(r) < 2:
        return 0.0, 1.0
    result = _st.chisquare(c, expected)
    return float(result.statistic), float(result.pvalue)


def z_test_proportions(ref_counts: npt.ArrayLike, cur_counts: npt.ArrayLike) -> tuple[float, float]:
    """Evidently's Z-test for two proportions over aligned category counts *in sorted category order*: each
    value is coded 0 when it is the first (smallest) category, 1 otherwise; returns (z, two-sided p) of the
    pooled two-proportion z statistic. Both samples holding one and the same value gives (0, 1)."""
    r = np.asarray(ref_counts, np.float64)
    c = np.asarray(cur_counts, np.float64)
    keep = (r > 0) | (c > 0)
    r, c = r[keep], c[keep]
    n1, n2 = r.sum(), c.sum()
    if n1 <= 0 or n2 <= 0:
        raise ValueError("the Z-test needs two non-empty samples")
    p1 = (n1 - r[0]) / n1
    p2 = (n2 - c[0]) / n2
    pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
    var = pooled * (1 - pooled) * (1 / n1 + 1 / n2)
    if len(r) == 1 or var <= 0:
        return 0.0, 1.0
    z = (p1 - p2) / math.sqrt(var)
    return float(z), float(2 * _st.norm.sf(abs(z)))


# -- PSI ----------------------------------------------------------------------------------------------------


def psi(ref_counts: npt.ArrayLike, cur_counts: npt.ArrayLike) -> float:
    """Population Stability Index over aligned bins: ``sum((r - c) * ln(r / c))`` on the shares, with empty
    shares filled per sample as Evidently fills them (0.0001, or the smallest non-zero share / 1e6 when that
    is <= 0.0001)."""
    r = _fill_zeros(np.asarray(ref_counts, np.float64))
    c = _fill_zeros(np.asarray(cur_counts, np.float64))
    return float(np.sum((r - c) * np.log(r / c)))


def decile_edges(reference: npt.ArrayLike, n_bins: int = PSI_BINS) -> FloatArray:
    """The interior PSI bin edges: the reference's quantiles at 1/n .. (n-1)/n (numpy's default linear
    interpolation), duplicates removed, so heavy ties give fewer bins."""
    ref = _finite(reference)
    if len(ref) == 0:
        return np.zeros(0)
    return np.unique(np.quantile(ref, np.arange(1, n_bins) / n_bins))


def bin_counts(values: npt.ArrayLike, edges: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Counts in the right-closed bins ``(-inf, e1], (e1, e2], ..., (e_k, inf)`` of sorted interior edges."""
    v = _finite(values)
    e = np.asarray(edges, np.float64)
    return np.bincount(np.searchsorted(e, v, side="left"), minlength=len(e) + 1).astype(np.int64)


def psi_from_values(reference: npt.ArrayLike, current: npt.ArrayLike, kind: str = "numeric") -> float:
    """PSI on raw values: reference-decile bins for numbers (`decile_edges`, `bin_counts`), the union of
    categories for categorical values."""
    if kind == "numeric":
        edges = decile_edges(reference)
        return psi(bin_counts(reference, edges), bin_counts(current, edges))
    _, r, c = _union_counts(_labels(reference), _labels(current))
    return psi(r, c)


# -- data quality --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NullRateChange:
    reference: float | None
    current: float | None

    @property
    def change(self) -> float | None:
        """Current null share minus reference null share (None when either side has no rows)."""
        if self.reference is None or self.current is None:
            return None
        return self.current - self.reference


def null_rate_change(ref_nulls: int, ref_rows: int, cur_nulls: int, cur_rows: int) -> NullRateChange:
    """Null shares of both sides (nulls / rows)."""
    return NullRateChange(
        ref_nulls / ref_rows if ref_rows else None, cur_nulls / cur_rows if cur_rows else None
    )


def out_of_range_share(values: npt.ArrayLike, low: float, high: float) -> float | None:
    """Share of the non-NaN values outside the reference range [low, high] (infinities count as outside a
    finite range); None for no values."""
    v = np.asarray(values, np.float64)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return None
    return float(np.count_nonzero((v < low) | (v > high)) / len(v))


def unseen_categories(reference: Iterable[str], current_counts: Mapping[str, int]) -> dict[str, int]:
    """The current's categories (with their counts) that the reference does not have."""
    known = set(reference)
    return {k: int(v) for k, v in current_counts.items() if k not in known and v > 0}


@dataclass(frozen=True)
class SchemaChange:
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    retyped: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed or self.retyped)


def schema_change(ref_columns: Mapping[str, str], cur_columns: Mapping[str, str]) -> SchemaChange:
    """Columns added, removed, or whose kind changed (``{name: kind}`` on both sides; kinds as
    `bridgehead.data.profile.column_kind` gives them)."""
    added = tuple(c for c in cur_columns if c not in ref_columns)
    removed = tuple(c for c in ref_columns if c not in cur_columns)
    retyped = {
        c: (ref_columns[c], cur_columns[c])
        for c in ref_columns
        if c in cur_columns and ref_columns[c] != cur_columns[c]
    }
    return SchemaChange(added, removed, retyped)


# -- one column, in memory -------------------------------------------------------------------------------------


def drift_test(
    column: str,
    kind: str,
    reference: npt.ArrayLike | Sequence[Any],
    current: npt.ArrayLike | Sequence[Any],
    n_unique: int | None = None,
    overrides: DriftOverrides | None = None,
) -> DriftTest:
    """The in-memory reference implementation: Evidently's test on raw values, plus PSI. Nulls (None, NaN)
    and, for numbers, infinities are dropped first. ``n_unique`` defaults to the reference's distinct count."""
    if kind == "numeric":
        ref: Any = _finite(reference)
        cur: Any = _finite(current)
    else:
        ref, cur = _labels(reference), _labels(current)
    n_ref, n_cur = len(ref), len(cur)
    unique = n_unique if n_unique is not None else len(np.unique(ref))
    choice = choose_test(kind, n_ref, unique, overrides)
    if n_ref == 0:
        return skipped(column, choice, "no reference values", n_ref, n_cur)
    if n_cur == 0:
        return skipped(column, choice, "no values in the window", n_ref, n_cur)
    p_value: float | None = None
    if choice.test == "ks":
        statistic, p_value = ks(ref, cur)
    elif choice.test == "wasserstein":
        statistic = wasserstein_normed(ref, cur)
    elif choice.test == "jensenshannon":
        statistic = jensen_shannon(*js_frequencies(ref, cur, kind))
    elif choice.test == "psi":
        statistic = psi_from_values(ref, cur, kind)
    else:
        _, r, c = _union_counts(ref, cur)
        test = chi_square if choice.test == "chisquare" else z_test_proportions
        statistic, p_value = test(r, c)
    value = psi_from_values(ref, cur, kind)
    score = p_value if choice.score == "p_value" else statistic
    assert score is not None
    return DriftTest(
        column, choice.test, statistic, p_value, choice.threshold,
        is_drifted(choice.test, score, choice.threshold), value, psi_band(value), n_ref, n_cur,
    )  # fmt: skip


# -- helpers ---------------------------------------------------------------------------------------------------


def _finite(values: Any) -> FloatArray:
    v = np.asarray(values)
    if v.dtype == object:
        v = np.array([np.nan if x is None else x for x in v.ravel()], dtype=np.float64)
    v = v.astype(np.float64, copy=False).ravel()
    return v[np.isfinite(v)]


def _labels(values: Any) -> npt.NDArray[np.str_]:
    """Non-null values as text labels (the way profiles name categories: booleans "true"/"false")."""
    out = []
    for x in np.asarray(values, dtype=object).ravel():
        if x is None or (isinstance(x, float) and math.isnan(x)):
            continue
        out.append(("true" if x else "false") if isinstance(x, bool | np.bool_) else str(x))
    return np.asarray(out, dtype=str)


def _union_counts(
    ref: npt.NDArray[Any], cur: npt.NDArray[Any]
) -> tuple[npt.NDArray[Any], FloatArray, FloatArray]:
    keys = np.union1d(ref, cur)  # sorted: the Z-test's "first category" is keys[0]
    r = np.bincount(np.searchsorted(keys, ref), minlength=len(keys)).astype(np.float64)
    c = np.bincount(np.searchsorted(keys, cur), minlength=len(keys)).astype(np.float64)
    return keys, r, c


def _fill_zeros(counts: FloatArray) -> FloatArray:
    total = counts.sum()
    if total <= 0:
        raise ValueError("PSI needs two non-empty samples")
    shares = counts / total
    nonzero = shares[shares > 0]
    smallest = float(nonzero.min())
    fill = smallest / 1e6 if smallest <= _PSI_FILL else _PSI_FILL
    return np.where(shares == 0, fill, shares)
