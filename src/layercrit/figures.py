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
    "accuracy_correlations",
    "adversarial_mask",
    "criticality_heatmap",
    "criticality_vs_accuracy",
    "criticality_vs_epsilon",
    "difference_heatmap",
    "heatmap_matrix",
    "ordered_models",
    "paper_layer_label",
    "replication_figure",
    "save_figure",
    "seed_std_heatmap",
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

    Adds columns ``category_label``, ``category_color`` and ``row_label`` ("name [top-1%]").
    With ``figures_only``, rows with ``in_figures`` False (controls) are dropped.
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
    top1 = pd.to_numeric(m["top1"], errors="coerce") if "top1" in m else pd.Series(np.nan, index=m.index)
    m["row_label"] = [f"{n} [{t:.1f}%]" if np.isfinite(t) else f"{n} [n/a]" for n, t in zip(names, top1)]
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
    signed: bool,
    row_margin_label: str,
    col_margin_label: str,
) -> Figure:
    """Heatmap with a category band (left), per-row mean ± std (right) and per-column mean ± std
    (bottom). Laid out in inches so cells keep a legible size whatever the matrix shape;
    ``bbox_inches="tight"`` on saving then crops or extends to the labels."""
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

    # Right margin: per-row mean ± std over columns, as a bar with error and as numbers.
    ypos = np.arange(n_rows)
    bars = ax_right.barh(
        ypos, row_mean, height=0.72, color=rows["category_color"].tolist(),
        xerr=row_std, error_kw={"elinewidth": 0.7, "capsize": 1.2, "ecolor": "#333333"},
    )
    _hatch(bars, row_partial)
    lim = _nice_ceil(_abs_max(row_mean + row_std, row_mean - row_std))
    ax_right.set_xlim(-lim if signed else 0, lim)
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
    bars = ax_bottom.bar(
        xpos, col_mean, width=0.72, color="#7f7f7f",
        yerr=col_std, error_kw={"elinewidth": 0.7, "capsize": 1.2, "ecolor": "#333333"},
    )
    _hatch(bars, col_partial)
    lim = _nice_ceil(_abs_max(col_mean + col_std, col_mean - col_std))
    ax_bottom.set_ylim(-lim if signed else 0, lim)
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
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    rows = ordered_models(models, categories)
    matrix = heatmap_matrix(summary, models, categories, value)
    labels = _layer_table(summary)["label"].tolist()
    return matrix, rows, labels


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
    follow ``value``. Non-finite cells are drawn hatched. Rows with ``in_figures`` False are left out.
    """
    matrix, rows, labels = _heatmap_inputs(summary, models, categories, value)
    with _style():
        fig = _draw_heatmap(
            matrix, rows, labels, matrix.columns.tolist(), cmap_name="viridis_r", vmin=0, vmax=100,
            cbar_label=CRITICALITY_LABEL if value == "criticality_mean" else value, title=title,
            signed=False, row_margin_label="mean ± std\nover layers [%]",
            col_margin_label="mean ± std\nover models [%]",
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

    Fixed range −100…100 (``coolwarm``) as in the paper, so colours compare across studies; the
    margins use data-driven limits so small differences remain visible there. The baseline row
    (all zeros by construction) is left out.
    """
    wide = _pivot(summary, "criticality_mean")
    if str(baseline) not in wide.index:
        raise ValueError(f"baseline model {baseline!r} has no rows in summary")
    matrix, rows, labels = _heatmap_inputs(summary, models, categories, "criticality_mean")
    diff = matrix - wide.loc[str(baseline)].reindex(matrix.columns)
    keep = (rows["model"] != str(baseline)).to_numpy()
    diff, rows = diff[keep], rows[keep].reset_index(drop=True)
    base_name = str(baseline)
    if "display_name" in models:
        hit = models.loc[models["model"].astype(str) == str(baseline), "display_name"]
        base_name = _text(hit.iloc[0]) if len(hit) and _text(hit.iloc[0]) else base_name
    with _style():
        fig = _draw_heatmap(
            diff, rows, labels, diff.columns.tolist(), cmap_name="coolwarm", vmin=-100, vmax=100,
            cbar_label=f"Criticality − {base_name} [pp]", title=title, signed=True,
            row_margin_label="mean ± std\nover layers [pp]", col_margin_label="mean ± std\nover models [pp]",
        )
    return save_figure(fig, out_base)


def seed_std_heatmap(
    summary: pd.DataFrame,
    models: pd.DataFrame,
    categories: Sequence[Mapping[str, Any]],
    out_base: str | Path,
    *,
    vmax: float | None = None,
    title: str | None = None,
) -> list[Path]:
    """Fig. 5: std of criticality over seeds (``criticality_std``), ``viridis_r``.

    ``vmax=None`` (default) scales the colours to the data's maximum rounded up to 1/2/2.5/5 × 10^k:
    the spread over seeds is typically a few percent, which on the paper's 0–100 scale would all
    look the same. Pass ``vmax=100`` for the paper's scale. Cells from a single seed are NaN.
    """
    matrix, rows, labels = _heatmap_inputs(summary, models, categories, "criticality_std")
    if vmax is None:
        finite = matrix.to_numpy(dtype=float)
        finite = finite[np.isfinite(finite)]
        vmax = min(100.0, _nice_ceil(float(finite.max()))) if finite.size else 100.0
    with _style():
        fig = _draw_heatmap(
            matrix, rows, labels, matrix.columns.tolist(), cmap_name="viridis_r", vmin=0, vmax=vmax,
            cbar_label="Std of Layer Criticality over seeds [%]", title=title, signed=False,
            row_margin_label="mean ± std\nover layers [%]", col_margin_label="mean ± std\nover models [%]",
        )
    return save_figure(fig, out_base)


# --------------------------------------------------------------------------------------------
# Model-level scatters
# --------------------------------------------------------------------------------------------

_NORM_STYLE = {
    "l2": {"label": "L2", "color": "#1f77b4", "marker": "o", "xlabel": "ε (L2)"},
    # Madry-lab L∞ budgets are given in units of 1/255 of the [0, 1] pixel range.
    "linf": {"label": "L∞", "color": "#d62728", "marker": "o", "xlabel": "ε (L∞, × 1/255)"},
}


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


def criticality_vs_epsilon(models: pd.DataFrame, out_base: str | Path, *, title: str | None = None) -> list[Path]:
    """Fig. 2: mean criticality vs adversarial budget ε of the adversarially trained models.

    One subplot per norm (shared y): L2 and L∞ budgets are in different units, so a common x axis
    would suggest a comparison that doesn't exist. The budgets span decades, so x is logarithmic
    (symlog, linear below the smallest positive ε, when an ε = 0 model is present), ticked at the
    budgets themselves. Marker area grows linearly with measured top-1 over the data's range, with
    a key; points of one norm are joined in ε order. Figure models only (``in_figures``).
    Raises ``ValueError`` if no such model has a finite ε.
    """
    m = _figure_models(models)
    eps = pd.to_numeric(m["epsilon"], errors="coerce") if "epsilon" in m else pd.Series(np.nan, index=m.index)
    m = m.assign(epsilon=eps)[np.isfinite(eps.astype(float))]
    if m.empty:
        raise ValueError("criticality_vs_epsilon: no adversarially trained models (no finite epsilon)")
    norm_col = m["norm"] if "norm" in m else pd.Series("", index=m.index)
    m = m.assign(norm=[(_text(n).lower() or "unknown") for n in norm_col])
    norms = [n for n in ("l2", "linf") if n in set(m["norm"])] + sorted(set(m["norm"]) - {"l2", "linf"})
    top1 = pd.to_numeric(m["top1"], errors="coerce").astype(float)
    area = _size_scale(top1)
    with _style():
        fig = Figure(figsize=(3.3 * len(norms) + 1.2, 3.3), layout="constrained")
        axes = fig.subplots(1, len(norms), sharey=True, squeeze=False)[0]
        for ax, norm in zip(axes, norms):
            style = _NORM_STYLE.get(norm, {"label": norm, "color": "#7f7f7f", "marker": "D", "xlabel": f"ε ({norm})"})
            sub = m[m["norm"] == norm].sort_values("epsilon")
            x = sub["epsilon"].to_numpy(dtype=float)
            y = pd.to_numeric(sub["mean_criticality"], errors="coerce").to_numpy(dtype=float)
            ax.plot(x, y, color=style["color"], linewidth=1, alpha=0.6, zorder=1)
            ax.scatter(x, y, s=area(top1.loc[sub.index]), color=style["color"], marker=style["marker"],
                       edgecolor="white", linewidth=0.6, zorder=2, label=style["label"])
            positive = x[x > 0]
            if positive.size and (x <= 0).any():
                ax.set_xscale("symlog", linthresh=float(positive.min()), linscale=0.5)
            elif positive.size:
                ax.set_xscale("log")
            ticks = np.unique(x)
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks], rotation=45 if len(ticks) > 5 else 0,
                          ha="right" if len(ticks) > 5 else "center", rotation_mode="anchor")
            ax.xaxis.set_minor_locator(mpl.ticker.NullLocator())
            ax.margins(x=0.08, y=0.1)  # in scaled coordinates: no marker is cut at the edges
            ax.set_xlabel(style["xlabel"])
            ax.set_title(f"{style['label']} adversarial training")
            ax.grid(color="#e5e5e5", linewidth=0.5)
            ax.set_axisbelow(True)
        axes[0].set_ylabel("Mean Layer Criticality [%]")
        finite = top1[np.isfinite(top1)]
        if len(finite):
            keys = np.unique(np.round(np.linspace(finite.min(), finite.max(), 3), 1))
            handles = [
                Line2D([], [], linestyle="", marker="o", markersize=math.sqrt(float(area(k))),
                       markerfacecolor="#bbbbbb", markeredgecolor="white", label=f"{k:.1f}%")
                for k in keys
            ]
            fig.legend(handles=handles, title="Top-1 (measured)", loc="outside right center", frameon=False,
                       labelspacing=1.3, borderpad=1.0)
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


def accuracy_correlations(models: pd.DataFrame) -> pd.DataFrame:
    """Rank correlations of mean criticality with measured top-1 (figure models only).

    Rows ``all`` and ``without_adversarial`` (see ``adversarial_mask``); columns subset, n,
    spearman_r, spearman_p, kendall_tau, kendall_p, n_dropped, dropped. NaN statistics for n < 3
    or constant input. Models without a finite top-1 or mean criticality cannot be ranked: they
    are left out and named in ``dropped`` with the reason, never silently.
    """
    m = _figure_models(models)
    x = pd.to_numeric(m["top1"], errors="coerce")
    y = pd.to_numeric(m["mean_criticality"], errors="coerce")
    ok = np.isfinite(x) & np.isfinite(y)
    reasons = [
        " and ".join(r for r, bad in (("top-1 not finite", not np.isfinite(a)), ("criticality not finite", not np.isfinite(b))) if bad)
        for a, b in zip(x, y)
    ]  # fmt: skip
    adv = adversarial_mask(m)
    out = []
    for subset, members in (("all", pd.Series(True, index=m.index)), ("without_adversarial", ~adv)):
        row = _correlation_row(subset, x[ok & members].to_numpy(float), y[ok & members].to_numpy(float))
        left_out = [f"{model} ({reason})" for model, reason, use, keep in zip(m["model"], reasons, ok, members) if keep and not use]
        out.append(row | {"n_dropped": len(left_out), "dropped": "; ".join(left_out)})
    columns = ["subset", "n", "spearman_r", "spearman_p", "kendall_tau", "kendall_p", "n_dropped", "dropped"]
    return pd.DataFrame(out, columns=columns)


def _fmt_r(r: float) -> str:
    return f"{r:.2f}".replace("-", "\u2212") if np.isfinite(r) else "n/a"  # typographic minus


def _fmt_p(p: float) -> str:
    if not np.isfinite(p):
        return "n/a"
    return f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}"


def criticality_vs_accuracy(
    models: pd.DataFrame,
    categories: Sequence[Mapping[str, Any]],
    out_base: str | Path,
    *,
    title: str | None = None,
) -> list[Path]:
    """Fig. 3: mean criticality vs measured top-1, coloured by category, with Spearman ρ and
    Kendall τ (and p-values) for all figure models and without the adversarially trained ones."""
    m = ordered_models(models, categories)
    x = pd.to_numeric(m["top1"], errors="coerce")
    y = pd.to_numeric(m["mean_criticality"], errors="coerce")
    corr = accuracy_correlations(models)
    names = {"all": "all models", "without_adversarial": "w/o adversarial"}
    lines = [
        f"{names[r.subset]} (n={r.n}"
        + (f"; {r.n_dropped} left out, not finite" if r.n_dropped else "")
        + f"): Spearman ρ = {_fmt_r(r.spearman_r)} (p = {_fmt_p(r.spearman_p)}), "
        f"Kendall τ = {_fmt_r(r.kendall_tau)} (p = {_fmt_p(r.kendall_p)})"
        for r in corr.itertuples(index=False)
    ]
    with _style():
        fig = Figure(figsize=(6.4, 4.2), layout="constrained")
        ax = fig.add_subplot()
        for cat in dict.fromkeys(m["category"]):
            sel = (m["category"] == cat).to_numpy()
            ax.scatter(x[sel], y[sel], s=34, color=m.loc[sel, "category_color"].iloc[0],
                       edgecolor="white", linewidth=0.6, label=m.loc[sel, "category_label"].iloc[0], zorder=2)
        ax.set_xlabel("Top-1 accuracy, measured [%]")  # the demo study is not ImageNet
        ax.set_ylabel("Mean Layer Criticality [%]")
        ax.grid(color="#e5e5e5", linewidth=0.5)
        ax.set_axisbelow(True)
        fig.legend(loc="outside right center", frameon=False, title="Category")
        # Statistics above the axes (not inside), where they can never hide a point.
        ax.set_title("\n".join(lines), fontsize=7, loc="left")
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


def model_overview(models: pd.DataFrame, categories: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Table 1: every model (controls included) in figure order with category, method and accuracies.

    The measured top-1 column is left empty where the accuracy was only reported (published results).
    """
    rows = ordered_models(models, categories, figures_only=False)
    table = rows.reindex(columns=["model", *TABLE1_COLUMNS]).rename(columns=TABLE1_COLUMNS)
    if "top1_source" in rows:
        table.loc[rows["top1_source"].astype(str) != "measured", TABLE1_COLUMNS["top1"]] = np.nan
    return table


def model_overview_table(models: pd.DataFrame, categories: Sequence[Mapping[str, Any]], out_base: str | Path) -> list[Path]:
    """Table 1 rendered as a figure (PNG + PDF), one row per model, grouped by category colour."""
    table = model_overview(models, categories)
    shown = table.drop(columns=["model"])
    cells = [
        [f"{v:.2f}" if isinstance(v, float) and np.isfinite(v) else ("–" if isinstance(v, float) else _text(v)) for v in row]
        for row in shown.itertuples(index=False)
    ]
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
