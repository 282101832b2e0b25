"""The paper's figures: criticality heatmaps (Figs. 1, 4, 5) and model-level scatters (Figs. 2, 3).

Inputs are the aggregation step's tables (see ``heatmap_matrix`` and the plotting functions):
``summary`` (one row per model × layer), ``models`` (one row per model, in display order) and
``categories`` (list of ``{"id", "label", "color"}`` dicts in display order).

Every plotting function writes ``<out_base>.png`` and ``<out_base>.pdf`` and returns their paths.
Figures are built on ``matplotlib.figure.Figure`` directly, never through ``pyplot``: that needs
no GUI backend (so no ``matplotlib.use`` call that would change a caller's backend) and leaves no
global figure registry behind to leak memory across many figures.
"""

from __future__ import annotations

import contextlib
import math
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap, Normalize, to_hex
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from matplotlib.transforms import blended_transform_factory
from scipy import stats

from layercrit.io import atomic_path

__all__ = [
    "ACCURACY_SOURCES",
    "accuracy_correlations",
    "accuracy_sources",
    "adversarial_mask",
    "criticality_heatmap",
    "criticality_vs_accuracy",
    "criticality_vs_epsilon",
    "difference_heatmap",
    "format_top1",
    "headline_top1",
    "heatmap_matrix",
    "ordered_models",
    "paper_layer_label",
    "replication_figure",
    "save_figure",
    "seed_std_heatmap",
    "top1_by_source",
]

PNG_DPI = 200
CRITICALITY_LABEL = "Layer Criticality [%]"
# Cells without a finite value are drawn hatched on white: a flat grey would be indistinguishable
# from the neutral middle of ``coolwarm`` (0 difference) in Fig. 4.
NAN_HATCH = "////"
NAN_HATCH_COLOR = "#8c8c8c"
PARTIAL_HATCH = "xxxx"  # margin bars that average only the finite cells of their row or column
# Fallback colours for categories that bring none (qualitative, colour-blind-friendly order).
_PALETTE = [to_hex(c) for c in mpl.colormaps["tab10"].colors]
_STYLE = {
    "font.size": 8,
    "axes.titlesize": 9,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "pdf.fonttype": 42,  # TrueType in the PDF: text stays editable/searchable
    "hatch.linewidth": 0.6,
}


@contextlib.contextmanager
def _style() -> Iterator[None]:
    # rc_context restores the caller's rcParams afterwards; artists read rc at creation/draw time,
    # so both building and saving happen inside it.
    with mpl.rc_context(_STYLE):
        yield


# --------------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------------


def save_figure(fig: Figure, out_base: str | Path) -> list[Path]:
    """Write ``fig`` to ``<out_base>.png`` and ``<out_base>.pdf`` (atomically) and return the paths.

    ``out_base`` has no suffix; the suffix is appended (not ``with_suffix``) so that names
    containing dots, like ``eps0.5``, survive. The figure is closed afterwards.
    """
    base = str(out_base)
    paths = [Path(base + ".png"), Path(base + ".pdf")]
    try:
        with _style():
            for path in paths:
                fmt = path.suffix[1:]
                with atomic_path(path) as tmp:
                    # The temporary name ends in .tmp, so the format must be given explicitly.
                    fig.savefig(tmp, format=fmt, dpi=PNG_DPI, bbox_inches="tight", pad_inches=0.05)
    finally:
        fig.clear()
    return paths


# --------------------------------------------------------------------------------------------
# Layer labels
# --------------------------------------------------------------------------------------------

_BLOCK_CONV = re.compile(r"^layer(\d+)\.(\d+)\.(conv\d+)$")
_BLOCK_DOWNSAMPLE = re.compile(r"^layer(\d+)\.(\d+)\.downsample\.\d+$")
_STAGE = re.compile(r"^(?:model\.)?layer(\d+)\.")


def _text(value: Any) -> str:
    """A string cell that may have come back from CSV as NaN/None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


def paper_layer_label(layer: str, layer_type: str, kernel: str) -> str:
    """Paper-style column label for a module of a bottleneck ResNet.

    ``conv1`` → ``[0.0] conv:7x7``; ``layer2.3.conv2`` → ``[2.3] conv2:3x3``;
    ``layer1.0.downsample.0`` → ``[1.0] downsample``; ``fc`` → ``[Head] fc``; anything else is
    returned unchanged. A ``model.`` prefix (as in the authors' raw CSV) is tolerated.
    """
    name = _text(layer)
    core = name[len("model.") :] if name.startswith("model.") else name
    kernel = _text(kernel)
    suffix = f":{kernel}" if kernel else ""
    if core == "conv1":
        return f"[0.0] conv{suffix}"
    if core == "fc":
        return "[Head] fc"
    if m := _BLOCK_CONV.match(core):
        return f"[{m[1]}.{m[2]}] {m[3]}{suffix}"
    if (m := _BLOCK_DOWNSAMPLE.match(core)) and _text(layer_type) in ("", "Conv2d"):
        return f"[{m[1]}.{m[2]}] downsample"
    return name


# --------------------------------------------------------------------------------------------
# Top-1 accuracy: which one a table carries
# --------------------------------------------------------------------------------------------

# Where a top-1 comes from, headline first: the paper correlates criticality with the zoo's
# reported ImageNet top-1; a study run here also measures top-1 on its own evaluation set.
ACCURACY_SOURCES = ("reported", "measured")
ACCURACY_TEXT = {"reported": "reported ImageNet top-1", "measured": "measured top-1 on the evaluation set"}
# Reported accuracies keep the two decimals they were published with. Measured ones get one:
# near 75 % the binomial standard error is ≥ 0.4 pp on ≤ 10,000 images (the paper's subset; the
# demo has 1,000), so a second decimal would only show noise.
TOP1_DECIMALS = {"reported": 2, "measured": 1}


def _numeric(table: pd.DataFrame, column: str) -> pd.Series:
    """A column as floats (NaN where missing or not a number); all-NaN when there is no column."""
    if column not in table:
        return pd.Series(np.nan, index=table.index, dtype=float)
    return pd.to_numeric(table[column], errors="coerce").astype(float)


def top1_by_source(models: pd.DataFrame) -> pd.DataFrame:
    """Reported and measured top-1 of every model: columns ``reported`` and ``measured``, NaN
    where a model has none.

    ``models.csv`` carries the zoo's ``reported_top1`` and a ``top1`` whose ``top1_source`` says
    whether it was measured on the evaluation set or is the reported value standing in (the
    published raw results carry no clean accuracy). Tables without ``top1_source`` predate it;
    their ``top1`` is measured.
    """
    top1 = _numeric(models, "top1")
    source = (
        models["top1_source"].map(_text).str.lower()
        if "top1_source" in models
        else pd.Series("measured", index=models.index)
    )
    reported = _numeric(models, "reported_top1")
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


def format_top1(value: float, source: str) -> str:
    """A top-1 in percent with the decimals of its source (``TOP1_DECIMALS``); "n/a" if not finite."""
    return f"{value:.{TOP1_DECIMALS[source]}f}" if np.isfinite(value) else "n/a"


def _capitalized(text: str) -> str:
    return text[:1].upper() + text[1:]  # str.capitalize would lower "ImageNet"


# --------------------------------------------------------------------------------------------
# Tables → ordered matrices
# --------------------------------------------------------------------------------------------


def _as_bool(series: pd.Series) -> pd.Series:
    # in_figures may arrive as bool, 0/1 or "True"/"False" strings after a CSV round trip.
    if series.dtype == bool:
        return series
    mapped = series.map(lambda v: str(v).strip().lower() in ("true", "1", "yes", "1.0"))
    return mapped.astype(bool)


def _category_table(categories: Sequence[Mapping[str, Any]], models: pd.DataFrame) -> pd.DataFrame:
    """Categories in display order with label and colour; unknown model categories appended."""
    rows = [
        {"id": str(c["id"]), "label": _text(c.get("label")) or str(c["id"]), "color": _text(c.get("color"))}
        for c in categories
    ]
    known = {r["id"] for r in rows}
    for cat in models["category"].astype(str).drop_duplicates():
        if cat not in known:  # keep such models visible rather than silently dropping them
            rows.append({"id": cat, "label": cat, "color": ""})
            known.add(cat)
    used = {r["color"].lower() for r in rows if r["color"]}
    free = [c for c in _PALETTE if c.lower() not in used] or _PALETTE
    k = 0
    for r in rows:
        if not r["color"]:
            r["color"] = free[k % len(free)]
            k += 1
    table = pd.DataFrame(rows, columns=["id", "label", "color"])
    table["order"] = range(len(table))
    return table


def ordered_models(
    models: pd.DataFrame, categories: Sequence[Mapping[str, Any]], *, figures_only: bool = True
) -> pd.DataFrame:
    """Models in figure row order: by category (category order), then by their order in ``models``.

    Adds columns ``category_label``, ``category_color`` and ``row_label`` ("name [top-1%]", the
    ``headline_top1`` of the rows kept, in its source's format). With ``figures_only``, rows with
    ``in_figures`` False (controls) are dropped.
    """
    m = models.copy()
    m["model"] = m["model"].astype(str)
    m["category"] = m["category"].astype(str)
    if figures_only and "in_figures" in m:
        m = m[_as_bool(m["in_figures"])]
    cats = _category_table(categories, models).set_index("id")
    m["_pos"] = range(len(m))
    m["_cat_order"] = m["category"].map(cats["order"])
    m = m.sort_values(["_cat_order", "_pos"], kind="stable")
    m["category_label"] = m["category"].map(cats["label"])
    m["category_color"] = m["category"].map(cats["color"])
    names = m["display_name"] if "display_name" in m else m["model"]
    names = [(_text(n) or mid) for n, mid in zip(names, m["model"])]
    source, top1 = headline_top1(m)
    m["row_label"] = [f"{n} [{format_top1(t, source)}%]" if np.isfinite(t) else f"{n} [n/a]" for n, t in zip(names, top1)]
    return m.drop(columns=["_pos", "_cat_order"]).reset_index(drop=True)


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
    source = accuracy_sources(_figure_models(models))[0]  # the one ordered_models' row labels show
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
    with _style():
        fig = _draw_heatmap(
            matrix, rows, labels, matrix.columns.tolist(), cmap_name="viridis_r", vmin=0, vmax=100,
            cbar_label=CRITICALITY_LABEL if value == "criticality_mean" else value, title=title,
            value_bound=CRITICALITY_BOUND, fixed_margins=True, row_margin_label="mean ± std\nover layers [%]",
            col_margin_label="mean ± std\nover models [%]", row_label_title=row_title,
        )
    return save_figure(fig, out_base)


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
        base_name = _text(hit.iloc[0]) if len(hit) and _text(hit.iloc[0]) else base_name
    with _style():
        fig = _draw_heatmap(
            diff, rows, labels, diff.columns.tolist(), cmap_name="coolwarm", vmin=-100, vmax=100,
            cbar_label=f"Criticality − {base_name} [pp]", title=title, value_bound=DIFFERENCE_BOUND,
            fixed_margins=False, row_margin_label="mean ± std\nover layers [pp]",
            col_margin_label="mean ± std\nover models [pp]", row_label_title=row_title,
        )
    return save_figure(fig, out_base)


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
    with _style():
        fig = _draw_heatmap(
            matrix, rows, labels, matrix.columns.tolist(), cmap_name="viridis_r", vmin=0, vmax=vmax,
            cbar_label="Std of Layer Criticality over seeds [%]", title=title, value_bound=CRITICALITY_BOUND,
            fixed_margins=False, row_margin_label="mean ± std\nover layers [%]",
            col_margin_label="mean ± std\nover models [%]", row_label_title=row_title,
        )
    return save_figure(fig, out_base)


# --------------------------------------------------------------------------------------------
# Model-level scatters
# --------------------------------------------------------------------------------------------

_NORM_STYLE = {
    # Circles for both: marker area encodes accuracy, and a square of the same size has more area.
    "l2": {"label": "L2", "color": "#1f77b4", "marker": "o"},
    # Madry-lab L∞ budgets are given in units of 1/255 of the [0, 1] pixel range.
    "linf": {"label": "L∞ (ε in 1/255)", "color": "#d62728", "marker": "o"},
}
EPSILON_LABEL = "Adversarial training budget ε (L2; L∞ in units of 1/255)"


def _figure_models(models: pd.DataFrame) -> pd.DataFrame:
    m = models.copy()
    if "in_figures" in m:
        m = m[_as_bool(m["in_figures"])]
    return m


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


def criticality_vs_epsilon(models: pd.DataFrame, out_base: str | Path, *, title: str | None = None) -> list[Path]:
    """Fig. 2: mean criticality vs adversarial budget ε of the adversarially trained models.

    As in the paper, one axes: x = ε, y = mean criticality, hue = norm, marker area = the
    ``headline_top1`` (reported ImageNet top-1 where the table has it, else measured; the key
    says which), linear over the data's range (see ``_size_scale``). L∞ budgets are in units of 1/255, L2 ones in [0, 1] pixel units (the axis
    label says so); x is logarithmic (see ``_epsilon_axis``). Points of one norm are joined in ε
    order. Figure models only (``in_figures``). Raises ``ValueError`` if no such model has a
    finite ε.
    """
    figure_models = _figure_models(models)
    source, top1 = headline_top1(figure_models)  # chosen over all figure models, as Fig. 3's
    eps = _numeric(figure_models, "epsilon")
    m = figure_models.assign(epsilon=eps, _top1=top1)[np.isfinite(eps)]
    if m.empty:
        raise ValueError("criticality_vs_epsilon: no adversarially trained models (no finite epsilon)")
    norm_col = m["norm"] if "norm" in m else pd.Series("", index=m.index)
    m = m.assign(norm=[(_text(n).lower() or "unknown") for n in norm_col])
    norms = [n for n in ("l2", "linf") if n in set(m["norm"])] + sorted(set(m["norm"]) - {"l2", "linf"})
    area = _size_scale(m["_top1"])
    with _style():
        fig = Figure(figsize=(6.6, 3.6), layout="constrained")
        ax = fig.add_subplot()
        norm_handles = []
        for norm in norms:
            style = _NORM_STYLE.get(norm, {"label": norm, "color": "#7f7f7f", "marker": "D"})
            sub = m[m["norm"] == norm].sort_values("epsilon")
            x = sub["epsilon"].to_numpy(dtype=float)
            y = _numeric(sub, "mean_criticality").to_numpy(dtype=float)
            ax.plot(x, y, color=style["color"], linewidth=1, alpha=0.6, zorder=1)
            ax.scatter(x, y, s=area(sub["_top1"]), color=style["color"], marker=style["marker"],
                       edgecolor="white", linewidth=0.6, zorder=2)
            norm_handles.append(Line2D([], [], color=style["color"], marker=style["marker"], markersize=6,
                                       markeredgecolor="white", linewidth=1, label=style["label"]))
        _epsilon_axis(ax, m["epsilon"].to_numpy(dtype=float))
        ax.set_xlabel(EPSILON_LABEL)
        ax.set_ylabel("Mean Layer Criticality [%]")
        ax.grid(color="#e5e5e5", linewidth=0.5)
        ax.set_axisbelow(True)
        fig.legend(handles=norm_handles, title="Norm", loc="outside right upper", frameon=False)
        sizes = [
            Line2D([], [], linestyle="", marker="o", markersize=math.sqrt(float(area(k))), markerfacecolor="#bbbbbb",
                   markeredgecolor="white", label=f"{format_top1(k, source)}%")
            for k in _size_legend_values(m["_top1"])
        ]
        if sizes:
            fig.legend(handles=sizes, title=_capitalized(ACCURACY_TEXT[source]).replace(" on the ", "\non the "),
                       loc="outside right lower", frameon=False, labelspacing=1.3, borderpad=1.0)
        if title:
            fig.suptitle(title)
    return save_figure(fig, out_base)


def adversarial_mask(models: pd.DataFrame) -> pd.Series:
    """True for adversarially trained models: category ``adversarial`` or a finite ε > 0."""
    idx = models.index
    by_cat = models["category"].astype(str).eq("adversarial") if "category" in models else pd.Series(False, index=idx)
    eps = pd.to_numeric(models["epsilon"], errors="coerce") if "epsilon" in models else pd.Series(np.nan, index=idx)
    by_eps = np.isfinite(eps.astype(float)) & (eps > 0)
    return (by_cat | by_eps).astype(bool)


def _correlation_row(subset: str, x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    row: dict[str, Any] = {"subset": subset, "n": int(len(x))}
    nan = {"spearman_r": np.nan, "spearman_p": np.nan, "kendall_tau": np.nan, "kendall_p": np.nan}
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return row | nan  # undefined for < 3 points or constant input
    rho = stats.spearmanr(x, y)
    tau = stats.kendalltau(x, y)
    return row | {
        "spearman_r": float(rho.statistic), "spearman_p": float(rho.pvalue),
        "kendall_tau": float(tau.statistic), "kendall_p": float(tau.pvalue),
    }


CORRELATION_COLUMNS = [
    "accuracy", "subset", "n", "spearman_r", "spearman_p", "kendall_tau", "kendall_p", "n_dropped", "dropped",
]  # fmt: skip


def accuracy_correlations(models: pd.DataFrame) -> pd.DataFrame:
    """Rank correlations of mean criticality with top-1 (figure models only), per accuracy source.

    One block of rows per source the table has (``accuracy_sources``): ``reported`` (the zoo's
    ImageNet top-1, the paper's correlation, first) and ``measured`` (on the evaluation set).
    Each block has the subsets ``all`` and ``without_adversarial`` (see ``adversarial_mask``).
    Columns ``CORRELATION_COLUMNS``. NaN statistics for n < 3 or constant input. Models without
    a finite top-1 (of that source) or mean criticality cannot be ranked: they are left out and
    named in ``dropped`` with the reason, never silently.
    """
    m = _figure_models(models)
    accuracies = top1_by_source(m)
    y = _numeric(m, "mean_criticality")
    subsets = {"all": pd.Series(True, index=m.index), "without_adversarial": ~adversarial_mask(m)}
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


def _fmt_r(r: float) -> str:
    return f"{r:.2f}".replace("-", "\u2212") if np.isfinite(r) else "n/a"  # typographic minus


def _fmt_p(p: float) -> str:
    if not np.isfinite(p):
        return "n/a"
    return f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}"


def _correlation_text(corr: pd.DataFrame) -> str:
    """The correlations as lines, one heading per accuracy source (the plotted one first)."""
    names = {"all": "all models", "without_adversarial": "w/o adversarial"}
    lines = []
    for k, (source, block) in enumerate(corr.groupby("accuracy", sort=False)):
        notes = (["x axis"] if k == 0 else []) + (["as in the paper"] if source == "reported" else [])
        lines.append(f"vs {ACCURACY_TEXT[source]}" + (f" ({'; '.join(notes)})" if notes else "") + ":")
        lines += [
            f"    {names[r.subset]} (n={r.n}"
            + (f"; {r.n_dropped} left out, not finite" if r.n_dropped else "")
            + f"): Spearman ρ = {_fmt_r(r.spearman_r)} (p = {_fmt_p(r.spearman_p)}), "
            f"Kendall τ = {_fmt_r(r.kendall_tau)} (p = {_fmt_p(r.kendall_p)})"
            for r in block.itertuples(index=False)
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
    """
    m = ordered_models(models, categories)
    source, x = headline_top1(m)
    y = _numeric(m, "mean_criticality")
    text = _correlation_text(accuracy_correlations(models))
    with _style():
        fig = Figure(figsize=(6.4, 4.2 + 0.12 * text.count("\n")), layout="constrained")
        ax = fig.add_subplot()
        for cat in dict.fromkeys(m["category"]):
            sel = (m["category"] == cat).to_numpy()
            ax.scatter(x[sel], y[sel], s=34, color=m.loc[sel, "category_color"].iloc[0],
                       edgecolor="white", linewidth=0.6, label=m.loc[sel, "category_label"].iloc[0], zorder=2)
        ax.set_xlabel(f"{_capitalized(ACCURACY_TEXT[source])} [%]")
        ax.set_ylabel("Mean Layer Criticality [%]")
        ax.grid(color="#e5e5e5", linewidth=0.5)
        ax.set_axisbelow(True)
        fig.legend(loc="outside right center", frameon=False, title="Category")
        # Statistics above the axes (not inside), where they can never hide a point.
        ax.set_title(text, fontsize=7, loc="left")
        if title:
            fig.suptitle(title)
    return save_figure(fig, out_base)


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
    from layercrit.replication import agreement

    cats = _category_table(categories, by_model).set_index("id")
    category_of = by_model.set_index("model")["category"].astype(str)
    worst = by_model["model"].head(highlight).tolist()
    overall = agreement(points)
    n_models = len(by_model)
    with _style():
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
    return save_figure(fig, out_base)


# --------------------------------------------------------------------------------------------
# Table 1
# --------------------------------------------------------------------------------------------

TABLE1_COLUMNS = {
    "category_label": "Category",
    "display_name": "Model",
    "method": "Training method",
    "reported_top1": "Reported top-1 [%]",
    "top1": "Measured top-1 [%]",
    "mean_criticality": "Mean criticality [%]",
}
# Decimals shown per column: accuracies in their source's format (``TOP1_DECIMALS``).
_TABLE1_DECIMALS = {
    TABLE1_COLUMNS["reported_top1"]: TOP1_DECIMALS["reported"],
    TABLE1_COLUMNS["top1"]: TOP1_DECIMALS["measured"],
    TABLE1_COLUMNS["mean_criticality"]: 2,
}


def model_overview(models: pd.DataFrame, categories: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Table 1: every model (controls included) in figure order with category, method and accuracies.

    Accuracies by source (``top1_by_source``): the measured top-1 column is empty where the
    accuracy was only reported (published results), the reported one where the zoo has none.
    """
    rows = ordered_models(models, categories, figures_only=False)
    table = rows.reindex(columns=["model", *TABLE1_COLUMNS]).rename(columns=TABLE1_COLUMNS)
    accuracies = top1_by_source(rows)
    table[TABLE1_COLUMNS["reported_top1"]] = accuracies["reported"]
    table[TABLE1_COLUMNS["top1"]] = accuracies["measured"]
    return table


def _table1_cell(value: Any, column: str) -> str:
    if isinstance(value, float):
        return f"{value:.{_TABLE1_DECIMALS.get(column, 2)}f}" if np.isfinite(value) else "–"
    return _text(value)


def model_overview_table(models: pd.DataFrame, categories: Sequence[Mapping[str, Any]], out_base: str | Path) -> list[Path]:
    """Table 1 rendered as a figure (PNG + PDF), one row per model, grouped by category colour."""
    table = model_overview(models, categories)
    shown = table.drop(columns=["model"])
    cells = [[_table1_cell(v, c) for v, c in zip(row, shown.columns)] for row in shown.itertuples(index=False)]
    colors = ordered_models(models, categories, figures_only=False)["category_color"].tolist()
    with _style():
        fig = Figure(figsize=(11, 0.6 + 0.22 * (len(cells) + 1)))
        ax = fig.add_subplot()
        ax.axis("off")
        t = ax.table(cellText=cells, colLabels=list(shown.columns), loc="upper left", cellLoc="left", colLoc="left")
        t.auto_set_font_size(False)
        t.set_fontsize(7)
        t.auto_set_column_width(list(range(shown.shape[1])))
        for (r, c), cell in t.get_celld().items():
            cell.set_linewidth(0.3)
            if r == 0:
                cell.set_text_props(fontweight="bold")
            elif c == 0:
                cell.set_facecolor(mpl.colors.to_rgba(colors[r - 1], 0.25))
    return save_figure(fig, out_base)
