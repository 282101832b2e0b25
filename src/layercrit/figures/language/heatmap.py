"""Criticality by block × sublayer kind: one panel per language model, its blocks as rows (0 at
the top) and its kinds of sublayer as columns, with the layers outside the blocks (embeddings,
final norm, ``lm_head``) in a column of their own beside it; one colour scale, 0–100, for all."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from layercrit.figures import common
from layercrit.figures.common import figure_style, ordered_models
from layercrit.figures.language.blocks import block_matrix

PANELS_PER_ROW = 4
_CMAP = mpl.colormaps["viridis_r"].with_extremes(bad="#f0f0f0")  # as the criticality heatmap; grey: not reset
_STRIP_CMAP = mpl.colormaps["viridis_r"].with_extremes(bad=(0, 0, 0, 0))  # its padding below the layers: no cell
_NORM = Normalize(0, 100)
_MAX_ANNOTATED_CELLS = 400  # beyond, the numbers would be too small to read


def _cells(ax: Axes, values: np.ndarray, cmap=_CMAP) -> mpl.image.AxesImage:
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, norm=_NORM, aspect="auto", interpolation="nearest")
    if values.size <= _MAX_ANNOTATED_CELLS:
        for (i, j), v in np.ndenumerate(values):
            if np.isfinite(v):  # white on the dark end of viridis_r, black on the light one
                ax.text(j, i, f"{v:.0f}" if v >= 9.95 else f"{v:.1f}", ha="center", va="center", fontsize=5.5, color="white" if v > 55 else "black")
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    return image


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
    panels = [(str(m), str(n), *block_matrix(summary[summary["model"].astype(str) == m])) for m, n in zip(rows["model"], names)]
    n_cols = min(len(panels), PANELS_PER_ROW)
    n_rows = math.ceil(len(panels) / n_cols)
    tallest = max(max(len(matrix), len(outside)) for _, _, matrix, outside in panels)
    widest = max(matrix.shape[1] for _, _, matrix, _ in panels)
    with figure_style():
        fig = Figure(figsize=(n_cols * (0.3 * widest + 2.2) + 0.8, n_rows * (0.16 * tallest + 2.3)), layout="constrained")
        grid = fig.add_gridspec(n_rows, n_cols + 1, width_ratios=[1.0] * n_cols + [0.04])  # the last: the colour bar
        image = None
        for k, (model, name, matrix, outside) in enumerate(panels):
            # the blocks' grid and, beside it, the layers outside the blocks
            cell = grid[k // n_cols, k % n_cols].subgridspec(1, 2, width_ratios=[max(matrix.shape[1], 1), 1])
            ax = fig.add_subplot(cell[0, 0])
            if matrix.size:
                image = _cells(ax, matrix.to_numpy(dtype=float))
                ax.set_xticks(range(matrix.shape[1]), matrix.columns, rotation=90)
                ax.set_yticks(range(len(matrix)), [str(b) for b in matrix.index])
                ax.set_ylabel("block")
            else:
                ax.set_axis_off()
                ax.text(0.5, 0.5, "no layer inside a block\nwas reset", ha="center", va="center", transform=ax.transAxes)
            ppl = (perplexities or {}).get(model, math.nan)
            ax.set_title(name + (f"\nclean perplexity {ppl:.4g}" if np.isfinite(ppl) else ""), loc="left")
            if len(outside):
                side = fig.add_subplot(cell[0, 1])
                # padded to the blocks' rows, so that its cells are as high as theirs
                strip = np.full((max(len(matrix), len(outside)), 1), np.nan)
                strip[: len(outside), 0] = outside.to_numpy(dtype=float)
                image = _cells(side, strip, _STRIP_CMAP)
                side.set_xticks([])
                side.text(0, len(outside) - 0.4, "outside\nthe blocks", ha="center", va="top", fontsize=7)
                side.set_yticks(range(len(outside)), outside.index)
                side.yaxis.tick_right()
        if image is not None:
            fig.colorbar(image, cax=fig.add_subplot(grid[0, -1]), label="Layer Criticality [%]\n(mean over seeds)")
    return common.save_figure(fig, out_base)
