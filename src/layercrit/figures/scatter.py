"""Figs. 2 and 3: mean criticality per model against the adversarial budget ε and against top-1
accuracy (with the rank correlations); and this study's criticality against the published one."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from layercrit.figures import common
from layercrit.figures.common import (
    ACCURACY_TEXT,
    architecture_markers,
    architecture_name,
    architectures,
    capitalized,
    category_table,
    figure_style,
    format_top1,
    ordered_models,
)
from layercrit.replication import agreement
from layercrit.statistics import ARCHITECTURE_SUBSET, accuracy_correlations, cell_text, figure_models, headline_top1, numeric_column

_NORM_STYLE = {
    # Circles for both: marker area encodes accuracy, and a square of the same size has more area.
    "l2": {"label": "L2", "color": "#1f77b4", "marker": "o"},
    # Madry-lab L∞ budgets are given in units of 1/255 of the [0, 1] pixel range.
    "linf": {"label": "L∞ (ε in 1/255)", "color": "#d62728", "marker": "o"},
}
EPSILON_LABEL = "Adversarial training budget ε (L2; L∞ in units of 1/255)"


def _size_scale(values: pd.Series, smin: float = 30.0, smax: float = 220.0) -> Any:
    """Marker area (pt²) from accuracy: linear over the data's range (as seaborn's ``size=``),
    since areas strictly ∝ top-1 would make 55 % vs 76 % nearly indistinguishable."""
    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)

    def area(v: Any) -> Any:
        v = np.asarray(v, dtype=float)
        if hi <= lo:
            return np.where(np.isfinite(v), (smin + smax) / 2, smin)
        return np.where(np.isfinite(v), smin + (v - lo) / (hi - lo) * (smax - smin), smin)

    return area


def _decade_multiples(decades: range, mantissas: tuple[int, ...], lo: float, hi: float) -> list[float]:
    """m × 10^d for the given decades and mantissas, within [lo, hi] (float-safe: "5e-2" not 5 × 0.01)."""
    values = [float(f"{m}e{d}") for d in decades for m in mantissas]
    return [v for v in values if lo * (1 - 1e-9) <= v <= hi * (1 + 1e-9)]


def _epsilon_axis(ax: Any, eps: np.ndarray) -> None:
    """A log ε axis (symlog, linear up to the smallest positive ε, when an ε = 0 model is there),
    ticked and bounded at 1, 2, 5 × 10^k: the budgets span decades, and ticks at the budgets
    themselves would collide (0.03 / 0.05, 3 / 4 / 5)."""
    positive = eps[eps > 0]
    if not positive.size:
        return  # only ε = 0 models: a linear axis is all there is to show
    has_zero = bool((eps <= 0).any())
    lo_eps, hi_eps = float(positive.min()), float(positive.max())
    if has_zero:
        ax.set_xscale("symlog", linthresh=lo_eps, linscale=0.6)
    else:
        ax.set_xscale("log")
    decades = range(math.floor(math.log10(lo_eps)) - 1, math.ceil(math.log10(hi_eps)) + 1)
    nice = _decade_multiples(decades, (1, 2, 5), 0.0, math.inf)
    first = max(t for t in nice if t <= lo_eps * (1 + 1e-9))
    last = min(t for t in nice if t >= hi_eps * (1 - 1e-9))
    if last <= first and not has_zero:  # a single budget, on a tick: widen to its neighbours
        first, last = nice[nice.index(first) - 1], nice[nice.index(last) + 1]
    # No positive ticks inside the linear part of a symlog axis: they would be squeezed together.
    major = _decade_multiples(decades, (1, 2, 5), lo_eps if has_zero else first, last)
    if len(major) < 3:  # a narrow range has room for the budgets themselves
        major = sorted(set(major) | set(np.unique(positive).tolist()))
    minor = _decade_multiples(decades, (3, 4, 6, 7, 8, 9), major[0], last)
    ax.set_xticks(([0.0] if has_zero else []) + major, (["0"] if has_zero else []) + [f"{t:g}" for t in major])
    ax.xaxis.set_minor_locator(mpl.ticker.FixedLocator(minor))
    ax.xaxis.set_minor_formatter(mpl.ticker.NullFormatter())
    # Limits at the outer ticks plus a little room in scaled coordinates, so no marker is cut.
    scale = ax.xaxis.get_transform()
    a, b = scale.transform([0.0 if has_zero else first, last])
    pad = 0.04 * (b - a)
    ax.set_xlim(*scale.inverted().transform([a - pad, b + pad]))
    ax.margins(y=0.1)


def _architecture_handles(markers: dict[str, str], size: float = 6.0) -> list[Line2D]:
    """Legend entries for the marker shapes (grey: colour says something else)."""
    return [
        Line2D([], [], linestyle="", marker=marker, markersize=size, markerfacecolor="#7f7f7f",
               markeredgecolor="white", label=architecture_name(arch))
        for arch, marker in markers.items()
    ]  # fmt: skip


def _size_legend_values(values: pd.Series) -> list[float]:
    """Real accuracies for the marker-size key: the smallest, the one nearest the middle, the largest."""
    finite = np.sort(values[np.isfinite(values)].to_numpy(dtype=float))
    if not finite.size:
        return []
    middle = finite[np.argmin(np.abs(finite - (finite[0] + finite[-1]) / 2))]
    return list(dict.fromkeys([finite[0], middle, finite[-1]]))


def criticality_vs_epsilon(models: pd.DataFrame, out_base: str | Path, *, title: str | None = None) -> list[Path]:
    """Fig. 2: mean criticality vs adversarial budget ε of the adversarially trained models.

    As in the paper, one axes: x = ε, y = mean criticality, hue = norm, marker area = the
    ``headline_top1`` (reported ImageNet top-1 where the table has it, else measured; the key
    says which), linear over the data's range (see ``_size_scale``). L∞ budgets are in units of 1/255, L2 ones in [0, 1] pixel units (the axis
    label says so); x is logarithmic (see ``_epsilon_axis``). Points of one norm are joined in ε
    order. Figure models only (``in_figures``). Raises ``ValueError`` if no such model has a
    finite ε.

    Where the plotted models are of more than one architecture, each has its own marker shape
    (an "Architecture" legend) and the lines join the points of one norm and one architecture
    only: a mean criticality is a number on the same scale for every architecture, but a line
    from a ResNet's ε = 1 to a ViT's ε = 4 would read as a trend that neither has. (Shapes of
    one area differ slightly in how large they look; the size key is in circles.)
    """
    shown = figure_models(models)
    source, top1 = headline_top1(shown)  # chosen over all figure models, as Fig. 3's
    eps = numeric_column(shown, "epsilon")
    m = shown.assign(epsilon=eps, _top1=top1, _arch=architectures(shown))[np.isfinite(eps)]
    if m.empty:
        raise ValueError("criticality_vs_epsilon: no adversarially trained models (no finite epsilon)")
    norm_col = m["norm"] if "norm" in m else pd.Series("", index=m.index)
    m = m.assign(norm=[(cell_text(n).lower() or "unknown") for n in norm_col])
    norms = [n for n in ("l2", "linf") if n in set(m["norm"])] + sorted(set(m["norm"]) - {"l2", "linf"})
    markers = architecture_markers(m["_arch"])
    area = _size_scale(m["_top1"])
    with figure_style():
        fig = Figure(figsize=(6.6, 3.6 + (0.25 * len(markers) if markers else 0.0)), layout="constrained")
        ax = fig.add_subplot()
        norm_handles = []
        for norm in norms:
            style = _NORM_STYLE.get(norm, {"label": norm, "color": "#7f7f7f", "marker": "D"})
            for arch, sub in m[m["norm"] == norm].groupby("_arch", sort=False):
                sub = sub.sort_values("epsilon")
                x = sub["epsilon"].to_numpy(dtype=float)
                y = numeric_column(sub, "mean_criticality").to_numpy(dtype=float)
                marker = markers.get(arch, style["marker"])
                ax.plot(x, y, color=style["color"], linewidth=1, alpha=0.6, zorder=1)
                ax.scatter(x, y, s=area(sub["_top1"]), color=style["color"], marker=marker,
                           edgecolor="white", linewidth=0.6, zorder=2)  # fmt: skip
            # with several architectures the shape is theirs: the norm's entry is its colour only
            marker = None if markers else style["marker"]
            norm_handles.append(Line2D([], [], color=style["color"], marker=marker, markersize=6,
                                       markeredgecolor="white", linewidth=1, label=style["label"]))  # fmt: skip
        _epsilon_axis(ax, m["epsilon"].to_numpy(dtype=float))
        ax.set_xlabel(EPSILON_LABEL)
        ax.set_ylabel("Mean Layer Criticality [%]")
        ax.grid(color="#e5e5e5", linewidth=0.5)
        ax.set_axisbelow(True)
        fig.legend(handles=norm_handles, title="Norm", loc="outside right upper", frameon=False)
        if markers:
            fig.legend(handles=_architecture_handles(markers), title="Architecture", loc="outside right center",
                       frameon=False)  # fmt: skip
        sizes = [
            Line2D([], [], linestyle="", marker="o", markersize=math.sqrt(float(area(k))), markerfacecolor="#bbbbbb",
                   markeredgecolor="white", label=f"{format_top1(k, source)}%")
            for k in _size_legend_values(m["_top1"])
        ]
        if sizes:
            fig.legend(handles=sizes, title=capitalized(ACCURACY_TEXT[source]).replace(" on the ", "\non the "),
                       loc="outside right lower", frameon=False, labelspacing=1.3, borderpad=1.0)
        if title:
            fig.suptitle(title)
    return common.save_figure(fig, out_base)


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
    with figure_style():
        fig = Figure(figsize=(6.4, 4.2 + 0.12 * text.count("\n")), layout="constrained")
        ax = fig.add_subplot()
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
            fig.legend(handles=handles, loc="outside right upper", frameon=False, title="Category")
            fig.legend(handles=_architecture_handles(markers), loc="outside right lower", frameon=False,
                       title="Architecture")  # fmt: skip
        else:
            fig.legend(loc="outside right center", frameon=False, title="Category")
        # Statistics above the axes (not inside), where they can never hide a point.
        ax.set_title(text, fontsize=7, loc="left")
        if title:
            fig.suptitle(title)
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
