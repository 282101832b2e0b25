"""Figs. 1 and 5: criticality and its std over seeds as models × layers heatmaps, one panel per
layer list on one colour scale (criticality is a number on the same 0–100 scale for every
architecture, only its layers differ)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib as mpl
import numpy as np
import pandas as pd

from layercrit.figures import common
from layercrit.figures.common import ACCURACY_TEXT, figure_style
from layercrit.figures.heatmaps.draw import draw_heatmap
from layercrit.figures.heatmaps.panels import HeatmapPanel, heatmap_panels
from layercrit.analysis.statistics import CRITICALITY_RANGE, accuracy_sources, figure_models

CRITICALITY_LABEL = "Layer Criticality [%]"


def row_label_title(models: pd.DataFrame) -> str:
    """What heads the row labels: which accuracy their brackets show."""
    source = accuracy_sources(figure_models(models))[0]  # the one ordered_models' row labels show
    return f"model [{ACCURACY_TEXT[source]} %]"


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
    ``in_figures`` False are left out. Models of different layer lists (architectures) get one
    panel each (``heatmap_panels``), on one colour scale: criticality is a number on the same
    0–100 scale for every architecture, only its layers differ.
    """
    panels = heatmap_panels(summary, models, categories, value)
    with figure_style():
        fig = draw_heatmap(
            panels, cmap_name="viridis_r", vmin=0, vmax=100,
            cbar_label=CRITICALITY_LABEL if value == "criticality_mean" else value, title=title,
            value_bound=CRITICALITY_RANGE, fixed_margins=True, row_margin_label="mean ± std\nover layers [%]",
            col_margin_label="mean ± std\nover models [%]", row_label_title=row_label_title(models),
        )  # fmt: skip
    return common.save_figure(fig, out_base)


def _fitted_colour_limit(panels: Sequence[HeatmapPanel]) -> float:
    """The top of a colour scale fit to the panels' values: the largest finite one rounded up to
    the next tick matplotlib would draw (1, 2, 2.5, 5 × 10^k steps), at most 100; 100 where none
    is finite."""
    values = np.concatenate([p.matrix.to_numpy(dtype=float).ravel() for p in panels])
    largest = np.max(values[np.isfinite(values)], initial=0.0)
    if largest <= 0:
        return CRITICALITY_RANGE[1]
    ticks = mpl.ticker.MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]).tick_values(0.0, largest)
    return float(min(ticks[ticks >= largest][0], CRITICALITY_RANGE[1]))


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

    Colours span 0 to the largest std rounded up (``_fitted_colour_limit``): spreads over seeds
    are a few points, and on the paper's 0–100 they would leave the figure nearly blank. The
    colour bar's label states the scale, so that a reader does not take it for the paper's;
    ``vmax=100`` draws the paper's. Margin axes are data-driven too (capped at 100), one scale
    for all panels. Cells from a single seed are NaN. One panel per layer list, as Fig. 1.
    """
    panels = heatmap_panels(summary, models, categories, "criticality_std")
    top = _fitted_colour_limit(panels) if vmax is None else vmax
    scale = "fit to the values" if vmax is None else "as given"
    with figure_style():
        fig = draw_heatmap(
            panels, cmap_name="viridis_r", vmin=0, vmax=top,
            cbar_label=f"Std of Layer Criticality over seeds [%]\n(colour scale 0–{top:g}, {scale})", title=title,
            value_bound=CRITICALITY_RANGE, fixed_margins=False, row_margin_label="mean ± std\nover layers [%]",
            col_margin_label="mean ± std\nover models [%]", row_label_title=row_label_title(models),
        )  # fmt: skip
    return common.save_figure(fig, out_base)
