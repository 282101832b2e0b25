"""The depth profile of language models: each model's criticality along its blocks (a block's
value: the mean over its reset sublayers, per seed), mean ± std over seeds, one line per model.
Models of one depth (their last reset block) share the axis of block indices; models of
different depths are drawn over their relative depth (block / last block), where block 12 of 12
and of 30 are not alike."""

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
from layercrit.figures.language.blocks import block_layout, block_profile_table

_COLOURS = [to_hex(c) for c in mpl.colormaps["tab10"].colors]


def block_profile(
    resets: pd.DataFrame, models: pd.DataFrame, categories: Sequence[Mapping[str, Any]], out_base: str | Path
) -> list[Path]:
    """Criticality against block index (``blocks.block_profile_table`` of ``resets``, the
    per-seed table), a line per figure model in figure order with a ± std band over seeds
    (clipped to 0–100) where there are several; the legend to the right."""
    rows = ordered_models(models, categories)
    table = block_profile_table(resets)
    rows = rows[rows["model"].isin(table["model"])]
    depth = {m: int(block_layout(resets[resets["model"].astype(str) == m])["block"].max()) + 1 for m in rows["model"]}
    shared = len(set(depth.values())) == 1
    with figure_style():
        fig = Figure(figsize=(6.4, 3.2), layout="constrained")
        ax = fig.add_subplot()
        if rows.empty:
            ax.text(0.5, 0.5, "no layer inside a block was reset", ha="center", va="center", transform=ax.transAxes)
        names = rows["display_name"] if "display_name" in rows else rows["model"]
        for k, (model, name) in enumerate(zip(rows["model"], names)):
            part = table[table["model"] == model].sort_values("block")
            x = part["block"].to_numpy(dtype=float) / (1 if shared else max(depth[model] - 1, 1))
            mean, std = part["mean"].to_numpy(dtype=float), part["std"].to_numpy(dtype=float)
            colour = _COLOURS[k % len(_COLOURS)]
            ax.plot(x, mean, marker="o", markersize=3, linewidth=1.2, color=colour, label=name)
            if np.isfinite(std).any():
                low, high = np.clip(mean - std, *CRITICALITY_RANGE), np.clip(mean + std, *CRITICALITY_RANGE)
                ax.fill_between(x, low, high, where=np.isfinite(std), color=colour, alpha=0.2, linewidth=0)
        if shared and len(rows):
            ax.set_xticks(range(next(iter(depth.values()))))
            ax.set_xlabel("block")
        else:
            ax.set_xlabel("relative depth (block / the model's last reset block: 0 first, 1 last)")
        ax.set_ylim(bottom=CRITICALITY_RANGE[0])
        ax.set_ylabel("Block criticality [%]\n(mean over its reset sublayers;\nmean ± std over seeds)")
        ax.grid(axis="y", linewidth=0.4, alpha=0.5)
        if len(rows):
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)  # beside the lines, never on them
    return common.save_figure(fig, out_base)
