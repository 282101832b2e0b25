"""Statistics over the tidy tables: which top-1 a models table carries, which models are
adversarially trained, rank correlations (criticality vs accuracy, own vs published), and the
uncertainty of a layer's criticality (confidence intervals, differences from the baseline).

The figures (``layercrit.figures``) draw these numbers and ``correlations.csv`` lists them; this
module computes them and draws nothing (no matplotlib).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from scipy import stats

__all__ = [
    "ACCURACY_SOURCES",
    "CORRELATION_COLUMNS",
    "CRITICALITY_RANGE",
    "MIN_DIFFERENCE",
    "P_METHODS",
    "RankCorrelation",
    "accuracy_correlations",
    "accuracy_sources",
    "adversarial_mask",
    "bool_column",
    "cell_text",
    "criticality_interval",
    "difference_from_baseline",
    "figure_models",
    "headline_top1",
    "numeric_column",
    "rank_correlation",
    "top1_by_source",
]

# --------------------------------------------------------------------------------------------
# Columns as they come back from CSV
# --------------------------------------------------------------------------------------------


def cell_text(value: Any) -> str:
    """A string cell that may have come back from CSV as NaN/None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


def numeric_column(table: pd.DataFrame, column: str) -> pd.Series:
    """A column as floats (NaN where missing or not a number); all-NaN when there is no column."""
    if column not in table:
        return pd.Series(np.nan, index=table.index, dtype=float)
    return pd.to_numeric(table[column], errors="coerce").astype(float)


def bool_column(series: pd.Series) -> pd.Series:
    # in_figures may arrive as bool, 0/1 or "True"/"False" strings after a CSV round trip.
    if series.dtype == bool:
        return series
    mapped = series.map(lambda v: str(v).strip().lower() in ("true", "1", "yes", "1.0"))
    return mapped.astype(bool)


def figure_models(models: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``models`` shown in the figures (``in_figures``; all where the column is absent)."""
    m = models.copy()
    if "in_figures" in m:
        m = m[bool_column(m["in_figures"])]
    return m


# --------------------------------------------------------------------------------------------
# Top-1 accuracy: which one a table carries
# --------------------------------------------------------------------------------------------

# Where a top-1 comes from, headline first: the paper correlates criticality with the zoo's
# reported ImageNet top-1; a study run here also measures top-1 on its own evaluation set.
ACCURACY_SOURCES = ("reported", "measured")


def top1_by_source(models: pd.DataFrame) -> pd.DataFrame:
    """Reported and measured top-1 of every model: columns ``reported`` and ``measured``, NaN
    where a model has none.

    ``models.csv`` carries the zoo's ``reported_top1`` and a ``top1`` whose ``top1_source`` says
    whether it was measured on the evaluation set or is the reported value standing in (the
    published raw results carry no clean accuracy). Tables without ``top1_source`` predate it;
    their ``top1`` is measured.
    """
    top1 = numeric_column(models, "top1")
    source = (
        models["top1_source"].map(cell_text).str.lower()
        if "top1_source" in models
        else pd.Series("measured", index=models.index)
    )
    reported = numeric_column(models, "reported_top1")
    reported = reported.where(np.isfinite(reported), top1.where(source.eq("reported")))
    return pd.DataFrame({"reported": reported, "measured": top1.where(source.eq("measured"))}, index=models.index)


def accuracy_sources(models: pd.DataFrame) -> list[str]:
    """The sources ``models`` has a finite top-1 from, headline (reported) first; ``["measured"]``
    when it has none, so that callers always have one to label."""
    table = top1_by_source(models)
    return [s for s in ACCURACY_SOURCES if np.isfinite(table[s]).any()] or ["measured"]


def headline_top1(models: pd.DataFrame) -> tuple[str, pd.Series]:
    """The top-1 the figures show (reported where the table has it, as in the paper, else measured)
    and its source. Models without a value of that source get NaN: sources are never mixed."""
    source = accuracy_sources(models)[0]
    return source, top1_by_source(models)[source]


def adversarial_mask(models: pd.DataFrame) -> pd.Series:
    """True for adversarially trained models: category ``adversarial`` or a finite ε > 0."""
    idx = models.index
    by_cat = models["category"].astype(str).eq("adversarial") if "category" in models else pd.Series(False, index=idx)
    eps = pd.to_numeric(models["epsilon"], errors="coerce") if "epsilon" in models else pd.Series(np.nan, index=idx)
    by_eps = np.isfinite(eps.astype(float)) & (eps > 0)
    return (by_cat | by_eps).astype(bool)


# --------------------------------------------------------------------------------------------
# Rank correlations
# --------------------------------------------------------------------------------------------

# scipy's default p-values of rank correlations are asymptotic: Spearman's from a t distribution,
# which gives p = 0 for ρ = ±1 at any n (3 models: p = 0 where the exact p is 1/3), Kendall's
# with ties from a normal one. A permutation test needs no approximation: with no association
# every pairing of x with y is equally likely, so the p-value is the share of pairings whose
# statistic is at least as extreme (two-sided: twice the smaller tail, as scipy computes it).
PERMUTATION_RESAMPLES = 9_999  # scipy's default; all n! pairings where n! is not more (n ≤ 7): exact
PERMUTATION_SEED = 0  # more pairings than that are drawn at random, with this seed: the same p every run
# scipy says its asymptotic Spearman p "is only accurate for very large samples (>500
# observations)"; from there on it is used (a permutation test of thousands of points is slow).
ASYMPTOTIC_MIN_N = 501
P_METHODS = {
    "exact": "exact: every one of the n! pairings (or Kendall's exact null distribution)",
    "permutation": f"permutation test, {PERMUTATION_RESAMPLES:,} random pairings (seed {PERMUTATION_SEED}); p ≥ 2/{PERMUTATION_RESAMPLES + 1:,}",
    "asymptotic": f"asymptotic (n ≥ {ASYMPTOTIC_MIN_N})",
}


class RankCorrelation(NamedTuple):
    """A rank correlation, its two-sided p-value and how that was computed (a key of
    ``P_METHODS``; "" where the correlation is undefined)."""

    statistic: float
    pvalue: float
    p_method: str


def _has_ties(values: np.ndarray) -> bool:
    return len(np.unique(values)) < len(values)


def _pairings(n: int) -> tuple[str, stats.PermutationMethod]:
    """How a permutation test of ``n`` pairs runs: exactly (all n! pairings) or on random ones."""
    method = stats.PermutationMethod(n_resamples=PERMUTATION_RESAMPLES, rng=np.random.default_rng(PERMUTATION_SEED))
    return ("exact" if math.factorial(n) <= PERMUTATION_RESAMPLES else "permutation"), method


def _spearman(x: np.ndarray, y: np.ndarray) -> RankCorrelation:
    if len(x) >= ASYMPTOTIC_MIN_N:
        result = stats.spearmanrho(x, y)
        return RankCorrelation(float(result.statistic), float(result.pvalue), "asymptotic")
    kind, method = _pairings(len(x))
    result = stats.spearmanrho(x, y, method=method)
    return RankCorrelation(float(result.statistic), float(result.pvalue), kind)


def _kendall(x: np.ndarray, y: np.ndarray) -> RankCorrelation:
    tau = float(stats.kendalltau(x, y).statistic)
    if len(x) >= ASYMPTOTIC_MIN_N:
        return RankCorrelation(tau, float(stats.kendalltau(x, y, method="asymptotic").pvalue), "asymptotic")
    if not (_has_ties(x) or _has_ties(y)):  # scipy's exact null distribution: every pairing, fast
        return RankCorrelation(tau, float(stats.kendalltau(x, y, method="exact").pvalue), "exact")
    kind, method = _pairings(len(x))  # with ties scipy has no exact p: permute y against x

    def statistic(permuted_y: np.ndarray, axis: int) -> np.ndarray:
        return stats.kendalltau(x, permuted_y, axis=axis).statistic

    result = stats.permutation_test(
        (y,), statistic, permutation_type="pairings", vectorized=True,
        n_resamples=method.n_resamples, rng=method.rng,
    )  # fmt: skip
    return RankCorrelation(tau, float(result.pvalue), kind)


_RANK_TESTS = {"spearman": _spearman, "kendall": _kendall}


def rank_correlation(x: np.ndarray, y: np.ndarray, method: str = "spearman") -> RankCorrelation:
    """Spearman ρ or Kendall τ-b (``method``) of ``x`` and ``y`` with a two-sided p-value that
    is valid at any n: exact for small n, from a permutation test up to ``ASYMPTOTIC_MIN_N``
    pairs, asymptotic beyond (``p_method`` says which; ``P_METHODS``).

    NaN, NaN, "" where it is undefined: fewer than 3 points, a value that is not finite, or
    constant input (scipy would warn and give NaN, or a meaningless value for a NaN).
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 3 or not (np.isfinite(x).all() and np.isfinite(y).all()) or np.ptp(x) == 0 or np.ptp(y) == 0:
        return RankCorrelation(math.nan, math.nan, "")
    return _RANK_TESTS[method](x, y)


def _correlation_row(subset: str, x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    spearman = rank_correlation(x, y, "spearman")
    kendall = rank_correlation(x, y, "kendall")
    return {
        "subset": subset, "n": int(len(x)),
        "spearman_r": spearman.statistic, "spearman_p": spearman.pvalue, "spearman_p_method": spearman.p_method,
        "kendall_tau": kendall.statistic, "kendall_p": kendall.pvalue, "kendall_p_method": kendall.p_method,
    }  # fmt: skip


# The prefix of a correlation subset of one architecture's models ("architecture resnet50").
ARCHITECTURE_SUBSET = "architecture "
CORRELATION_COLUMNS = [
    "accuracy", "subset", "n", "spearman_r", "spearman_p", "spearman_p_method", "kendall_tau", "kendall_p",
    "kendall_p_method", "n_dropped", "dropped",
]  # fmt: skip


def accuracy_correlations(models: pd.DataFrame) -> pd.DataFrame:
    """Rank correlations of mean criticality with top-1 (figure models only), per accuracy source.

    One block of rows per source the table has (``accuracy_sources``): ``reported`` (the zoo's
    ImageNet top-1, the paper's correlation, first) and ``measured`` (on the evaluation set).
    Each block has the subset ``all`` and, where some figure models are adversarially trained,
    ``without_adversarial`` (see ``adversarial_mask``; without any it would repeat ``all``).
    Where the figure models are of several architectures, ``all`` pools them (mean criticalities
    over different layer lists) and one subset ``architecture <id>`` per architecture follows.
    Columns ``CORRELATION_COLUMNS``; each p-value comes with how it was computed, valid at any n
    (``rank_correlation``). NaN statistics for n < 3 or constant input. Models without
    a finite top-1 (of that source) or mean criticality cannot be ranked: they are left out and
    named in ``dropped`` with the reason, never silently.
    """
    m = figure_models(models)
    accuracies = top1_by_source(m)
    y = numeric_column(m, "mean_criticality")
    subsets = {"all": pd.Series(True, index=m.index)}
    if adversarial_mask(m).any():
        subsets["without_adversarial"] = ~adversarial_mask(m)
    if "architecture" in m and m["architecture"].nunique() > 1:
        for arch in dict.fromkeys(m["architecture"]):
            subsets[ARCHITECTURE_SUBSET + arch] = m["architecture"] == arch
    out = []
    for source in accuracy_sources(m):
        x = accuracies[source]
        ok = np.isfinite(x) & np.isfinite(y)
        reasons = _unrankable_reasons(x, y)
        for subset, members in subsets.items():
            row = _correlation_row(subset, x[ok & members].to_numpy(float), y[ok & members].to_numpy(float))
            left_out = [f"{model} ({reasons[i]})" for i, model in m.loc[members & ~ok, "model"].items()]
            out.append({"accuracy": source} | row | {"n_dropped": len(left_out), "dropped": "; ".join(left_out)})
    return pd.DataFrame(out, columns=CORRELATION_COLUMNS)


def _unrankable_reasons(top1: pd.Series, criticality: pd.Series) -> pd.Series:
    """Why a model cannot be ranked ("top-1 not finite", "criticality not finite", both joined)."""

    def reason(a: float, b: float) -> str:
        bad = [("top-1 not finite", not np.isfinite(a)), ("criticality not finite", not np.isfinite(b))]
        return " and ".join(text for text, is_bad in bad if is_bad)

    return pd.Series([reason(a, b) for a, b in zip(top1, criticality)], index=top1.index)


# --------------------------------------------------------------------------------------------
# Uncertainty of a layer's criticality: seeds and images
# --------------------------------------------------------------------------------------------

CONFIDENCE = 0.95
# 100 × (1 − cosine of two probability vectors): a criticality lies in 0…100, and so its mean.
CRITICALITY_RANGE = (0.0, 100.0)


def _t_quantile(df: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return stats.t.ppf(0.5 + CONFIDENCE / 2, df)


def _welch_df(terms: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Welch–Satterthwaite degrees of freedom of a sum of variance terms (variance, its df).
    Infinite where every term is 0 (e.g. a layer whose reset changes nothing): no spread to
    estimate, so the t quantile is the normal one and the interval is the point."""
    total = sum(v for v, _ in terms)
    with np.errstate(divide="ignore", invalid="ignore"):  # a term known to be 0 adds nothing, whatever its df
        return np.where(total == 0, np.inf, total**2 / sum(np.where(v == 0, 0.0, v**2 / d) for v, d in terms))


def criticality_interval(
    mean: np.ndarray,
    seed_std: np.ndarray,
    n_seeds: np.ndarray,
    image_se: np.ndarray,
    n_images: np.ndarray,
    seedless: np.ndarray | bool = False,
) -> dict[str, np.ndarray]:
    """A confidence interval (``CONFIDENCE``) of a layer's criticality, mean over reset seeds,
    that combines the two sources of chance in it.

    - Seeds: the spread of the per-seed criticalities (``seed_std``, ddof=1, over ``n_seeds``)
      gives the variance of their mean, seed_std² / n_seeds.
    - Images: each seed's criticality is a mean over the same ``n_images`` images, with standard
      error ``image_se`` (mean over seeds). Because every seed sees the same images their image
      errors are correlated; the mean of the per-seed SEs is the SE of the seed mean if they
      were perfectly correlated, an upper bound, so the interval errs wide.
    - Together: se² = seed_std² / n_seeds + image_se²; the t quantile uses the Welch–Satterthwaite
      degrees of freedom of the two terms (n_seeds − 1 and n_images − 1).
    - Bounds: the t interval mean ± t·se is cut at ``CRITICALITY_RANGE``. The true criticality
      lies in 0…100, so cutting never removes it: the interval's coverage is unchanged (a
      transform such as the logit would instead stretch the far side without limit where se is
      not small against the distance to the bound, as with 3 seeds near 0).

    - ``seedless``: where the reset draws nothing (mode remove: a block replaced by the identity),
      there is no chance in seeds, and the interval is the images' alone, also with one seed.

    Returns ``se``, ``df``, ``ci_low``, ``ci_high``. NaN where it cannot be known: one seed (no seed
    spread) of a reset that draws, or no image SE (the published results carry none).
    """
    mean, seed_std, image_se = (np.asarray(a, dtype=float) for a in (mean, seed_std, image_se))
    n_seeds, n_images = np.asarray(n_seeds, dtype=float), np.asarray(n_images, dtype=float)
    seed_var = np.where(seedless, 0.0, np.where(n_seeds >= 2, seed_std**2 / n_seeds, np.nan))
    image_var = image_se**2
    se = np.sqrt(seed_var + image_var)
    df = _welch_df([(seed_var, n_seeds - 1), (image_var, n_images - 1)])
    half = _t_quantile(df) * se
    low, high = CRITICALITY_RANGE
    return {"se": se, "df": df, "ci_low": np.clip(mean - half, low, high), "ci_high": np.clip(mean + half, low, high)}


DIFFERENCE_COLUMNS = ["model", "layer", "difference", "difference_se", "difference_df", "significant", "marked"]
# The smallest difference from the baseline, in criticality points, that the difference heatmap
# marks (config figures.min_difference; its schema's default is this value). With thousands of
# images the interval of a difference can be a fraction of a point wide, and a mark on −0.4
# points would claim a difference that nobody would call one: 5 points is 5 % of the scale.
MIN_DIFFERENCE = 5.0


def difference_from_baseline(summary: pd.DataFrame, baseline: str, min_difference: float = MIN_DIFFERENCE) -> pd.DataFrame:
    """Per model × layer of the models with ``baseline``'s layers (in ``summary``'s row order): criticality minus the baseline's, its standard
    error, whether it differs from zero beyond the uncertainty (two-sided, ``CONFIDENCE``:
    ``significant``) and whether it is also at least ``min_difference`` points (``marked``: what
    the difference heatmap marks; a significance test alone says nothing about the size).

    The two models' errors are added as if independent (se² = se_model² + se_baseline², Welch–
    Satterthwaite df from their own dfs). Both were measured on the same images, whose errors are
    positively correlated between the models, so this overstates the uncertainty of the
    difference: a cell marked significant is so at least at this level. No correction for the
    many cells tested together: of the layers that truly do not differ, about 5 % are significant.
    ``significant`` is False where the uncertainty is unknown (``criticality_se`` NaN).
    """
    summary = summary.assign(
        **{c: numeric_column(summary, c) for c in ("criticality_se", "criticality_df")}  # older tables lack them
    )
    layer = ["layer", "layer_type", "kernel"] if {"layer_type", "kernel"} <= set(summary) else ["layer"]
    summary = summary.assign(**{c: summary[c].astype(object).fillna("") for c in layer})  # a linear layer's kernel: "" or NaN from CSV
    base = summary.loc[summary["model"] == baseline, layer + ["criticality_mean", "criticality_se", "criticality_df"]]
    # only models whose layers are the baseline's (its architecture, or one with the same layers;
    # a model missing some results still counts): another architecture's layer of the same name
    # is another layer
    known = set(base[layer].itertuples(index=False, name=None))
    within = summary.groupby("model", sort=False)[layer].apply(lambda g: set(g.itertuples(index=False, name=None)) <= known)
    rows = summary[summary["model"].isin(within.index[within])]
    merged = rows.merge(base, on=layer, suffixes=("", "_baseline"), validate="many_to_one")
    diff = (merged["criticality_mean"] - merged["criticality_mean_baseline"]).to_numpy(float)
    var_m = merged["criticality_se"].to_numpy(float) ** 2
    var_b = merged["criticality_se_baseline"].to_numpy(float) ** 2
    se = np.sqrt(var_m + var_b)
    df = _welch_df([(var_m, merged["criticality_df"].to_numpy(float)), (var_b, merged["criticality_df_baseline"].to_numpy(float))])
    with np.errstate(invalid="ignore"):
        significant = np.isfinite(se) & (np.abs(diff) > _t_quantile(df) * se)
    return pd.DataFrame(
        {"model": merged["model"], "layer": merged["layer"], "difference": diff, "difference_se": se,
         "difference_df": df, "significant": significant.astype(bool),
         "marked": (significant & (np.abs(diff) >= min_difference)).astype(bool)}
    )[DIFFERENCE_COLUMNS]  # fmt: skip
