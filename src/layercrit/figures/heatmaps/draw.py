"""Drawing heatmap panels into the grid of ``layout``: the cells (hatched where not finite), the
category band with the row labels, the row and column margins (mean ± std bars), Fig. 4's marks,
one colour bar, one legend and the figure's title. Shared by Figs. 1, 4 and 5."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import Colormap, ListedColormap, Normalize
from matplotlib.figure import Figure, FigureBase
from matplotlib.gridspec import SubplotSpec
from matplotlib.font_manager import FontProperties
from matplotlib.patches import Patch, Rectangle
from matplotlib.transforms import blended_transform_factory

from layercrit.figures.heatmaps.layout import CBAR_W, LABEL_SIZE, ROW_TEXT_SIZE, PanelSlots, heatmap_grid
from layercrit.figures.heatmaps.margins import PanelStats, clipped_whiskers, margin_extent, panel_stats
from layercrit.figures.heatmaps.panels import HeatmapPanel

# Cells without a finite value are drawn hatched on white: a flat grey would be indistinguishable
# from the neutral middle of ``coolwarm`` (0 difference) in Fig. 4.
NAN_HATCH = "////"
NAN_HATCH_COLOR = "#8c8c8c"
PARTIAL_HATCH = "xxxx"  # margin bars that average only the finite cells of their row or column
# Fig. 4's mark of a cell that differs from the baseline beyond its uncertainty: a black dot in a
# white ring reads on every colour of ``coolwarm``, from dark blue through grey to dark red.
SIGNIFICANCE_GID = "significance_marks"
MARK_STYLE = {"marker": "o", "facecolor": "black", "edgecolor": "white", "linewidth": 0.6}
# Whiskers end exactly at the panel's edge at most (``clipped_whiskers``): drawn unclipped, so
# a cap there shows in full instead of being cut in half by the axes frame.
_WHISKERS = {"elinewidth": 0.7, "capsize": 1.2, "ecolor": "#333333", "clip_on": False}
_TICKS = {"nbins": 2, "steps": [1, 2, 2.5, 5, 10]}
_PARTIAL_LABEL = "margin over the finite cells only (n = their number)"
_NAN_LABEL = "not finite / missing"
_POSITION = re.compile(r"^\[([^\].]+)")


@dataclass(frozen=True)
class Style:
    """What every panel of one figure shares: colours and the margins' scales and labels."""

    cmap: Colormap
    norm: Normalize
    signed: bool
    row_extent: tuple[float, float]
    col_extent: tuple[float, float]
    row_margin_label: str
    col_margin_label: str
    row_label_title: str


def mark_size(cell: tuple[float, float]) -> float:
    """Marker area (pt²) of a significance dot: a third of the smaller cell side across, small
    enough to leave the cell's colour readable around it."""
    return (min(cell) * 72 / 3) ** 2


def _hatch(bars: Any, which: np.ndarray) -> None:
    """Hatch the margin bars that average only some of their cells."""
    for bar, partial in zip(bars, which):
        if partial:
            bar.set_hatch(PARTIAL_HATCH)
            bar.set_edgecolor("white")


def _column_group(label: str) -> str:
    """What a white rule separates: the first number of the label's position (a ResNet or
    ConvNeXt stage, a ViT block), the stem, the head; a label without position stands alone.
    The rules guide the eye on big grids."""
    m = _POSITION.match(label)
    return m[1] if m else label


def _draw_cells(fig: FigureBase, slot: SubplotSpec, s: PanelStats, style: Style) -> Axes:
    """The heatmap axes. NaN cells are transparent and show a hatched background instead."""
    ax = fig.add_subplot(slot)
    n_rows, n_cols = s.values.shape
    ax.add_patch(Rectangle((-0.5, -0.5), n_cols, n_rows, facecolor="white", edgecolor=NAN_HATCH_COLOR,
                           hatch=NAN_HATCH, linewidth=0, zorder=0.5))  # fmt: skip
    ax.imshow(np.ma.masked_invalid(s.values), cmap=style.cmap, norm=style.norm, aspect="auto",
              interpolation="nearest", zorder=1)  # fmt: skip
    ax.set_xlim(-0.5, n_cols - 0.5)
    ax.set_ylim(n_rows - 0.5, -0.5)
    ax.tick_params(left=False, labelleft=False, bottom=False, labelbottom=False)
    return ax


def _draw_band(fig: FigureBase, slot: SubplotSpec, ax: Axes, rows: pd.DataFrame, row_label_title: str) -> None:
    """Category band with the row labels to its left, headed by what they show; white rules
    between category groups."""
    ax_band = fig.add_subplot(slot, sharey=ax)
    cats = rows["category"].tolist()
    for i in range(1, len(cats)):
        if cats[i] != cats[i - 1]:
            for a in (ax, ax_band):
                a.axhline(i - 0.5, color="white", linewidth=1.2, zorder=3)
    cat_ids = list(dict.fromkeys(cats))
    cat_color = dict(zip(rows["category"], rows["category_color"]))
    band = np.array([[cat_ids.index(c)] for c in cats])
    ax_band.imshow(band, cmap=ListedColormap([cat_color[c] for c in cat_ids]), vmin=-0.5,
                   vmax=len(cat_ids) - 0.5, aspect="auto", interpolation="nearest")  # fmt: skip
    ax_band.set_xticks([])
    ax_band.set_yticks(range(len(cats)), rows["row_label"].tolist())
    ax_band.tick_params(axis="y", length=0, pad=3)
    for spine in ax_band.spines.values():
        spine.set_visible(False)
    # Above the row labels, right-aligned with them: what the number in brackets is.
    ax_band.annotate(row_label_title, (0, 1), xycoords="axes fraction", xytext=(-3, 3), textcoords="offset points",
                     ha="right", va="bottom", fontsize=ROW_TEXT_SIZE, style="italic")  # fmt: skip


def _draw_row_margin(
    fig: FigureBase, slot: SubplotSpec, ax: Axes, s: PanelStats, rows: pd.DataFrame, style: Style
) -> None:
    """Right margin: per-row mean ± std over columns, as a bar with error and as numbers. Its
    axis and numbers hang into cells the grid keeps empty for them: out of the engine's layout."""
    ax_right = fig.add_subplot(slot, sharey=ax)
    ypos = np.arange(len(rows))
    whiskers = clipped_whiskers(s.row_mean, s.row_std, style.row_extent)
    bars = ax_right.barh(ypos, s.row_mean, height=0.72, color=rows["category_color"].tolist(), xerr=whiskers,
                         error_kw=_WHISKERS)  # fmt: skip
    _hatch(bars, s.row_partial)
    ax_right.set_xlim(*style.row_extent)
    if style.signed:
        ax_right.axvline(0, color="#333333", linewidth=0.6)
    ax_right.tick_params(left=False, labelleft=False)
    ax_right.set_xlabel(style.row_margin_label)
    ax_right.xaxis.set_major_locator(mpl.ticker.MaxNLocator(**_TICKS))
    ax_right.xaxis.set_in_layout(False)
    ax_right.grid(axis="x", color="#dddddd", linewidth=0.5)
    ax_right.set_axisbelow(True)
    trans = blended_transform_factory(ax_right.transAxes, ax_right.transData)
    for y, text in zip(ypos, s.row_texts):
        ax_right.text(1.04, y, text, transform=trans, va="center", ha="left", fontsize=ROW_TEXT_SIZE, in_layout=False)


def _draw_col_margin(fig: FigureBase, slot: SubplotSpec, ax: Axes, s: PanelStats, style: Style) -> None:
    """Bottom margin: per-column mean ± std over rows; it carries the column labels. Its y axis
    hangs left under the row labels, which the grid keeps empty there: out of the layout."""
    ax_bottom = fig.add_subplot(slot, sharex=ax)
    xpos = np.arange(s.values.shape[1])
    whiskers = clipped_whiskers(s.col_mean, s.col_std, style.col_extent)
    bars = ax_bottom.bar(xpos, s.col_mean, width=0.72, color="#7f7f7f", yerr=whiskers, error_kw=_WHISKERS)
    _hatch(bars, s.col_partial)
    ax_bottom.set_ylim(*style.col_extent)
    if style.signed:
        ax_bottom.axhline(0, color="#333333", linewidth=0.6)
    ax_bottom.set_ylabel(style.col_margin_label)
    ax_bottom.yaxis.set_major_locator(mpl.ticker.MaxNLocator(**_TICKS))
    ax_bottom.yaxis.set_in_layout(False)
    ax_bottom.grid(axis="y", color="#dddddd", linewidth=0.5)
    ax_bottom.set_axisbelow(True)
    ax_bottom.set_xticks(xpos, list(s.col_labels), rotation=90)
    ax_bottom.tick_params(axis="x", length=2)


def _draw_panel(fig: FigureBase, slots: PanelSlots, panel: HeatmapPanel, s: PanelStats, style: Style,
                cell: tuple[float, float], titled: bool) -> Axes:  # fmt: skip
    """One panel: cells, category band, both margins and, with several panels, its title."""
    ax = _draw_cells(fig, slots.heat, s, style)
    _draw_band(fig, slots.band, ax, panel.rows, style.row_label_title)
    groups = [_column_group(label) for label in panel.layers["label"]]
    for j in range(1, len(groups)):
        if groups[j] != groups[j - 1]:
            ax.axvline(j - 0.5, color="white", linewidth=0.8, zorder=3)
    if panel.marks is not None and panel.marks.any():
        rows, cols = np.nonzero(panel.marks)
        ax.scatter(cols, rows, s=mark_size(cell), zorder=4, gid=SIGNIFICANCE_GID, **MARK_STYLE)
    _draw_row_margin(fig, slots.right, ax, s, panel.rows, style)
    _draw_col_margin(fig, slots.bottom, ax, s, style)
    if titled:
        ax.set_title(panel.title, loc="left", fontsize=8, weight="bold", pad=3)
    return ax


def _legend_handles(panels: Sequence[HeatmapPanel], stats: Sequence[PanelStats], extra: Sequence[Any]) -> list[Any]:
    """Category colours of every panel's rows, the NaN hatch if any cell is not finite, the
    partial-margin hatch if any margin lacks cells, then ``extra`` (Fig. 4's marks)."""
    rows = pd.concat([p.rows for p in panels], ignore_index=True)
    cats = dict(zip(rows["category"], zip(rows["category_label"], rows["category_color"])))
    handles: list[Any] = [Patch(facecolor=color, label=label) for label, color in cats.values()]
    if any(np.isnan(s.values).any() for s in stats):
        handles.append(Patch(facecolor="white", edgecolor=NAN_HATCH_COLOR, hatch=NAN_HATCH, label=_NAN_LABEL))
    if any(s.row_partial.any() or s.col_partial.any() for s in stats):
        handles.append(Patch(facecolor="#bbbbbb", edgecolor="white", hatch=PARTIAL_HATCH, label=_PARTIAL_LABEL))
    return handles + list(extra)


def draw_heatmap(
    panels: Sequence[HeatmapPanel],
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
    legend_extra: Sequence[Any] = (),
    note: str | None = None,
) -> Figure:
    """Heatmap panels stacked vertically (see ``layout.heatmap_grid``), each with a category band
    (left), per-row mean ± std (right) and per-column mean ± std (bottom, with its layer labels);
    one colour bar, one legend above the top panel and, with several panels, a title above each.

    ``value_bound``: the range the values can take; margins span it (``fixed_margins``) or the
    data of all panels, capped at it (see ``margin_extent``): one scale for every panel, so that
    bars compare across them. ``row_label_title`` heads each panel's row labels (it says which
    accuracy they show); ``legend_extra`` are more legend handles; ``note`` is printed above the
    legend's entries, as its title (what the figure leaves out)."""
    if not panels or any(0 in p.matrix.shape for p in panels):
        raise ValueError("nothing to plot: no model rows (in_figures) or no layers in summary")
    stats = [panel_stats(p) for p in panels]
    handles = _legend_handles(panels, stats, legend_extra)
    row_labels = [label for p in panels for label in p.rows["row_label"]]
    grid = heatmap_grid(stats, row_labels, row_label_title, [h.get_label() for h in handles], note, bool(title))
    joined = {k: np.concatenate([getattr(s, k) for s in stats]) for k in ("row_mean", "row_std", "col_mean", "col_std")}
    style = Style(
        cmap=mpl.colormaps[cmap_name].with_extremes(bad=(0, 0, 0, 0)), norm=Normalize(vmin=vmin, vmax=vmax),
        signed=value_bound[0] < 0,
        row_extent=margin_extent(joined["row_mean"], joined["row_std"], value_bound, fixed_margins),
        col_extent=margin_extent(joined["col_mean"], joined["col_std"], value_bound, fixed_margins),
        row_margin_label=row_margin_label, col_margin_label=col_margin_label, row_label_title=row_label_title,
    )  # fmt: skip
    fig = grid.body
    axes = [_draw_panel(fig, slots, p, s, style, grid.cell, len(panels) > 1)
            for slots, p, s in zip(grid.panels, panels, stats)]  # fmt: skip
    cax = fig.add_subplot(grid.colorbar)
    cax.set_box_aspect(grid.colorbar_h / CBAR_W)  # centred in its cell (the anchor's default)
    fig.colorbar(axes[0].images[0], cax=cax, label=cbar_label)
    fig.legend(handles=handles, loc="outside upper left", ncols=grid.legend_cols, frameon=False, handlelength=1.2,
               columnspacing=1.2, title=grid.note, alignment="left",
               title_fontproperties=FontProperties(size=LABEL_SIZE, style="italic"))  # fmt: skip
    if title:
        grid.figure.suptitle(title, x=0.0, ha="left", fontsize=10, weight="bold")
    return grid.figure
