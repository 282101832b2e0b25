"""Criticality by block × sublayer kind: one panel per language model, its blocks as rows (0 at
the top) and its kinds of sublayer as columns, with the layers outside the blocks (embeddings,
final norm, ``lm_head``) in a column of their own beside it; one colour scale, 0–100, for all.
``block_panels`` draws such panels of any values (the differences of ``difference`` too)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import Colormap, Normalize
from matplotlib.figure import Figure

from layercrit.figures import common
from layercrit.figures.common import figure_style, ordered_models
from layercrit.figures.language.blocks import block_matrix

PANELS_PER_ROW = 4
_MAX_ANNOTATED_CELLS = 400  # beyond, the numbers would be too small to read


@dataclass(frozen=True)
class BlockPanel:
    """One model's (or pair's) values: blocks × kinds, and the layers outside the blocks."""

    title: str
    matrix: pd.DataFrame
    outside: pd.Series


def cell_text(value: float) -> str:
    """A cell's number: whole from 10 on, one decimal below; a difference that rounds to zero reads
    0.0, not -0.0."""
    text = f"{value:.0f}" if abs(value) >= 9.95 else f"{value:.1f}"
    return text.removeprefix("-") if float(text) == 0 else text


def _cells(ax: Axes, values: np.ndarray, cmap: Colormap, norm: Normalize, dark: float) -> mpl.image.AxesImage:
    """``values`` as cells with their numbers, white where the colour is darker than ``dark``
    (the part of the colour map, 0–1 from its middle out for a diverging one, that is dark)."""
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, norm=norm, aspect="auto", interpolation="nearest")
    diverging = norm.vmin < 0
    if values.size <= _MAX_ANNOTATED_CELLS:
        for (i, j), v in np.ndenumerate(values):
            if np.isfinite(v):
                shade = abs(float(norm(v)) - 0.5) * 2 if diverging else float(norm(v))
                ax.text(j, i, cell_text(v), ha="center", va="center", fontsize=5.5,
                        color="white" if shade > dark else "black")  # fmt: skip
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    return image


def block_panels(panels: Sequence[BlockPanel], cmap: Colormap, norm: Normalize, dark: float, colour_label: str, out_base: str | Path) -> list[Path]:
    """``panels`` in a grid of at most ``PANELS_PER_ROW`` a row, each the blocks' grid (grey:
    not reset) and beside it the layers outside the blocks in cells of the same height; one
    colour bar (``cmap``, ``norm``) for all."""
    n_cols = min(len(panels), PANELS_PER_ROW)
    n_rows = math.ceil(len(panels) / n_cols)
    tallest = max(max(len(p.matrix), len(p.outside)) for p in panels)
    widest = max(p.matrix.shape[1] for p in panels)
    inside_cmap, strip_cmap = cmap.with_extremes(bad="#f0f0f0"), cmap.with_extremes(bad=(0, 0, 0, 0))  # strip padding: no cell
    with figure_style():
        fig = Figure(figsize=(n_cols * (0.3 * widest + 2.2) + 0.8, n_rows * (0.16 * tallest + 2.3)), layout="constrained")
        grid = fig.add_gridspec(n_rows, n_cols + 1, width_ratios=[1.0] * n_cols + [0.04])  # the last: the colour bar
        for k, panel in enumerate(panels):
            matrix, outside = panel.matrix, panel.outside
            cell = grid[k // n_cols, k % n_cols].subgridspec(1, 2, width_ratios=[max(matrix.shape[1], 1), 1])
            ax = fig.add_subplot(cell[0, 0])
            if matrix.size:
                _cells(ax, matrix.to_numpy(dtype=float), inside_cmap, norm, dark)
                ax.set_xticks(range(matrix.shape[1]), matrix.columns, rotation=90)
                ax.set_yticks(range(len(matrix)), [str(b) for b in matrix.index])
                ax.set_ylabel("block")
            else:
                ax.set_axis_off()
                ax.text(0.5, 0.5, "no layer inside a block\nwas reset", ha="center", va="center", transform=ax.transAxes)
            ax.set_title(panel.title, loc="left")
            if len(outside):
                side = fig.add_subplot(cell[0, 1])
                # padded to the blocks' rows, so that its cells are as high as theirs
                strip = np.full((max(len(matrix), len(outside)), 1), np.nan)
                strip[: len(outside), 0] = outside.to_numpy(dtype=float)
                _cells(side, strip, strip_cmap, norm, dark)
                side.set_xticks([])
                side.text(0, len(outside) - 0.4, "outside\nthe blocks", ha="center", va="top", fontsize=7)
                side.set_yticks(range(len(outside)), outside.index)
                side.yaxis.tick_right()
        fig.colorbar(mpl.cm.ScalarMappable(norm=norm, cmap=cmap), cax=fig.add_subplot(grid[0, -1]), label=colour_label)
    return common.save_figure(fig, out_base)


def block_sublayer_heatmap(
    summary: pd.DataFrame,
    models: pd.DataFrame,
    categories: Sequence[Mapping[str, Any]],
    out_base: str | Path,
    *,
    perplexities: Mapping[str, float] | None = None,
) -> list[Path]:
    """Each figure model's mean criticality over seeds (``summary.criticality_mean``) by block
    and sublayer kind (``blocks.block_matrix``), models in figure order, at most
    ``PANELS_PER_ROW`` a row; a panel's title is the model's name and, from ``perplexities``
    (model → clean perplexity), its clean perplexity. Grey cells: layers not reset."""
    rows = ordered_models(models, categories)
    rows = rows[rows["model"].isin(summary["model"].astype(str))]
    if rows.empty:
        raise ValueError("block_sublayer_heatmap: no model of the table has results")
    names = rows["display_name"] if "display_name" in rows else rows["model"]
    panels = []
    for model, name in zip(rows["model"], names):
        ppl = (perplexities or {}).get(model, math.nan)
        title = str(name) + (f"\nclean perplexity {ppl:.4g}" if np.isfinite(ppl) else "")
        panels.append(BlockPanel(title, *block_matrix(summary[summary["model"].astype(str) == model])))
    # as the criticality heatmap: darker is more critical
    return block_panels(panels, mpl.colormaps["viridis_r"], Normalize(0, 100), 0.55, "Layer Criticality [%]\n(mean over seeds)", out_base)
