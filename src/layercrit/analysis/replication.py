"""Replication: this study's layer criticality against the authors' published results.

Both inputs are ``summary`` tables (one row per model × layer, criticality mean and std over
seeds). Only the model × layer pairs present in both are compared. A re-run on the same models
should agree layer by layer up to seed noise; a model whose ranking of layers (Spearman over
layers) or level (mean absolute difference) departs from the published one points at a
different checkpoint, preprocessing or evaluation subset.

Non-finite criticalities are kept as NaN (no silent dropping): a model with one makes its
statistics NaN, and ``n_nonfinite`` says how many of its layers lack a value.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from layercrit.analysis.statistics import rank_correlation

POINT_COLUMNS = [
    "model", "layer", "layer_index", "layer_type", "kernel",
    "criticality_own", "criticality_published", "difference", "std_own", "std_published", "n_seeds_own", "n_seeds_published",
]  # fmt: skip


def replication_points(own: pd.DataFrame, published: pd.DataFrame) -> pd.DataFrame:
    """Model × layer pairs present in both summaries, own order; ``difference`` = own − published."""
    keys = ["model", "layer"]
    theirs = published[keys + ["criticality_mean", "criticality_std", "n_seeds"]]
    points = own.merge(theirs, on=keys, how="inner", suffixes=("_own", "_published"), validate="one_to_one")
    points = points.rename(
        columns={
            "criticality_mean_own": "criticality_own",
            "criticality_mean_published": "criticality_published",
            "criticality_std_own": "std_own",
            "criticality_std_published": "std_published",
        }
    )
    points["difference"] = points["criticality_own"] - points["criticality_published"]
    return points[POINT_COLUMNS].reset_index(drop=True)


def agreement(points: pd.DataFrame) -> dict[str, float | str]:
    """Spearman ρ (and p, with how it was computed) between own and published criticality, and
    the mean absolute difference."""
    x = points["criticality_published"].to_numpy(float)
    y = points["criticality_own"].to_numpy(float)
    rho = rank_correlation(x, y, "spearman")  # NaN for fewer than 3 pairs, constant input or a missing value
    diff = points["difference"]
    return {
        "spearman_r": rho.statistic,
        "spearman_p": rho.pvalue,
        "spearman_p_method": rho.p_method,
        "mean_abs_difference": float(diff.abs().mean(skipna=False)),
        "mean_difference": float(diff.mean(skipna=False)),
    }


def replication_by_model(points: pd.DataFrame, models: pd.DataFrame) -> pd.DataFrame:
    """One row per compared model, most disagreeing first (largest mean absolute difference).

    Columns: model, display_name, category, n_layers, n_nonfinite, own and published mean
    criticality, ``agreement`` statistics, the layer with the largest absolute difference and its
    signed difference (``largest_difference``, own − published), and
    ``disagreement_rank`` (1 = disagrees most).
    """
    info = models.set_index("model")
    rows = []
    for model, sub in points.groupby("model", sort=False):
        worst = sub["difference"].abs().idxmax() if sub["difference"].notna().any() else None
        rows.append(
            {
                "model": model,
                "display_name": info.at[model, "display_name"] if model in info.index else model,
                "category": info.at[model, "category"] if model in info.index else "",
                "n_layers": len(sub),
                "n_nonfinite": int(sub[["criticality_own", "criticality_published"]].isna().any(axis=1).sum()),
                "own_mean_criticality": float(sub["criticality_own"].mean(skipna=False)),
                "published_mean_criticality": float(sub["criticality_published"].mean(skipna=False)),
                **agreement(sub),
                "largest_difference": float(sub.at[worst, "difference"]) if worst is not None else np.nan,
                "largest_difference_layer": sub.at[worst, "layer"] if worst is not None else "",
            }
        )
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    # NaN statistics sort last: an undefined comparison is not evidence of disagreement
    table = table.sort_values("mean_abs_difference", ascending=False, kind="stable", na_position="last")
    table.insert(1, "disagreement_rank", range(1, len(table) + 1))
    return table.reset_index(drop=True)


# Per trial (reset.seed_scheme authors, where seed t is the authors' trial t): the residual of
# each (model, layer, trial) is float noise when the draws are theirs, while two different draws
# of one layer differ by points.
TRIAL_COLUMNS = ["model", "layer", "layer_index", "seed", "criticality_own", "criticality_published", "residual"]


def trial_points(own_resets: pd.DataFrame, published_resets: pd.DataFrame) -> pd.DataFrame:
    """(model, layer, trial) triples present in both reset tables, own order; ``residual`` =
    own − published criticality of the same trial."""
    keys = ["model", "layer", "seed"]
    own = own_resets[keys + ["layer_index", "criticality"]]
    theirs = published_resets[keys + ["criticality"]]
    points = own.merge(theirs, on=keys, how="inner", suffixes=("_own", "_published"), validate="one_to_one")
    points["residual"] = points["criticality_own"] - points["criticality_published"]
    return points[TRIAL_COLUMNS].reset_index(drop=True)


def seed_to_seed_spread(published_resets: pd.DataFrame, pairs: pd.DataFrame) -> pd.Series:
    """|criticality of trial i − trial j| of the published results, over every pair of trials of
    each (model, layer) in ``pairs`` (the compared ones): how far apart two draws of a layer are."""
    compared = published_resets.merge(pairs[["model", "layer"]].drop_duplicates(), on=["model", "layer"])
    both = compared.merge(compared, on=["model", "layer"], suffixes=("_i", "_j"))
    both = both[both["seed_i"] < both["seed_j"]]
    return (both["criticality_i"] - both["criticality_j"]).abs().rename("seed_to_seed").reset_index(drop=True)


def trials_by_model(points: pd.DataFrame, models: pd.DataFrame, tolerance: float) -> pd.DataFrame:
    """One row per compared model, largest |residual| first: how many trials were compared, the
    median and largest |residual| (and where), how many exceed ``tolerance`` and whether any
    does (``beyond_tolerance``); a NaN residual counts as beyond (an undefined comparison)."""
    info = models.set_index("model")
    rows = []
    for model, sub in points.groupby("model", sort=False):
        size = sub["residual"].abs()
        worst = size.idxmax() if size.notna().any() else None
        beyond = int((size.isna() | (size > tolerance)).sum())
        rows.append(
            {
                "model": model,
                "display_name": info.at[model, "display_name"] if model in info.index else model,
                "category": info.at[model, "category"] if model in info.index else "",
                "n_compared": len(sub),
                "median_abs_residual": float(size.median()),
                "max_abs_residual": float(size.max()),
                "max_residual_layer": sub.at[worst, "layer"] if worst is not None else "",
                "max_residual_trial": int(sub.at[worst, "seed"]) if worst is not None else -1,
                "n_beyond_tolerance": beyond,
                "beyond_tolerance": beyond > 0,
            }
        )
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    return table.sort_values("max_abs_residual", ascending=False, kind="stable", na_position="first").reset_index(drop=True)
