"""Fig. 3: mean criticality per model against top-1 accuracy (with the rank correlations); and this
study's criticality against the published one. (Fig. 2, against the adversarial budget ε, is
``layercrit.figures.epsilon``.)"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from layercrit.figures import common
from layercrit.figures.common import (
    ACCURACY_TEXT,
    architecture_handles,
    architecture_markers,
    architectures,
    capitalized,
    category_table,
    figure_style,
    ordered_models,
)
from layercrit.analysis.replication import agreement
from layercrit.analysis.statistics import ARCHITECTURE_SUBSET, accuracy_correlations, headline_top1, numeric_column


def _fmt_r(r: float) -> str:
    return f"{r:.2f}".replace("-", "\u2212") if np.isfinite(r) else "n/a"  # typographic minus


def _fmt_p(p: float, method: str) -> str:
    """A p-value and how it was computed ("exact", "permutation", "asymptotic": statistics.P_METHODS)."""
    if not np.isfinite(p):
        return "p = n/a"
    return (f"p = {p:.2g}" if p >= 1e-3 else f"p = {p:.1e}") + f", {method}"


def _correlation_text(corr: pd.DataFrame) -> str:
    """The correlations as lines, one heading per accuracy source (the plotted one first)."""
    architectures = corr.loc[corr["subset"].str.startswith(ARCHITECTURE_SUBSET), "subset"].nunique()
    pooled = f"all models, pooled over {architectures} architectures" if architectures else "all models"
    names = {"all": pooled, "without_adversarial": "w/o adversarial"}
    lines = []
    for k, (source, block) in enumerate(corr.groupby("accuracy", sort=False)):
        notes = (["x axis"] if k == 0 else []) + (["as in the paper"] if source == "reported" else [])
        lines.append(f"vs {ACCURACY_TEXT[source]}" + (f" ({'; '.join(notes)})" if notes else "") + ", Spearman ρ and Kendall τ (two-sided p):")
        lines += [
            f"    {names.get(r.subset, r.subset.removeprefix(ARCHITECTURE_SUBSET) + ' only')} (n={r.n}"
            + (f"; {r.n_dropped} left out, not finite" if r.n_dropped else "")
            + f"): ρ = {_fmt_r(r.spearman_r)} ({_fmt_p(r.spearman_p, r.spearman_p_method)}), "
            f"τ = {_fmt_r(r.kendall_tau)} ({_fmt_p(r.kendall_p, r.kendall_p_method)})"
            for r in block.itertuples(index=False)
            # an architecture's own line only where it can have a correlation (3 models or more)
            if not (r.subset.startswith(ARCHITECTURE_SUBSET) and r.n < 3)
        ]
    return "\n".join(lines)


def criticality_vs_accuracy(
    models: pd.DataFrame,
    categories: Sequence[Mapping[str, Any]],
    out_base: str | Path,
    *,
    title: str | None = None,
) -> list[Path]:
    """Fig. 3: mean criticality vs top-1, coloured by category, with Spearman ρ and Kendall τ
    (and p-values) for all figure models and without the adversarially trained ones.

    x is the ``headline_top1``: the reported ImageNet top-1 where the table has it (the paper's
    correlation), else the measured one; the axis label says which. Where both exist, the
    correlations with the measured top-1 are given below the headline ones.

    Mean criticalities of different architectures are numbers on one scale and are correlated
    together; where the figure models are of more than one architecture, each has its own marker
    shape, with a second legend, so that a reader can tell which point is which.
    """
    m = ordered_models(models, categories)
    source, x = headline_top1(m)
    y = numeric_column(m, "mean_criticality")
    arch = architectures(m)
    markers = architecture_markers(arch)
    text = _correlation_text(accuracy_correlations(models))
    text = f"{title}\n{text}" if title else text
    text_h = 0.14 * (text.count("\n") + 1) + 0.05  # inches: lines of 7 pt
    with figure_style():
        fig = Figure(figsize=(6.8, 4.2 + text_h), layout="constrained")
        # The statistics in a subfigure of their own above the plot and its legends, across the
        # whole width: never inside the axes, where they could hide a point, nor over a legend.
        stats_fig, plot = fig.subfigures(2, 1, height_ratios=[text_h, 4.2])
        stats_fig.text(0.01, 1.0, text, ha="left", va="top", fontsize=7, gid="correlations")
        ax = plot.add_subplot()
        for cat in dict.fromkeys(m["category"]):
            in_cat = (m["category"] == cat).to_numpy()
            color, label = m.loc[in_cat, "category_color"].iloc[0], m.loc[in_cat, "category_label"].iloc[0]
            for a in dict.fromkeys(arch[in_cat]):
                sel = in_cat & (arch == a).to_numpy()
                ax.scatter(x[sel], y[sel], s=34, color=color, marker=markers.get(a, "o"), edgecolor="white",
                           linewidth=0.6, label=label, zorder=2)  # fmt: skip
        ax.set_xlabel(f"{capitalized(ACCURACY_TEXT[source])} [%]")
        ax.set_ylabel("Mean Layer Criticality [%]")
        ax.grid(color="#e5e5e5", linewidth=0.5)
        ax.set_axisbelow(True)
        if markers:
            # one circle per category (the shapes have their own legend)
            categories_seen = dict(zip(m["category_label"], m["category_color"]))
            handles = [
                Line2D([], [], linestyle="", marker="o", markersize=6, markerfacecolor=color, markeredgecolor="white",
                       label=label)
                for label, color in categories_seen.items()
            ]  # fmt: skip
            plot.legend(handles=handles, loc="outside right upper", frameon=False, title="Category")
            plot.legend(handles=architecture_handles(markers), loc="outside right lower", frameon=False,
                        title="Architecture")  # fmt: skip
        else:
            plot.legend(loc="outside right center", frameon=False, title="Category")
    return common.save_figure(fig, out_base)


# --------------------------------------------------------------------------------------------
# Replication against the published results
# --------------------------------------------------------------------------------------------


def replication_figure(
    points: pd.DataFrame,
    by_model: pd.DataFrame,
    categories: Sequence[Mapping[str, Any]],
    out_base: str | Path,
    *,
    highlight: int = 5,
) -> list[Path]:
    """Own vs published criticality: every model × layer as a point (left, coloured by category,
    the ``highlight`` most disagreeing models' points outlined and named) and per model the mean
    absolute difference with Spearman ρ over layers (right, most disagreeing on top).

    Inputs are ``replication.replication_points`` and ``replication.replication_by_model``.
    """
    cats = category_table(categories, by_model).set_index("id")
    category_of = by_model.set_index("model")["category"].astype(str)
    worst = by_model["model"].head(highlight).tolist()
    overall = agreement(points)
    n_models = len(by_model)
    with figure_style():
        fig = Figure(figsize=(10.5, max(4.2, 1.0 + 0.17 * n_models)), layout="constrained")
        left, right = fig.subplots(1, 2, width_ratios=[1.15, 1])
        x = points["criticality_published"].to_numpy(float)
        y = points["criticality_own"].to_numpy(float)
        finite = np.isfinite(x) & np.isfinite(y)
        top = float(max(x[finite].max(), y[finite].max())) if finite.any() else 1.0
        hi = max(5.0, math.ceil(top * 1.03 / 5) * 5)  # next multiple of 5: no empty half-plot
        left.plot([0, hi], [0, hi], color="#7f7f7f", linestyle="--", linewidth=0.8, zorder=1, label="own = published")
        point_category = points["model"].map(category_of)
        for cat in [c for c in cats.index if c in set(category_of)]:  # legend in the zoo's category order
            sel = point_category.eq(cat).to_numpy()
            left.scatter(x[sel], y[sel], s=9, color=cats.at[cat, "color"], alpha=0.55, linewidth=0,
                         label=cats.at[cat, "label"], zorder=2)
        markers = ["o", "s", "^", "D", "v", "P", "X", "*"]
        for k, model in enumerate(worst):
            sel = (points["model"] == model).to_numpy()
            name = by_model.loc[by_model["model"] == model, "display_name"].iloc[0]
            left.scatter(x[sel], y[sel], s=22, facecolor="none", edgecolor="black", linewidth=0.6,
                         marker=markers[k % len(markers)], label=f"#{k + 1} {name}", zorder=3)
        left.set_xlim(-0.02 * hi, hi)  # a little room: points at 0 are not cut in half
        left.set_ylim(-0.02 * hi, hi)
        left.set_aspect("equal")
        left.set_xlabel("Published criticality [%]")
        left.set_ylabel("This run's criticality [%]")
        left.set_title(
            f"{len(points)} model × layer pairs, {n_models} models: Spearman ρ = {_fmt_r(overall['spearman_r'])}, "
            f"mean |Δ| = {overall['mean_abs_difference']:.2f}",
            loc="left",
        )
        left.grid(color="#e5e5e5", linewidth=0.5)
        left.set_axisbelow(True)
        left.legend(loc="upper left", frameon=False, fontsize=6, markerscale=1.2)

        bars = by_model.iloc[::-1]  # barh draws bottom-up: most disagreeing on top
        ypos = np.arange(len(bars))
        mad = bars["mean_abs_difference"].to_numpy(float)
        right.barh(ypos, np.nan_to_num(mad), color=bars["model"].map(category_of).map(cats["color"]).tolist(), height=0.7)
        right.set_yticks(ypos, bars["display_name"].astype(str).tolist())
        for yi, (m, r) in enumerate(zip(mad, bars["spearman_r"])):
            right.text(m if np.isfinite(m) else 0, yi, f"  ρ={_fmt_r(r)}", va="center", fontsize=6)
        right.set_xlim(0, (np.nanmax(mad) if np.isfinite(mad).any() else 1) * 1.25)
        right.set_ylim(-0.6, len(bars) - 0.4)
        right.set_xlabel("Mean |own − published| over layers [% points]")
        right.set_title("Per model (ρ: Spearman over layers)", loc="left")
        right.grid(axis="x", color="#e5e5e5", linewidth=0.5)
        right.set_axisbelow(True)
    return common.save_figure(fig, out_base)


def trial_replication_figure(
    points: pd.DataFrame,
    spread: pd.Series,
    by_model: pd.DataFrame,
    tolerance: float,
    out_base: str | Path,
) -> list[Path]:
    """Per-trial replication (seed scheme authors): left, the distribution of |own − published|
    over every (model, layer, trial) beside that of two published trials of one layer (the
    seed-to-seed spread), on a log axis with the tolerance marked; right, each model's largest
    |residual|, the models beyond the tolerance in red and named in the title.

    Inputs are ``replication.trial_points``, ``replication.seed_to_seed_spread`` and
    ``replication.trials_by_model``.
    """
    floor = 1e-7  # |Δ| at or below it (exact zeros included) is drawn in the first bin
    residual = points["residual"].abs().to_numpy(float)
    finite = residual[np.isfinite(residual)]
    spread_values = spread.to_numpy(float)
    spread_values = spread_values[np.isfinite(spread_values)]
    top = max(100.0, float(np.max(finite, initial=0)), float(np.max(spread_values, initial=0)))
    bins = np.logspace(math.log10(floor), math.log10(top), 57)
    beyond = by_model[by_model["beyond_tolerance"]]
    with figure_style():
        fig = Figure(figsize=(10.5, max(4.2, 1.0 + 0.17 * len(by_model))), layout="constrained")
        left, right = fig.subplots(1, 2, width_ratios=[1.3, 1])
        for values, label, color in (
            (spread_values, f"two published trials of a layer ({len(spread_values)} pairs)", "#9e9e9e"),
            (finite, f"this run − published, same trial ({len(finite)})", "#1f77b4"),
        ):
            if len(values):
                left.hist(np.clip(values, floor, None), bins=bins, weights=np.full(len(values), 1 / len(values)),
                          color=color, alpha=0.6, label=label)  # fmt: skip
        left.axvline(tolerance, color="#d62728", linestyle="--", linewidth=0.9, label=f"tolerance {tolerance:g}")
        left.set_xscale("log")
        left.set_xlabel(f"|difference in criticality| [% points] (≤ {floor:g} drawn at {floor:g})")
        left.set_ylabel("Fraction of comparisons")
        n_nan = int(np.isnan(residual).sum())
        left.set_title(
            f"{len(points)} (model, layer, trial) comparisons: median |Δ| = {np.median(finite) if len(finite) else float('nan'):.1e}"
            + (f", {n_nan} undefined (NaN)" if n_nan else ""),
            loc="left",
        )
        left.legend(loc="upper left", frameon=False, fontsize=7)
        left.grid(color="#e5e5e5", linewidth=0.5)
        left.set_axisbelow(True)

        bars = by_model.iloc[::-1]  # barh draws bottom-up: largest residual on top
        ypos = np.arange(len(bars))
        largest = np.clip(bars["max_abs_residual"].to_numpy(float), floor, None)
        colors = np.where(bars["beyond_tolerance"], "#d62728", "#1f77b4")
        right.barh(ypos, np.nan_to_num(largest, nan=top), left=floor, color=colors.tolist(), height=0.7)
        right.set_yticks(ypos, bars["display_name"].astype(str).tolist())
        right.axvline(tolerance, color="#d62728", linestyle="--", linewidth=0.9)
        right.set_xscale("log")
        right.set_xlim(floor, top * 1.5)
        right.set_ylim(-0.6, len(bars) - 0.4)
        right.set_xlabel("Largest |this run − published| over layers and trials [% points]")
        named = ", ".join(beyond["display_name"].astype(str).head(4)) + (" …" if len(beyond) > 4 else "")
        right.set_title(
            f"{len(beyond)} of {len(by_model)} models beyond the tolerance" + (f": {named}" if len(beyond) else ""),
            loc="left",
            color="#d62728" if len(beyond) else "black",
        )
        right.grid(axis="x", color="#e5e5e5", linewidth=0.5)
        right.set_axisbelow(True)
    return common.save_figure(fig, out_base)
