"""The depth profile: each model's criticality along its layers, mean over seeds with a ± std
band, one line per model. It shows where in the network the critical layers sit, the shape the
paper reads off a heatmap's row, for a few models at a glance.

Models with one layer list share an axis of their layers (labelled as the heatmaps label them);
models of different layer lists are drawn over their relative depth (position among their reset
layers, 0 = first, 1 = last), where layers of different architectures cannot share a tick.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from layercrit.analysis.statistics import CRITICALITY_RANGE
from layercrit.figures import common
from layercrit.figures.common import figure_style, ordered_models
from layercrit.figures.heatmaps.panels import layer_table, model_layer_lists

_COLOURS = [to_hex(c) for c in mpl.colormaps["tab10"].colors]


def criticality_profile(
    summary: pd.DataFrame,
    models: pd.DataFrame,
    categories: Sequence[Mapping[str, Any]],
    out_base: str | Path,
    *,
    title: str | None = None,
) -> list[Path]:
    """Criticality (``summary.criticality_mean``, band ± ``criticality_std`` where there are
    several seeds) along each figure model's layers, models in figure order (``ordered_models``),
    each a colour of its own and labelled with its row label (legend to the right). The band is
    clipped to 0–100; non-finite values leave a gap."""
    rows = ordered_models(models, categories)
    rows = rows[rows["model"].isin(summary["model"].astype(str))]
    if rows.empty:
        raise ValueError("criticality_profile: no model of the table has results")
    lists = model_layer_lists(summary)
    shared = len({lists[m] for m in rows["model"]}) == 1
    with figure_style():
        n_layers = max(len(lists[m]) for m in rows["model"])
        width = min(max(4.0, 0.28 * n_layers + 1.5), 14.0) if shared else 6.0
        fig = Figure(figsize=(width, 3.2), layout="constrained")
        ax = fig.add_subplot()
        top = 0.0
        for k, row in enumerate(rows.itertuples(index=False)):
            part = summary[summary["model"].astype(str) == row.model].sort_values("layer_index", kind="stable")
            mean = part["criticality_mean"].to_numpy(dtype=float)
            std = part["criticality_std"].to_numpy(dtype=float) if "criticality_std" in part else np.full(len(part), np.nan)
            x = np.arange(len(part)) if shared else np.arange(len(part)) / max(len(part) - 1, 1)
            colour = _COLOURS[k % len(_COLOURS)]
            ax.plot(x, mean, marker="o", markersize=3, linewidth=1.2, color=colour, label=row.row_label)
            band = np.isfinite(std)
            if band.any():  # clipped to criticality's bounds, as the heatmaps' whiskers are
                low, high = np.clip(mean - std, *CRITICALITY_RANGE), np.clip(mean + std, *CRITICALITY_RANGE)
                ax.fill_between(x, low, high, where=band, color=colour, alpha=0.2, linewidth=0)
                top = max(top, np.nanmax(high, initial=0.0))
            top = max(top, np.nanmax(mean, initial=0.0))
        if shared:
            layers = layer_table(summary[summary["model"].astype(str).isin(rows["model"])])
            ax.set_xticks(np.arange(len(layers)))
            ax.set_xticklabels(layers["label"], rotation=90)
            ax.set_xlabel("layer (in the order the model lists them)")
        else:
            ax.set_xlabel("relative depth (position among the model's reset layers: 0 first, 1 last)")
        upper = min(CRITICALITY_RANGE[1], max(1.0, top * 1.08)) if np.isfinite(top) else CRITICALITY_RANGE[1]
        ax.set_ylim(CRITICALITY_RANGE[0], upper)
        ax.set_ylabel("Layer Criticality [%]\n(mean ± std over seeds)")
        ax.grid(axis="y", linewidth=0.4, alpha=0.5)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)  # beside the lines, never on them
        if title:
            ax.set_title(title, loc="left")
    return common.save_figure(fig, out_base)
