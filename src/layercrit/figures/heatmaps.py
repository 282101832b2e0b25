"""Figs. 1, 4 and 5: models × layers heatmaps (criticality, its difference from the baseline
model, its std over seeds) with a category band and mean ± std margins."""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap, Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle
from matplotlib.transforms import blended_transform_factory

from layercrit.figures import common
from layercrit.figures.common import ACCURACY_TEXT, figure_style, ordered_models
from layercrit.statistics import accuracy_sources, cell_text, figure_models

CRITICALITY_LABEL = "Layer Criticality [%]"
# Cells without a finite value are drawn hatched on white: a flat grey would be indistinguishable
# from the neutral middle of ``coolwarm`` (0 difference) in Fig. 4.
NAN_HATCH = "////"
NAN_HATCH_COLOR = "#8c8c8c"
PARTIAL_HATCH = "xxxx"  # margin bars that average only the finite cells of their row or column

# --------------------------------------------------------------------------------------------
# Layer labels
# --------------------------------------------------------------------------------------------

_BLOCK_CONV = re.compile(r"^layer(\d+)\.(\d+)\.(conv\d+)$")
_BLOCK_DOWNSAMPLE = re.compile(r"^layer(\d+)\.(\d+)\.downsample\.\d+$")
_STAGE = re.compile(r"^(?:model\.)?layer(\d+)\.")


def paper_layer_label(layer: str, layer_type: str, kernel: str) -> str:
    """Paper-style column label for a module of a bottleneck ResNet.

    ``conv1`` → ``[0.0] conv:7x7``; ``layer2.3.conv2`` → ``[2.3] conv2:3x3``;
    ``layer1.0.downsample.0`` → ``[1.0] downsample``; ``fc`` → ``[Head] fc``; anything else is
    returned unchanged. A ``model.`` prefix (as in the authors' raw CSV) is tolerated.
    """
    name = cell_text(layer)
    core = name[len("model.") :] if name.startswith("model.") else name
    kernel = cell_text(kernel)
    suffix = f":{kernel}" if kernel else ""
    if core == "conv1":
        return f"[0.0] conv{suffix}"
    if core == "fc":
        return "[Head] fc"
    if m := _BLOCK_CONV.match(core):
        return f"[{m[1]}.{m[2]}] {m[3]}{suffix}"
    if (m := _BLOCK_DOWNSAMPLE.match(core)) and cell_text(layer_type) in ("", "Conv2d"):
        return f"[{m[1]}.{m[2]}] downsample"
    return name


# --------------------------------------------------------------------------------------------
# Tables → ordered matrices
# --------------------------------------------------------------------------------------------


def _layer_table(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per layer in ``layer_index`` order, with its paper-style label."""
    cols = [c for c in ("layer", "layer_index", "layer_type", "kernel") if c in summary]
    layers = summary[cols].copy()
    layers["layer"] = layers["layer"].astype(str)
    layers = layers.sort_values("layer_index", kind="stable").drop_duplicates("layer", keep="first")
    layers["label"] = [
        paper_layer_label(r.layer, getattr(r, "layer_type", ""), getattr(r, "kernel", ""))
        for r in layers.itertuples(index=False)
    ]
    return layers.reset_index(drop=True)


def _pivot(summary: pd.DataFrame, value: str) -> pd.DataFrame:
    if value not in summary:
        raise ValueError(f"summary has no column {value!r}")
    s = summary.assign(model=summary["model"].astype(str), layer=summary["layer"].astype(str))
    dup = s.duplicated(["model", "layer"])
    if dup.any():
        first = s.loc[dup, ["model", "layer"]].iloc[0].tolist()
        raise ValueError(f"summary has duplicate model × layer rows, e.g. {first}")
    return s.pivot(index="model", columns="layer", values=value).astype(float)


def heatmap_matrix(
    summary: pd.DataFrame,
    models: pd.DataFrame,
    categories: Sequence[Mapping[str, Any]],
    value: str = "criticality_mean",
) -> pd.DataFrame:
    """The heatmap's data: rows = figure models (``ordered_models`` order, index = model id),
    columns = layer names in ``layer_index`` order. Missing model × layer cells are NaN."""
    rows = ordered_models(models, categories)["model"].tolist()
    cols = _layer_table(summary)["layer"].tolist()
    wide = _pivot(summary, value)
    return wide.reindex(index=rows, columns=cols).rename_axis(index="model", columns="layer")


# --------------------------------------------------------------------------------------------
# Heatmap drawing
# --------------------------------------------------------------------------------------------


def _nice_ceil(x: float) -> float:
    """Smallest of 1, 2, 2.5, 5 × 10^k that is ≥ x (axis limits that read well)."""
    if not np.isfinite(x) or x <= 0:
        return 1.0
    base = 10 ** math.floor(math.log10(x))
    for step in (1, 2, 2.5, 5, 10):
        if step * base >= x * (1 - 1e-9):
            return step * base
    return 10 * base


def _abs_max(*arrays: np.ndarray) -> float:
    """Largest finite |value| over the arrays; 0 when there is none (all-NaN margins)."""
    vals = np.abs(np.concatenate([np.ravel(a) for a in arrays]))
    vals = vals[np.isfinite(vals)]
    return float(vals.max()) if vals.size else 0.0


def _margin_extent(mean: np.ndarray, std: np.ndarray, bound: tuple[float, float], fixed: bool) -> tuple[float, float]:
    """Axis range of a margin panel. ``fixed``: the values' ``bound`` itself (criticality is
    0–100 by construction, so bars read against the same scale in every study); otherwise the
    data's |mean ± std| rounded up (1/2/2.5/5 × 10^k) and capped at the bound, so that small
    values (differences, seed spreads) stay visible. Symmetric around 0 for a signed bound."""
    lo, hi = bound
    if not fixed:
        hi = min(max(abs(lo), hi), _nice_ceil(_abs_max(mean + std, mean - std)))
        lo = -hi if lo < 0 else 0.0
    return float(lo), float(hi)


def _clipped_whiskers(mean: np.ndarray, std: np.ndarray, extent: tuple[float, float]) -> np.ndarray:
    """Asymmetric error-bar lengths (2 × n) for mean ± std that end at the panel's edges: a
    quantity bounded at 100 cannot spread past it, and a whisker cut by the axes frame would hide
    its cap. The printed "mean ± std" keeps the unclipped std."""
    lo, hi = extent
    below = np.minimum(std, np.maximum(mean - lo, 0.0))
    above = np.minimum(std, np.maximum(hi - mean, 0.0))
    return np.vstack([below, above])


def _nan_stats(values: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and sample std (ddof=1, as pandas) over the finite values, and how many there are;
    NaN where nothing is finite. The figures show the count wherever values were left out."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices / single values
        mean = np.nanmean(values, axis=axis)
        finite = np.isfinite(values).sum(axis=axis)
        std = np.where(finite > 1, np.nanstd(values, axis=axis, ddof=1), np.where(finite == 1, 0.0, np.nan))
    return mean, std, finite


def _hatch(bars: Any, which: np.ndarray) -> None:
    """Hatch the margin bars that average only some of their cells."""
    for bar, partial in zip(bars, which):
        if partial:
            bar.set_hatch(PARTIAL_HATCH)
            bar.set_edgecolor("white")


def _legend_columns(labels: Sequence[str], available_in: float, char_in: float) -> int:
    """Most legend columns whose estimated width fits ``available_in`` inches (≥ 1).

    Matplotlib fills a legend column by column and sizes each column to its widest entry."""
    entry = [len(s) * char_in + 0.45 for s in labels]  # handle + padding ≈ 0.45 in
    for ncol in range(len(labels), 1, -1):
        per_col = math.ceil(len(labels) / ncol)
        width = sum(max(entry[i : i + per_col]) for i in range(0, len(labels), per_col))
        if width <= available_in:
            return ncol
    return 1


# Whiskers end exactly at the panel's edge at most (``_clipped_whiskers``): drawn unclipped, so
# a cap there shows in full instead of being cut in half by the axes frame.
_WHISKERS = {"elinewidth": 0.7, "capsize": 1.2, "ecolor": "#333333", "clip_on": False}


def _draw_heatmap(
    matrix: pd.DataFrame,
    rows: pd.DataFrame,
    col_labels: Sequence[str],
    col_names: Sequence[str],
    *,
    cmap_name: str,
    vmin: float,
    vmax: float,
    cbar_label: str,
    title: str | None,
    value_bound: tuple[float, float],
    fixed_margins: bool,
    row_margin_label: str,
    col_margin_label: str,
    row_label_title: str,
) -> Figure:
    """Heatmap with a category band (left), per-row mean ± std (right) and per-column mean ± std
    (bottom). Laid out in inches so cells keep a legible size whatever the matrix shape;
    ``bbox_inches="tight"`` on saving then crops or extends to the labels.

    ``value_bound``: the range the values can take; margins span it (``fixed_margins``) or the
    data, capped at it (see ``_margin_extent``). ``row_label_title`` heads the row labels (it
    says which accuracy they show)."""
    signed = value_bound[0] < 0
    values = matrix.to_numpy(dtype=float)
    values = np.where(np.isfinite(values), values, np.nan)  # ±inf would saturate silently
    n_rows, n_cols = values.shape
    if n_rows == 0 or n_cols == 0:
        raise ValueError("nothing to plot: no model rows (in_figures) or no layers in summary")
    # Margins average the finite cells only; where a row or column lacks some, say how many it
    # has (in its label) and hatch its bar, so that no margin silently stands for fewer models.
    row_mean, row_std, row_n = _nan_stats(values, axis=1)
    col_mean, col_std, col_n = _nan_stats(values, axis=0)
    anything = bool(np.isfinite(values).any())
    row_partial = (row_n < n_cols) & anything
    col_partial = (col_n < n_rows) & anything
    col_labels = [f"{label} (n={k})" if part else label for label, k, part in zip(col_labels, col_n, col_partial)]

    # Cells: roomy for a small demo, ~0.19 in (≈13.7 pt, 7 pt text fits) for the paper's 50 × 54.
    cw = float(np.clip(10.0 / n_cols, 0.19, 0.34))
    ch = float(np.clip(8.0 / n_rows, 0.19, 0.32))
    hm_w, hm_h = n_cols * cw, n_rows * ch
    # Approximate widths of text blocks (7 pt glyphs ≈ 0.55 em wide) so the panels don't collide.
    char_in = 7 * 0.55 / 72
    label_w = max(len(s) for s in rows["row_label"]) * char_in + 0.15
    col_label_h = max(len(s) for s in col_labels) * char_in + 0.15
    band_w, gap = 0.14, 0.06
    right_w, right_text_w = 1.0, (1.1 if row_partial.any() else 0.75)
    bottom_h = 0.85
    cbar_w = 0.14
    has_nan = bool(np.isnan(values).any())
    partial_label = "margin over the finite cells only (n = their number)"
    legend_labels = list(dict.fromkeys(rows["category_label"])) + (["not finite / missing"] if has_nan else [])
    legend_labels += [partial_label] if (row_partial.any() or col_partial.any()) else []

    x_band = label_w
    x_hm = x_band + band_w + gap
    x_right = x_hm + hm_w + 0.22  # room for the first tick label of the margin below
    x_cbar = x_right + right_w + right_text_w + 0.1
    y_bottom = col_label_h
    y_hm = y_bottom + bottom_h + 0.1
    fig_w = x_cbar + cbar_w + 0.7
    legend_cols = _legend_columns(legend_labels, hm_w + right_w + right_text_w, char_in)
    legend_rows = math.ceil(len(legend_labels) / legend_cols)
    legend_h = 0.06 + 0.18 * legend_rows
    top_h = legend_h + (0.3 if title else 0.05)
    fig_h = y_hm + hm_h + top_h

    fig = Figure(figsize=(fig_w, fig_h))

    def box(x: float, y: float, w: float, h: float) -> list[float]:
        return [x / fig_w, y / fig_h, w / fig_w, h / fig_h]

    ax = fig.add_axes(box(x_hm, y_hm, hm_w, hm_h))
    ax_band = fig.add_axes(box(x_band, y_hm, band_w, hm_h), sharey=ax)
    ax_right = fig.add_axes(box(x_right, y_hm, right_w, hm_h), sharey=ax)
    ax_bottom = fig.add_axes(box(x_hm, y_bottom, hm_w, bottom_h), sharex=ax)

    # Main heatmap. NaN cells are transparent and show a hatched background instead.
    cmap = mpl.colormaps[cmap_name].with_extremes(bad=(0, 0, 0, 0))
    norm = Normalize(vmin=vmin, vmax=vmax)
    ax.add_patch(
        Rectangle(
            (-0.5, -0.5), n_cols, n_rows, facecolor="white", edgecolor=NAN_HATCH_COLOR,
            hatch=NAN_HATCH, linewidth=0, zorder=0.5,
        )
    )
    image = ax.imshow(
        np.ma.masked_invalid(values), cmap=cmap, norm=norm, aspect="auto",
        interpolation="nearest", zorder=1,
    )
    ax.set_xlim(-0.5, n_cols - 0.5)
    ax.set_ylim(n_rows - 0.5, -0.5)
    ax.tick_params(left=False, labelleft=False, bottom=False, labelbottom=False)

    # White rules between category groups and between ResNet stages guide the eye on big grids.
    cats = rows["category"].tolist()
    for i in range(1, n_rows):
        if cats[i] != cats[i - 1]:
            for a in (ax, ax_band):
                a.axhline(i - 0.5, color="white", linewidth=1.2, zorder=3)
    stages = [(_STAGE.match(n)[1] if _STAGE.match(n) else n) for n in col_names]
    for j in range(1, n_cols):
        if stages[j] != stages[j - 1]:
            ax.axvline(j - 0.5, color="white", linewidth=0.8, zorder=3)

    # Category band with the row labels to its left.
    cat_ids = list(dict.fromkeys(cats))
    cat_color = dict(zip(rows["category"], rows["category_color"]))
    cat_label = dict(zip(rows["category"], rows["category_label"]))
    band = np.array([[cat_ids.index(c)] for c in cats])
    ax_band.imshow(
        band, cmap=ListedColormap([cat_color[c] for c in cat_ids]), vmin=-0.5,
        vmax=len(cat_ids) - 0.5, aspect="auto", interpolation="nearest",
    )
    ax_band.set_xticks([])
    ax_band.set_yticks(range(n_rows), rows["row_label"].tolist())
    ax_band.tick_params(axis="y", length=0, pad=3)
    for spine in ax_band.spines.values():
        spine.set_visible(False)
    # Above the row labels, right-aligned with them: what the number in brackets is.
    fig.text(
        (x_band - 0.04) / fig_w, (y_hm + hm_h + 0.05) / fig_h, row_label_title,
        ha="right", va="bottom", fontsize=6.5, style="italic",
    )

    # Right margin: per-row mean ± std over columns, as a bar with error and as numbers.
    ypos = np.arange(n_rows)
    extent = _margin_extent(row_mean, row_std, value_bound, fixed_margins)
    bars = ax_right.barh(
        ypos, row_mean, height=0.72, color=rows["category_color"].tolist(),
        xerr=_clipped_whiskers(row_mean, row_std, extent), error_kw=_WHISKERS,
    )
    _hatch(bars, row_partial)
    ax_right.set_xlim(*extent)
    if signed:
        ax_right.axvline(0, color="#333333", linewidth=0.6)
    ax_right.tick_params(left=False, labelleft=False)
    ax_right.set_xlabel(row_margin_label)
    ax_right.xaxis.set_major_locator(mpl.ticker.MaxNLocator(nbins=2, steps=[1, 2, 2.5, 5, 10]))
    ax_right.grid(axis="x", color="#dddddd", linewidth=0.5)
    ax_right.set_axisbelow(True)
    trans = blended_transform_factory(ax_right.transAxes, ax_right.transData)
    for y, mu, sd, k, part in zip(ypos, row_mean, row_std, row_n, row_partial):
        text = "n/a" if not np.isfinite(mu) else f"{mu:.1f} ± {sd:.1f}"
        text += f" (n={k})" if part and np.isfinite(mu) else ""
        ax_right.text(1.04, y, text, transform=trans, va="center", ha="left", fontsize=6.5)

    # Bottom margin: per-column mean ± std over rows; it carries the column labels.
    xpos = np.arange(n_cols)
    extent = _margin_extent(col_mean, col_std, value_bound, fixed_margins)
    bars = ax_bottom.bar(
        xpos, col_mean, width=0.72, color="#7f7f7f",
        yerr=_clipped_whiskers(col_mean, col_std, extent), error_kw=_WHISKERS,
    )
    _hatch(bars, col_partial)
    ax_bottom.set_ylim(*extent)
    if signed:
        ax_bottom.axhline(0, color="#333333", linewidth=0.6)
    ax_bottom.set_ylabel(col_margin_label)
    ax_bottom.yaxis.set_major_locator(mpl.ticker.MaxNLocator(nbins=2, steps=[1, 2, 2.5, 5, 10]))
    ax_bottom.grid(axis="y", color="#dddddd", linewidth=0.5)
    ax_bottom.set_axisbelow(True)
    ax_bottom.set_xticks(xpos, list(col_labels), rotation=90)
    ax_bottom.tick_params(axis="x", length=2)

    # Colour bar beside the right margin, centred on the heatmap.
    cb_h = min(hm_h, max(1.6, 0.6 * hm_h))
    cax = fig.add_axes(box(x_cbar, y_hm + (hm_h - cb_h) / 2, cbar_w, cb_h))
    fig.colorbar(image, cax=cax, label=cbar_label)

    # Legend above the heatmap: category colours (+ the NaN hatch if any cell is not finite).
    handles: list[Any] = [Patch(facecolor=cat_color[c], label=cat_label[c]) for c in cat_ids]
    if has_nan:
        handles.append(
            Patch(facecolor="white", edgecolor=NAN_HATCH_COLOR, hatch=NAN_HATCH, label="not finite / missing")
        )
    if partial_label in legend_labels:
        handles.append(Patch(facecolor="#bbbbbb", edgecolor="white", hatch=PARTIAL_HATCH, label=partial_label))
    ax.legend(
        handles=handles, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=legend_cols,
        frameon=False, handlelength=1.2, columnspacing=1.2, borderaxespad=0.3,
    )
    if title:
        fig.text(x_hm / fig_w, (y_hm + hm_h + legend_h + 0.05) / fig_h, title, va="bottom", ha="left", fontsize=10, weight="bold")
    return fig


def _heatmap_inputs(
    summary: pd.DataFrame, models: pd.DataFrame, categories: Sequence[Mapping[str, Any]], value: str
) -> tuple[pd.DataFrame, pd.DataFrame, list[str], str]:
    """Matrix, rows, column labels and the row labels' heading (which accuracy is in brackets)."""
    rows = ordered_models(models, categories)
    matrix = heatmap_matrix(summary, models, categories, value)
    labels = _layer_table(summary)["label"].tolist()
    source = accuracy_sources(figure_models(models))[0]  # the one ordered_models' row labels show
    return matrix, rows, labels, f"model [{ACCURACY_TEXT[source]} %]"


CRITICALITY_BOUND = (0.0, 100.0)  # 100 × (1 − cosine of two probability vectors) lies in 0…100
DIFFERENCE_BOUND = (-100.0, 100.0)


def criticality_heatmap(
    summary: pd.DataFrame,
    models: pd.DataFrame,
    categories: Sequence[Mapping[str, Any]],
    out_base: str | Path,
    *,
    value: str = "criticality_mean",
    title: str | None = None,
) -> list[Path]:
    """Fig. 1: models × layers criticality (0–100 %, ``viridis_r``) with category band,
    per-model mean ± std over layers (right) and per-layer mean ± std over models (bottom).

    Margins are computed from the plotted matrix (sample std, ddof=1, NaN cells ignored), so they
    follow ``value``; their axes span criticality's bound 0–100, whiskers clipped there. Row
    labels show the ``headline_top1``. Non-finite cells are drawn hatched. Rows with
    ``in_figures`` False are left out.
    """
    matrix, rows, labels, row_title = _heatmap_inputs(summary, models, categories, value)
    with figure_style():
        fig = _draw_heatmap(
            matrix, rows, labels, matrix.columns.tolist(), cmap_name="viridis_r", vmin=0, vmax=100,
            cbar_label=CRITICALITY_LABEL if value == "criticality_mean" else value, title=title,
            value_bound=CRITICALITY_BOUND, fixed_margins=True, row_margin_label="mean ± std\nover layers [%]",
            col_margin_label="mean ± std\nover models [%]", row_label_title=row_title,
        )
    return common.save_figure(fig, out_base)


def difference_heatmap(
    summary: pd.DataFrame,
    models: pd.DataFrame,
    categories: Sequence[Mapping[str, Any]],
    baseline: str,
    out_base: str | Path,
    *,
    title: str | None = None,
) -> list[Path]:
    """Fig. 4: criticality minus the baseline model's criticality, per layer, in percentage points.

    Fixed range −100…100 (``coolwarm``) as in the paper, so colours compare across studies. The
    baseline row (all zeros by construction) stays, as in the paper: the anchor the others are
    read against. Margin axes are symmetric, data-driven and capped at ±100 so that small
    differences remain visible there.
    """
    wide = _pivot(summary, "criticality_mean")
    if str(baseline) not in wide.index:
        raise ValueError(f"baseline model {baseline!r} has no rows in summary")
    matrix, rows, labels, row_title = _heatmap_inputs(summary, models, categories, "criticality_mean")
    diff = matrix - wide.loc[str(baseline)].reindex(matrix.columns)
    base_name = str(baseline)
    if "display_name" in models:
        hit = models.loc[models["model"].astype(str) == str(baseline), "display_name"]
        base_name = cell_text(hit.iloc[0]) if len(hit) and cell_text(hit.iloc[0]) else base_name
    with figure_style():
        fig = _draw_heatmap(
            diff, rows, labels, diff.columns.tolist(), cmap_name="coolwarm", vmin=-100, vmax=100,
            cbar_label=f"Criticality − {base_name} [pp]", title=title, value_bound=DIFFERENCE_BOUND,
            fixed_margins=False, row_margin_label="mean ± std\nover layers [pp]",
            col_margin_label="mean ± std\nover models [pp]", row_label_title=row_title,
        )
    return common.save_figure(fig, out_base)


def seed_std_heatmap(
    summary: pd.DataFrame,
    models: pd.DataFrame,
    categories: Sequence[Mapping[str, Any]],
    out_base: str | Path,
    *,
    vmax: float = 100.0,
    title: str | None = None,
) -> list[Path]:
    """Fig. 5: std of criticality over seeds (``criticality_std``), ``viridis_r``.

    Colours span the paper's 0–100 by default, so that figures compare across studies; pass a
    smaller ``vmax`` to tell small spreads apart. Margin axes are data-driven (capped at 100):
    spreads over seeds are typically a few percent and would be invisible bars on 0–100.
    Cells from a single seed are NaN.
    """
    matrix, rows, labels, row_title = _heatmap_inputs(summary, models, categories, "criticality_std")
    with figure_style():
        fig = _draw_heatmap(
            matrix, rows, labels, matrix.columns.tolist(), cmap_name="viridis_r", vmin=0, vmax=vmax,
            cbar_label="Std of Layer Criticality over seeds [%]", title=title, value_bound=CRITICALITY_BOUND,
            fixed_margins=False, row_margin_label="mean ± std\nover layers [%]",
            col_margin_label="mean ± std\nover models [%]", row_label_title=row_title,
        )
    return common.save_figure(fig, out_base)
