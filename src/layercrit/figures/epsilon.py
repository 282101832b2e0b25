"""Fig. 2: mean criticality of the adversarially trained models against their training budget ε,
with each point's uncertainty and the baseline model as the ε = 0 reference."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from layercrit.figures import common
from layercrit.figures.common import (
    ACCURACY_TEXT,
    architecture_handles,
    architecture_markers,
    architectures,
    capitalized,
    figure_style,
    format_top1,
)
from layercrit.analysis.statistics import cell_text, figure_models, headline_top1, numeric_column

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


def _size_legend_values(values: pd.Series) -> list[float]:
    """Real accuracies for the marker-size key: the smallest, the one nearest the middle, the largest."""
    finite = np.sort(values[np.isfinite(values)].to_numpy(dtype=float))
    if not finite.size:
        return []
    middle = finite[np.argmin(np.abs(finite - (finite[0] + finite[-1]) / 2))]
    return list(dict.fromkeys([finite[0], middle, finite[-1]]))


# What the bars are, and what they leave out: a model is one training run, and another training
# seed moves its mean criticality by more than the reset seeds and images do (the demo measured it).
INTERVAL_LABEL = "95 % interval over reset seeds and images (one training run per model: not over training seeds)"
UNKNOWN_LABEL = "uncertainty unknown (no per-image errors): no interval"
_REFERENCE_COLOR = "#4c4c4c"
_REFERENCE_LINE_CHARS = 80  # at 7 pt about 4.3 in: the axes' width, not more


def _interval(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The 95 % interval of each row's mean criticality (models.csv; NaN where unknown)."""
    return numeric_column(rows, "mean_criticality_ci_low").to_numpy(float), numeric_column(
        rows, "mean_criticality_ci_high"
    ).to_numpy(float)


def _draw_error_bars(ax: Any, x: np.ndarray, y: np.ndarray, rows: pd.DataFrame, color: str) -> bool:
    """Bars from each point's interval, where it is known; whether any was drawn."""
    low, high = _interval(rows)
    known = np.isfinite(low) & np.isfinite(high) & np.isfinite(y)
    if known.any():
        ax.errorbar(x[known], y[known], yerr=[y[known] - low[known], high[known] - y[known]], fmt="none",
                    ecolor=color, elinewidth=0.9, capsize=2.5, alpha=0.8, zorder=1.5)  # fmt: skip
    return bool(known.any())


def _draw_baseline(ax: Any, row: pd.Series, name: str) -> tuple[list[Any], list[str]]:
    """The baseline model (ε = 0) as a dashed line across the axis and its interval as a band;
    its legend handle (line over band) and label."""
    mean = float(numeric_column(row.to_frame().T, "mean_criticality").iloc[0])
    low, high = (float(v[0]) for v in _interval(row.to_frame().T))
    if not np.isfinite(mean):
        return [], []
    ax.axhline(mean, color=_REFERENCE_COLOR, linestyle="--", linewidth=1, zorder=0.5, gid="baseline_reference")
    line = Line2D([], [], color=_REFERENCE_COLOR, linestyle="--", linewidth=1)
    label = f"{name}: the ε = 0 reference, trained without an adversary; dashed: its mean"
    if not (np.isfinite(low) and np.isfinite(high)):
        return [line], [f"{label} (its uncertainty unknown)"]
    ax.axhspan(low, high, color=_REFERENCE_COLOR, alpha=0.12, linewidth=0, zorder=0.4, gid="baseline_interval")
    return [(Patch(color=_REFERENCE_COLOR, alpha=0.12, linewidth=0), line)], [f"{label}, band: its 95 % interval"]


def criticality_vs_epsilon(
    models: pd.DataFrame, out_base: str | Path, *, baseline: str | None = None, title: str | None = None
) -> list[Path]:
    """Fig. 2: mean criticality vs adversarial budget ε of the adversarially trained models.

    As in the paper, one axes: x = ε, y = mean criticality, hue = norm, marker area = the
    ``headline_top1`` (reported ImageNet top-1 where the table has it, else measured; the key
    says which), linear over the data's range (see ``_size_scale``). L∞ budgets are in units of
    1/255, L2 ones in [0, 1] pixel units (the axis label says so); x is logarithmic (see
    ``_epsilon_axis``). Points of one norm are joined in ε order. Figure models only
    (``in_figures``). Raises ``ValueError`` if no such model has a finite ε.

    What the points can say: each has its 95 % interval as a bar (``models.csv``'s
    ``mean_criticality_ci_low`` / ``_high``: reset seeds and images; a legend entry says that it
    does not include other training runs), and the ``baseline`` model, trained without an
    adversary, is the ε = 0 reference: a dashed line across the axis with its interval as a
    band. Where the intervals are unknown (the published results) the legend says so.

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
    base_rows = shown[shown["model"].astype(str) == str(baseline)] if baseline is not None else shown.iloc[:0]
    with figure_style():
        fig = Figure(figsize=(6.6, 4.0 + (0.25 * len(markers) if markers else 0.0)), layout="constrained")
        ax = fig.add_subplot()
        norm_handles, any_interval = [], False
        for norm in norms:
            style = _NORM_STYLE.get(norm, {"label": norm, "color": "#7f7f7f", "marker": "D"})
            for arch, sub in m[m["norm"] == norm].groupby("_arch", sort=False):
                sub = sub.sort_values("epsilon")
                x = sub["epsilon"].to_numpy(dtype=float)
                y = numeric_column(sub, "mean_criticality").to_numpy(dtype=float)
                marker = markers.get(arch, style["marker"])
                ax.plot(x, y, color=style["color"], linewidth=1, alpha=0.6, zorder=1)
                any_interval |= _draw_error_bars(ax, x, y, sub, style["color"])
                ax.scatter(x, y, s=area(sub["_top1"]), color=style["color"], marker=marker,
                           edgecolor="white", linewidth=0.6, zorder=2)  # fmt: skip
            # with several architectures the shape is theirs: the norm's entry is its colour only
            marker = None if markers else style["marker"]
            norm_handles.append(Line2D([], [], color=style["color"], marker=marker, markersize=6,
                                       markeredgecolor="white", linewidth=1, label=style["label"]))  # fmt: skip
        reference: tuple[list[Any], list[str]] = ([], [])
        for _, row in base_rows.iterrows():
            name = cell_text(row.get("display_name")) or str(row["model"])
            arch = architectures(base_rows).iloc[0]
            reference = _draw_baseline(ax, row, f"{name} ({arch})" if markers and arch else name)
        bar = Line2D([], [], color="#7f7f7f", marker="|", markersize=8, linestyle="")
        handles, labels = reference[0] + [bar], reference[1] + [INTERVAL_LABEL if any_interval else UNKNOWN_LABEL]
        _epsilon_axis(ax, m["epsilon"].to_numpy(dtype=float))
        ax.set_xlabel(EPSILON_LABEL)
        ax.set_ylabel("Mean Layer Criticality [%]")
        ax.grid(color="#e5e5e5", linewidth=0.5)
        ax.set_axisbelow(True)
        fig.legend(handles=norm_handles, title="Norm", loc="outside right upper", frameon=False)
        if markers:
            fig.legend(handles=architecture_handles(markers), title="Architecture", loc="outside right center",
                       frameon=False)  # fmt: skip
        sizes = [
            Line2D([], [], linestyle="", marker="o", markersize=math.sqrt(float(area(k))), markerfacecolor="#bbbbbb",
                   markeredgecolor="white", label=f"{format_top1(k, source)}%")
            for k in _size_legend_values(m["_top1"])
        ]
        if sizes:
            fig.legend(handles=sizes, title=capitalized(ACCURACY_TEXT[source]).replace(" on the ", "\non the "),
                       loc="outside right lower", frameon=False, labelspacing=1.3, borderpad=1.0)
        # Below the axes, lines short enough not to run under the legends at the right.
        labels = [textwrap.fill(label, _REFERENCE_LINE_CHARS) for label in labels]
        fig.legend(handles=handles, labels=labels, loc="outside lower left", frameon=False, ncols=1)
        if title:
            fig.suptitle(title)
    return common.save_figure(fig, out_base)
