"""The drift statistics against scipy and straightforward numpy on fixed seeds, and Evidently's default choice."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as st
from scipy.spatial.distance import jensenshannon

from bridgehead.monitoring import stats
from bridgehead.monitoring.stats import DriftOverrides, DriftTest


def numpy_psi(ref: np.ndarray, cur: np.ndarray) -> float:
    """PSI written out the textbook way: reference deciles, right-closed bins, Evidently's zero fill."""
    edges = np.unique(np.quantile(ref, np.arange(1, 10) / 10))
    r = np.array(
        [np.sum(ref <= edges[0])]
        + [np.sum((ref > a) & (ref <= b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]
        + [np.sum(ref > edges[-1])]
    ) / len(ref)
    c = np.array(
        [np.sum(cur <= edges[0])]
        + [np.sum((cur > a) & (cur <= b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]
        + [np.sum(cur > edges[-1])]
    ) / len(cur)
    for p in (r, c):
        small = p[p > 0].min()
        p[p == 0] = small / 1e6 if small <= 0.0001 else 0.0001
    return float(np.sum((r - c) * np.log(r / c)))


@pytest.mark.parametrize("seed", range(5))
def test_ks_matches_scipy_including_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ref = np.round(rng.normal(size=rng.integers(20, 900)), 1)
    cur = np.round(rng.normal(0.2, 1.2, size=rng.integers(20, 3000)), 1)
    expected = st.ks_2samp(ref, cur)
    assert stats.ks(ref, cur) == (pytest.approx(expected.statistic), pytest.approx(expected.pvalue))


@pytest.mark.parametrize(("n1", "n2"), [(50, 50), (300, 1000), (1000, 9999), (800, 25_000), (700, 300_000)])
def test_ks_p_value_is_scipys_for_the_same_statistic(n1: int, n2: int) -> None:
    rng = np.random.default_rng(n1 + n2)
    ref, cur = rng.normal(size=n1), rng.normal(0.05, 1, size=n2)
    expected = st.ks_2samp(ref, cur)
    assert stats.ks_p_value(float(expected.statistic), n1, n2) == pytest.approx(
        expected.pvalue, rel=1e-9, abs=1e-300
    )


@pytest.mark.parametrize("seed", range(8))
def test_ks_from_counts_is_exact(seed: int) -> None:
    """Counts at and between the distinct reference values give scipy's D and p exactly, ties included."""
    rng = np.random.default_rng(100 + seed)
    ref = rng.integers(0, 40, size=rng.integers(5, 1000)).astype(float) / 4
    cur = np.concatenate([rng.integers(-8, 60, size=rng.integers(5, 5000)) / 4, rng.normal(5, 3, size=200)])
    points = np.unique(ref)
    ref_at = np.array([np.sum(ref == x) for x in points])
    cur_at = np.array([np.sum(cur == x) for x in points])
    edges = np.concatenate([[-np.inf], points, [np.inf]])
    cur_between = np.array(
        [np.sum((cur > a) & (cur < b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]
    )
    expected = st.ks_2samp(ref, cur)
    d, p = stats.ks_from_counts(ref_at, cur_at, cur_between)
    assert d == pytest.approx(expected.statistic, abs=1e-12)
    assert p == pytest.approx(expected.pvalue, rel=1e-9, abs=1e-300)


@pytest.mark.parametrize("seed", range(3))
def test_wasserstein_normed_matches_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ref, cur = rng.gamma(2, 3, size=2000), rng.gamma(2.2, 3, size=1500)
    expected = st.wasserstein_distance(ref, cur) / np.std(ref)
    assert stats.wasserstein_normed(ref, cur) == pytest.approx(expected, rel=1e-12)


def test_wasserstein_of_a_constant_reference_divides_by_the_floor() -> None:
    ref, cur = np.full(50, 3.0), np.full(40, 3.5)
    assert stats.wasserstein_normed(ref, cur) == pytest.approx(0.5 / 0.001)
    assert stats.wasserstein_normed(ref, ref) == 0.0


def test_jensen_shannon_matches_scipy() -> None:
    rng = np.random.default_rng(7)
    p, q = rng.integers(0, 50, size=12), rng.integers(0, 50, size=12)
    p[3] = 0
    assert stats.jensen_shannon(p, q) == pytest.approx(jensenshannon(p, q))
    assert stats.jensen_shannon(p, q, base=2) == pytest.approx(jensenshannon(p, q, base=2))


def test_js_frequencies_bin_like_evidently() -> None:
    rng = np.random.default_rng(3)
    ref, cur = rng.normal(size=1500), rng.normal(0.3, 1, size=800)
    edges = np.histogram_bin_edges(np.concatenate([ref, cur]), bins="sturges")
    r, c = stats.js_frequencies(ref, cur, "numeric")
    np.testing.assert_allclose(r, np.histogram(ref, edges)[0] / len(ref))
    np.testing.assert_allclose(c, np.histogram(cur, edges)[0] / len(cur))
    # Few reference values: shares per value over the union of values.
    r, c = stats.js_frequencies([1, 1, 2, 3], [2, 4, 4, 4], "numeric")
    np.testing.assert_allclose(r, [0.5, 0.25, 0.25, 0.0])
    np.testing.assert_allclose(c, [0.0, 0.25, 0.0, 0.75])
    r, c = stats.js_frequencies(["a", "b", "b", None], ["c", "b"], "categorical")
    np.testing.assert_allclose(r, [1 / 3, 2 / 3, 0.0])
    np.testing.assert_allclose(c, [0.0, 0.5, 0.5])


@pytest.mark.parametrize(
    ("n", "low", "high"), [(10, 0.0, 1.0), (1000, -3.2, 7.9), (123_457, 5.0, 5.0), (1, 2.0, 2.0)]
)
def test_sturges_edges_equal_numpys(n: int, low: float, high: float) -> None:
    data = np.linspace(low, high, n)
    np.testing.assert_allclose(
        stats.sturges_edges(low, high, n), np.histogram_bin_edges(data, bins="sturges")
    )


def test_chi_square_is_scipys_goodness_of_fit_against_reference_shares() -> None:
    ref, cur = np.array([30, 50, 20]), np.array([12, 20, 18])
    expected = st.chisquare(cur, ref * cur.sum() / ref.sum())
    assert stats.chi_square(ref, cur) == (pytest.approx(expected.statistic), pytest.approx(expected.pvalue))
    assert stats.chi_square([10, 0, 5], [10, 0, 5]) == (pytest.approx(0.0), pytest.approx(1.0))
    # A category the reference never had: scipy says inf and p = 0 (with a warning); so do we, without it.
    assert stats.chi_square([10, 5, 0], [10, 5, 1]) == (math.inf, 0.0)


@pytest.mark.parametrize("seed", range(4))
def test_z_test_equals_uncorrected_two_by_two_chi_square(seed: int) -> None:
    """The pooled two-proportion z-test is Pearson's 2x2 chi-square without Yates' correction: z**2 = chi2."""
    rng = np.random.default_rng(seed)
    ref, cur = rng.integers(5, 500, size=2), rng.integers(5, 500, size=2)
    z, p = stats.z_test_proportions(ref, cur)
    chi2, p_chi, _, _ = st.chi2_contingency(np.array([ref, cur]), correction=False)
    assert z * z == pytest.approx(chi2)
    assert p == pytest.approx(p_chi)
    n1, n2 = ref.sum(), cur.sum()
    p1, p2 = ref[1] / n1, cur[1] / n2
    pooled = (ref[1] + cur[1]) / (n1 + n2)
    evidently = 2 * (1 - st.norm.cdf(abs((p1 - p2) / np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2)))))
    assert p == pytest.approx(evidently, abs=1e-15)


def test_z_test_of_one_shared_value_is_no_drift() -> None:
    assert stats.z_test_proportions([10], [3]) == (0.0, 1.0)


@pytest.mark.parametrize("seed", range(4))
def test_psi_matches_numpy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ref, cur = rng.lognormal(size=5000), rng.lognormal(0.1 * seed, 1.0, size=3000)
    assert stats.psi_from_values(ref, cur) == pytest.approx(numpy_psi(ref, cur), rel=1e-12)


def test_psi_fills_empty_bins_like_evidently() -> None:
    c = np.array([0.2, 0.3, 0.5])
    filled = np.array([0.5, 0.5, 0.0001])  # the empty reference share becomes 0.0001
    assert stats.psi([5, 5, 0], [2, 3, 5]) == pytest.approx(float(np.sum((filled - c) * np.log(filled / c))))
    # When the smallest non-zero share is <= 0.0001, empty shares become that share / 1e6.
    ref = np.array([20_000, 1, 0])
    r = ref / ref.sum()
    small = r[1] / 1e6
    r_filled = np.array([r[0], r[1], small])
    cur = np.array([0.5, 0.25, 0.25])
    assert stats.psi(ref, [2, 1, 1]) == pytest.approx(
        float(np.sum((r_filled - cur) * np.log(r_filled / cur)))
    )


@pytest.mark.parametrize(
    ("value", "band"),
    [
        (0.0, "none"),
        (0.0999, "none"),
        (0.1, "moderate"),
        (0.2499, "moderate"),
        (0.25, "significant"),
        (None, None),
    ],
)
def test_psi_bands(value: float | None, band: str | None) -> None:
    assert stats.psi_band(value) == band


@pytest.mark.parametrize(
    ("kind", "n", "unique", "test", "threshold"),
    [
        ("numeric", 1000, 6, "ks", 0.05),
        ("numeric", 1000, 5, "chisquare", 0.05),
        ("numeric", 1000, 3, "chisquare", 0.05),
        ("numeric", 1000, 2, "z", 0.05),
        ("numeric", 1001, 6, "wasserstein", 0.1),
        ("numeric", 1001, 5, "jensenshannon", 0.1),
        ("categorical", 1000, 3, "chisquare", 0.05),
        ("categorical", 1000, 2, "z", 0.05),
        ("categorical", 1001, 2, "jensenshannon", 0.1),
        ("categorical", 5_000_000, 300, "jensenshannon", 0.1),
    ],
)
def test_choose_test_follows_evidentlys_preset(
    kind: str, n: int, unique: int, test: str, threshold: float
) -> None:
    choice = stats.choose_test(kind, n, unique)
    assert (choice.test, choice.threshold) == (test, threshold)


def test_choose_test_overrides() -> None:
    assert stats.choose_test("numeric", 10, 100, DriftOverrides(test="psi")).threshold == 0.1
    assert stats.choose_test("numeric", 10, 100, DriftOverrides(threshold=0.01)) == stats.TestChoice(
        "ks", 0.01, "p_value"
    )
    assert stats.choose_test("categorical", 10**6, 3, DriftOverrides("chisquare", 0.001)).test == "chisquare"
    with pytest.raises(ValueError, match="does not apply"):
        stats.choose_test("categorical", 10, 3, DriftOverrides(test="ks"))
    with pytest.raises(ValueError, match="unknown drift test"):
        stats.choose_test("numeric", 10, 3, DriftOverrides(test="anderson"))
    with pytest.raises(ValueError, match="no drift test"):
        stats.choose_test("other", 10, 3)


def test_drifted_comparisons_are_evidentlys() -> None:
    assert stats.is_drifted("ks", 0.05, 0.05)  # KS: p <= threshold
    assert not stats.is_drifted("chisquare", 0.05, 0.05)  # chi-square and Z: p < threshold
    assert not stats.is_drifted("z", 0.05, 0.05)
    assert stats.is_drifted("wasserstein", 0.1, 0.1)  # distances: >=
    assert not stats.is_drifted("jensenshannon", 0.0999, 0.1)
    assert not stats.is_drifted("psi", math.nan, 0.1)


def _result(drifted: bool, ran: bool = True) -> DriftTest:
    return DriftTest("c", "ks", 0.1 if ran else None, 0.01, 0.05, drifted)


def test_dataset_drift_share() -> None:
    assert stats.dataset_drift([_result(True), _result(False)]).drifted  # 0.5 >= 0.5
    assert not stats.dataset_drift([_result(True), _result(False), _result(False)]).drifted
    skipped = stats.dataset_drift([_result(True), _result(False, ran=False), _result(False, ran=False)])
    assert (skipped.n_columns, skipped.n_drifted, skipped.drifted) == (1, 1, True)
    assert not stats.dataset_drift([]).drifted
    assert stats.dataset_drift([_result(True), _result(False), _result(False)], share=0.3).drifted


def test_data_quality_helpers() -> None:
    change = stats.null_rate_change(10, 100, 30, 100)
    assert (change.reference, change.current, change.change) == (0.1, 0.3, pytest.approx(0.2))
    assert stats.null_rate_change(0, 0, 1, 2).change is None
    assert stats.out_of_range_share([1, 2, 3, 10, np.nan, -np.inf], 0, 5) == pytest.approx(2 / 5)
    assert stats.out_of_range_share([np.nan], 0, 1) is None
    assert stats.unseen_categories(["a", "b"], {"a": 3, "c": 2, "d": 0}) == {"c": 2}
    change_ = stats.schema_change(
        {"a": "numeric", "b": "string", "c": "numeric"}, {"a": "numeric", "b": "numeric", "d": "string"}
    )
    assert (change_.added, change_.removed, change_.retyped) == (("d",), ("c",), {"b": ("string", "numeric")})
    assert change_.changed
    assert not stats.schema_change({"a": "numeric"}, {"a": "numeric"}).changed


def test_drift_test_on_values_end_to_end() -> None:
    rng = np.random.default_rng(11)
    ref, cur = rng.normal(size=500), rng.normal(1, 1, size=500)
    result = stats.drift_test("x", "numeric", ref, cur)
    assert (result.test, result.drifted, result.p_value) == (
        "ks",
        True,
        pytest.approx(st.ks_2samp(ref, cur).pvalue),
    )
    assert result.psi_band == "significant"
    big = stats.drift_test("x", "numeric", rng.normal(size=5000), rng.normal(size=5000))
    assert (big.test, big.drifted) == ("wasserstein", False)
    cats = stats.drift_test("c", "categorical", ["a", "b", "c"] * 400, ["a", "b", "c", "c"] * 300)
    assert cats.test == "jensenshannon"


def test_drift_test_on_empty_or_null_data_is_defined() -> None:
    empty = stats.drift_test("x", "numeric", [1.0, 2.0, 3.0], [])
    assert (empty.statistic, empty.drifted, empty.reason) == (None, False, "no values in the window")
    nulls = stats.drift_test("x", "numeric", [None, np.nan], [1.0])
    assert (nulls.statistic, nulls.drifted, nulls.reason) == (None, False, "no reference values")
