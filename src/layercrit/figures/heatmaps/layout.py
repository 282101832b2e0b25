"""Where a heatmap figure's parts go. One GridSpec holds every panel, and matplotlib's constrained
layout places the axes in it and makes room for what surrounds them: the row labels, the rotated
column labels, the panel titles, the colour bar's ticks and label, the legend and the figure's
title. What is chosen here is only what an engine cannot choose: the grid's width and height
ratios (so that a cell has the same size in every panel), the figure's size (so that a cell keeps
a legible size whatever the matrix shape) and the legend's number of columns."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure, SubFigure
from matplotlib.font_manager import FontProperties
from matplotlib.gridspec import GridSpec, SubplotSpec
from matplotlib.textpath import TextToPath

from layercrit.figures.heatmaps.margins import PanelStats

# Sizes in inches of what the grid holds; the engine adds the room for text around them.
BAND_W = 0.14  # the category band
BAND_GAP = 0.06  # between the band and the heatmaps
RIGHT_W = 1.0  # the row margin's bars
GAP_W = 0.22  # between a heatmap and its row margin: room for the margin's first tick label
BOTTOM_H = 0.85  # the column margin's bars
CBAR_W = 0.14
CBAR_MIN_H = 1.6  # a shorter colour bar would be hard to read
LABEL_SIZE = 7  # tick labels and legend (common._STYLE)
ROW_TEXT_SIZE = 6.5  # the row margin's "mean ± std" beside each bar
# Constrained layout's padding around every axes: none across, since it would also pad a narrow
# panel's axes inside the span of a wider one and widen that one's cells; the grid has gaps instead.
_W_PAD, _H_PAD = 0.0, 3 / 72
_NOTE_CHARS = 150  # a note wraps at the figure's width, but never to lines longer than this

_TEXT_PATHS = TextToPath()


def text_width(text: str, size: float, style: str = "normal") -> float:
    """Width in inches of one line of ``text`` at ``size`` points in the default font. The engine
    measures text only once the figure exists; the figure's size has to be chosen before."""
    prop = FontProperties(size=size, style=style)
    width, _, _ = _TEXT_PATHS.get_text_width_height_descent(text, prop, ismath=False)
    return width / 72


def cell_size(shapes: Sequence[tuple[int, ...]]) -> tuple[float, float]:
    """Cell width and height in inches of panels of these (rows, columns) shapes: roomy for a
    small demo, ~0.19 in (≈ 13.7 pt, where 7 pt text fits) for the paper's 54 layers or a ViT's
    80. One size for all panels, so that a cell reads the same in each; the width follows the
    widest panel, the height all rows together (as tall as one heatmap of every model)."""
    n_cols = max(shape[1] for shape in shapes)
    n_rows = sum(shape[0] for shape in shapes)
    return float(np.clip(10.0 / n_cols, 0.19, 0.34)), float(np.clip(8.0 / n_rows, 0.19, 0.32))


def _legend_width(entry_in: Sequence[float], ncol: int) -> float:
    """Width of a legend of entries this wide in ``ncol`` columns. Matplotlib fills column by
    column, the first ``n % ncol`` columns one entry longer, each as wide as its widest entry."""
    rows, large = divmod(len(entry_in), ncol)
    sizes = [rows + 1] * large + [rows] * (ncol - large)
    starts = np.cumsum([0, *sizes])
    return sum(max(entry_in[a:b]) for a, b in zip(starts[:-1], starts[1:]) if b > a)


def legend_columns(labels: Sequence[str], available_in: float) -> int:
    """Legend columns for the fewest rows that fit ``available_in`` inches, and of those the
    fewest columns, so that the columns are filled evenly (9 entries in two rows: 5 columns, not
    8 with one of two entries and seven of one). The engine places a legend but does not choose
    its columns."""
    entry = [text_width(s, LABEL_SIZE) + 0.45 for s in labels]  # handle + padding ≈ 0.45 in
    widest = next((n for n in range(len(labels), 1, -1) if _legend_width(entry, n) <= available_in), 1)
    even = math.ceil(len(labels) / math.ceil(len(labels) / widest))
    return even if _legend_width(entry, even) <= available_in else widest


@dataclass(frozen=True)
class PanelSlots:
    """The grid cells of one panel's axes: cells, category band, row and column margins."""

    heat: SubplotSpec
    band: SubplotSpec
    right: SubplotSpec
    bottom: SubplotSpec


@dataclass(frozen=True)
class HeatmapGrid:
    """A constrained-layout figure, the (sub)figure that holds the panels, legend and colour bar
    (``body``), and where each part goes: one ``PanelSlots`` per panel (top first), the colour
    bar's cell and height, the cell size aimed at, the legend's columns and the note wrapped to
    the figure's width."""

    figure: Figure
    body: Figure | SubFigure
    panels: list[PanelSlots]
    colorbar: SubplotSpec
    colorbar_h: float
    cell: tuple[float, float]
    legend_cols: int
    note: str | None


def heatmap_grid(
    stats: Sequence[PanelStats],
    row_labels: Sequence[str],
    row_label_title: str,
    legend_labels: Sequence[str],
    note: str | None,
    title: bool,
) -> HeatmapGrid:
    """Panels stacked top to bottom in one GridSpec: a row for the cells and one for the column
    margin per panel; columns for the band, then the x-ranges of every panel's heatmap, gap, row
    margin and its printed numbers, then the colour bar. A panel narrower than the widest spans
    fewer columns, so its row margin follows right after it, and every panel starts at the same
    band column, so the panels are left-aligned at a common row-label column.

    Text that overhangs into cells known to be empty (the margins' axis labels and tick labels,
    the row margin's numbers) is left out of the engine's layout (``set_in_layout(False)`` where
    drawn); inside the span of a wider panel it would otherwise widen that panel's cells.

    The figure's size is the grid's plus the text around it, measured as it will be drawn (the
    engine fits axes into a given size but does not choose one): a cell then gets about the size
    ``cell_size`` gives, and the engine places everything exactly."""
    cw, ch = cell_size([s.values.shape for s in stats])
    text_w = max(text_width(t, ROW_TEXT_SIZE) for s in stats for t in s.row_texts) + 0.04 * RIGHT_W + 0.1
    # x-ranges in inches from the heatmaps' left edge: heatmap, gap, row margin, its numbers
    spans = [(w, w + GAP_W, w + GAP_W + RIGHT_W, w + GAP_W + RIGHT_W + text_w) for w in
             (s.values.shape[1] * cw for s in stats)]  # fmt: skip
    edges = sorted({0.0, *(round(e, 6) for span in spans for e in span)})
    width_ratios = [BAND_W, BAND_GAP, *np.diff(edges), CBAR_W]
    heights = [h for s in stats for h in (s.values.shape[0] * ch, BOTTOM_H)]

    label_w = max(max(text_width(s, LABEL_SIZE) for s in row_labels) + 0.1, text_width(row_label_title, 6.5, "italic"))
    fig_w = label_w + sum(width_ratios) + 0.8  # the colour bar's ticks and label
    cols = legend_columns(legend_labels, fig_w - 0.2)
    wrapped = _wrapped(note, fig_w - 0.3) if note else None
    note_h = 0.15 * wrapped.count("\n") + 0.2 if wrapped else 0.0
    legend_h = 0.1 + 0.18 * math.ceil(len(legend_labels) / cols) + note_h
    col_label_h = sum(max(text_width(t, LABEL_SIZE) for t in s.col_labels) + 0.1 for s in stats)
    fig_h = sum(heights) + col_label_h + 0.3 * len(stats) + legend_h + (0.3 if title else 0.05)

    fig = Figure(figsize=(fig_w, fig_h), layout="constrained")
    fig.get_layout_engine().set(w_pad=_W_PAD, h_pad=_H_PAD, wspace=0.0, hspace=0.0)
    # With a title, everything else goes into a subfigure: the engine stacks a figure's title above
    # its subfigures, but not above a legend placed outside the figure's own axes.
    body = fig.subfigures(1, 1) if title else fig
    grid = body.add_gridspec(len(heights), len(width_ratios), width_ratios=width_ratios, height_ratios=heights)
    slots = []
    for k, (w, start, end, _) in enumerate(spans):
        col = {e: edges.index(round(e, 6)) + 2 for e in (w, start, end)}  # the grid column that ends at e
        heat, right = slice(2, col[w]), slice(col[start], col[end])
        slots.append(PanelSlots(heat=grid[2 * k, heat], band=grid[2 * k, 0], right=grid[2 * k, right],
                                bottom=grid[2 * k + 1, heat]))  # fmt: skip
    return HeatmapGrid(fig, body, slots, *_colorbar_slot(grid, heights), (cw, ch), cols, wrapped)


def _wrapped(note: str, width_in: float) -> str:
    """``note`` wrapped to lines ``width_in`` inches wide at most (a legend's title does not wrap
    itself), and never longer than ``_NOTE_CHARS`` characters."""
    char_w = text_width(note, LABEL_SIZE, "italic") / len(note)
    return "\n".join(textwrap.wrap(note, min(_NOTE_CHARS, max(40, int(width_in / char_w)))))


def _colorbar_slot(grid: GridSpec, heights: Sequence[float]) -> tuple[SubplotSpec, float]:
    """The colour bar's cell beside the top panel and the bar's height in inches: 60 % of the
    panel's, at least ``CBAR_MIN_H``; a heatmap of a few rows lends it the height of its column
    margin too. (A bar shorter than its cell is drawn with a box aspect, centred in it: a nested
    GridSpec would keep the engine from making room for the bar's ticks and label.)"""
    rows = 1 if heights[0] >= CBAR_MIN_H else 2
    span = sum(heights[:rows])
    return grid[:rows, -1], min(span, max(CBAR_MIN_H, 0.6 * heights[0]))
