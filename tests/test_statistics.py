"""Statistics that hold at any n (issue 31, item 5): p-values of rank correlations against exact
values computed here by enumerating every pairing, intervals within criticality's bounds 0–100,
and marks in the difference heatmap that need an effect size as well as significance."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from layercrit.analysis import statistics


def _ranks(values) -> np.ndarray:
    """1 for the smallest value … n for the largest (the data here have no ties)."""
    order = np.argsort(values)
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    return ranks


def _spearman_by_hand(x, y) -> float:
    """ρ = 1 − 6 Σ d² / (n (n² − 1)), d the rank differences (no ties)."""
    n = len(x)
    d = _ranks(x) - _ranks(y)
    return 1 - 6 * float(np.sum(d**2)) / (n * (n**2 - 1))


def _kendall_by_hand(x, y) -> float:
    """τ = (concordant − discordant pairs) / (n choose 2) (no ties)."""
    signs = [np.sign(x[i] - x[j]) * np.sign(y[i] - y[j]) for i, j in itertools.combinations(range(len(x)), 2)]
    return float(sum(signs)) / len(signs)


def _exact_p(x, y, statistic) -> float:
    """Two-sided p over every pairing of y with x: the share of the n! permutations of y whose
    statistic is at least as far from 0 as the observed one."""
    observed = statistic(x, y)
    null = [statistic(x, np.array(permuted)) for permuted in itertools.permutations(y)]
    return sum(abs(t) >= abs(observed) - 1e-12 for t in null) / math.factorial(len(x))


# (x, y) pairs without ties, n = 3, 4, 5: a perfect negative order, weaker ones, one with ρ ≠ τ.
NO_TIES = [
    ([76.2, 77.5, 80.1], [50.4, 45.0, 40.5]),  # n = 3, ρ = τ = −1: p = 2/6
    ([76.2, 77.5, 80.1], [50.4, 59.2, 40.5]),  # n = 3, ρ = −0.5
    ([97.8, 98.2, 97.3, 91.6], [50.4, 54.1, 56.7, 51.9]),  # n = 4 (the demo's L∞ models and baseline)
    ([1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0]),  # n = 4, ρ = −1: p = 2/24
    ([95.7, 97.4, 99.0, 75.9, 26.6], [50.8, 40.5, 51.8, 28.4, 29.1]),  # n = 5
    ([1.0, 2.0, 3.0, 4.0, 5.0], [2.0, 1.0, 4.0, 3.0, 5.0]),  # n = 5, ρ = 0.8, τ = 0.6
]


@pytest.mark.parametrize(("x", "y"), NO_TIES)
def test_rank_correlations_have_the_exact_p_at_small_n(x, y):
    x, y = np.array(x), np.array(y)
    spearman = statistics.rank_correlation(x, y, "spearman")
    kendall = statistics.rank_correlation(x, y, "kendall")
    assert spearman.statistic == pytest.approx(_spearman_by_hand(x, y))
    assert kendall.statistic == pytest.approx(_kendall_by_hand(x, y))
    assert spearman.pvalue == pytest.approx(_exact_p(x, y, _spearman_by_hand))
    assert kendall.pvalue == pytest.approx(_exact_p(x, y, _kendall_by_hand))
    assert spearman.p_method == kendall.p_method == "exact"


def test_three_models_in_perfect_order_have_p_one_third_not_zero():
    """The issue's case: scipy's asymptotic Spearman p was 0.0 at n = 3."""
    models = pd.DataFrame(
        {"model": ["a", "b", "c"], "category": "x", "top1": [76.2, 77.5, 80.1], "mean_criticality": [50.4, 45.0, 40.5]}
    )
    row = statistics.accuracy_correlations(models).iloc[0]
    assert row["n"] == 3 and row["spearman_r"] == pytest.approx(-1.0)
    assert row["spearman_p"] == pytest.approx(1 / 3) and row["kendall_p"] == pytest.approx(1 / 3)
    assert row["spearman_p_method"] == row["kendall_p_method"] == "exact"


def _two_sided_tails(x, y, statistic) -> float:
    """With ties the null distribution need not be symmetric: twice the smaller tail, at most 1
    (scipy's definition of a two-sided permutation p)."""
    observed = statistic(x, y)
    null = np.array([statistic(x, np.array(permuted)) for permuted in itertools.permutations(y)])
    low, high = np.mean(null <= observed + 1e-12), np.mean(null >= observed - 1e-12)
    return min(1.0, 2 * min(low, high))


@pytest.mark.parametrize(
    ("x", "y"),
    [
        ([1.0, 2.0, 3.0, 4.0], [3.0, 3.0, 1.0, 2.0]),
        ([80.1, 80.1, 79.8, 77.6, 79.2], [30.0, 31.0, 35.0, 40.0, 31.0]),  # tied reported top-1, as a1 / a1h
    ],
)
def test_rank_correlations_with_ties_are_exact_permutation_tests(x, y):
    x, y = np.array(x), np.array(y)
    for method, statistic in (
        ("spearman", lambda a, b: stats.spearmanr(a, b).statistic),
        ("kendall", lambda a, b: stats.kendalltau(a, b).statistic),
    ):
        result = statistics.rank_correlation(x, y, method)
        assert result.p_method == "exact"
        assert result.pvalue == pytest.approx(_two_sided_tails(x, y, statistic)), method


def test_larger_n_uses_a_seeded_permutation_test_and_never_reports_p_zero():
    x = np.arange(10.0)
    perfect = statistics.rank_correlation(x, -x, "spearman")
    assert perfect.p_method == "permutation"
    # no random pairing is as extreme: twice (0 + 1) / (resamples + 1), never less; the exact p is
    # 2/10! = 5.5e-7, where scipy's asymptotic one claims about 1e-63
    assert perfect.pvalue == pytest.approx(2 / (statistics.PERMUTATION_RESAMPLES + 1))
    assert stats.spearmanr(x, -x).pvalue < 1e-60
    y = np.array([3.0, 1.0, 4.0, 1.5, 5.0, 9.0, 2.0, 6.0, 5.5, 3.5])
    first, again = statistics.rank_correlation(x, y, "spearman"), statistics.rank_correlation(x, y, "spearman")
    assert first == again  # the random pairings are seeded: the same table on every run
    ties = statistics.rank_correlation(x, np.round(y), "kendall")
    assert ties.p_method == "permutation" and 0 < ties.pvalue <= 1
    no_ties = statistics.rank_correlation(x, y, "kendall")
    assert no_ties.p_method == "exact" and no_ties.pvalue == pytest.approx(stats.kendalltau(x, y, method="exact").pvalue)


def test_the_asymptotic_p_is_used_only_where_scipy_says_it_is_accurate():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=statistics.ASYMPTOTIC_MIN_N), rng.normal(size=statistics.ASYMPTOTIC_MIN_N)
    result = statistics.rank_correlation(x, y, "spearman")
    assert result.p_method == "asymptotic" and result.pvalue == pytest.approx(stats.spearmanr(x, y).pvalue)
    below = statistics.rank_correlation(x[:-1], y[:-1], "spearman")
    assert below.p_method == "permutation"


def test_a_difference_is_marked_only_where_it_is_significant_and_at_least_the_stated_size():
    """Issue 31: the demo marked differences of −0.4 points, significant only because their
    uncertainty was tiny. A mark needs both: beyond the interval, and |difference| ≥ the threshold."""
    summary = pd.DataFrame(
        [
            {"model": m, "layer": layer, "criticality_mean": c, "criticality_se": se, "criticality_df": 1000.0}
            for m, layer, c, se in [
                ("base", "x", 20.0, 0.01), ("base", "y", 50.0, 0.01), ("base", "z", 30.0, 0.01),
                ("m", "x", 19.6, 0.01),  # −0.4, far beyond its interval: significant, too small
                ("m", "y", 60.0, 0.01),  # +10: significant and large
                ("m", "z", 36.0, 20.0),  # +6 within a wide interval: large, not significant
            ]
        ]
    )  # fmt: skip
    tested = statistics.difference_from_baseline(summary, "base", min_difference=5.0).set_index(["model", "layer"])
    assert tested.loc[("m", "x"), "significant"] and not tested.loc[("m", "x"), "marked"]
    assert tested.loc[("m", "y"), "significant"] and tested.loc[("m", "y"), "marked"]
    assert not tested.loc[("m", "z"), "significant"] and not tested.loc[("m", "z"), "marked"]
    every_significant = statistics.difference_from_baseline(summary, "base", min_difference=0.0)
    assert every_significant["marked"].tolist() == every_significant["significant"].tolist()


def test_the_configs_default_threshold_is_the_documented_constant():
    from pathlib import Path

    import yaml

    schema = yaml.safe_load((Path(__file__).parents[1] / "workflow/schemas/config.schema.yaml").read_text())
    default = schema["properties"]["figures"]["properties"]["min_difference"]["default"]
    assert default == statistics.MIN_DIFFERENCE


def test_the_demo_has_significant_differences_below_a_point_that_the_threshold_leaves_unmarked():
    """What the README's Uncertainty section says of the committed demo run (docs/demo/)."""
    from pathlib import Path

    summary = pd.read_csv(Path(__file__).parents[1] / "docs/demo/summary.csv")
    tested = statistics.difference_from_baseline(summary, "demo_baseline")
    tiny = tested[tested.significant & (tested.difference.abs() < 1)]
    assert len(tiny) and not tiny.marked.any()
    assert (tested.marked == tested.significant & (tested.difference.abs() >= statistics.MIN_DIFFERENCE)).all()
