"""Criticality against perplexity, the analogue of the paper's Fig. 3 (criticality against
accuracy): a model's mean criticality over its layers against its clean perplexity on the
study's text, one point per model. A perplexity is per token, and tokens are the tokenizer's:
models of different tokenizers are not comparable, so each tokenizer gets a panel of its own."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from layercrit.figures import common
from layercrit.figures.common import figure_style, ordered_models


def clean_perplexities(resets: pd.DataFrame) -> dict[str, float]:
    """Each model's clean perplexity (``resets.clean_perplexity``: every reset job of a model
    recomputes the same clean outputs, so every row of a model carries it); {} without it."""
    if "clean_perplexity" not in resets:
        return {}
    return {str(m): float(v) for m, v in resets.groupby(resets["model"].astype(str), sort=False)["clean_perplexity"].median().items()}


def criticality_vs_perplexity(
    models: pd.DataFrame,
    perplexities: Mapping[str, float],
    tokenizers: Mapping[str, str],
    categories: Sequence[Mapping[str, Any]],
    out_base: str | Path,
) -> list[Path]:
    """Mean criticality over layers (``models.mean_criticality``, with its 95 % interval where
    the table has one) against clean perplexity (``perplexities``, model → value; log scale
    where they span more than a factor 10), a panel per tokenizer (``tokenizers``, model → its
    name; a model without one is grouped by its architecture), points coloured by category and
    named."""
    rows = ordered_models(models, categories)
    rows = rows[[np.isfinite(perplexities.get(m, math.nan)) for m in rows["model"]]]
    if rows.empty:
        raise ValueError("criticality_vs_perplexity: no figure model has a clean perplexity (resets.clean_perplexity)")
    architectures = common.architectures(rows)
    rows = rows.assign(
        perplexity=[perplexities[m] for m in rows["model"]],
        tokenizer=[tokenizers.get(m) or f"architecture {common.architecture_name(a)}" for m, a in zip(rows["model"], architectures)],
    )
    groups = list(dict.fromkeys(rows["tokenizer"]))
    names = rows["display_name"] if "display_name" in rows else rows["model"]
    rows = rows.assign(name=[common.cell_text(n) or m for n, m in zip(names, rows["model"])])
    with figure_style():
        fig = Figure(figsize=(3.2 * len(groups) + 1.6, 3.0), layout="constrained")
        axes = fig.subplots(1, len(groups), squeeze=False)[0]
        for ax, tokenizer in zip(axes, groups):
            part = rows[rows["tokenizer"] == tokenizer]
            x, y = part["perplexity"].to_numpy(float), part["mean_criticality"].to_numpy(float)
            if {"mean_criticality_ci_low", "mean_criticality_ci_high"} <= set(part):
                low, high = part["mean_criticality_ci_low"].to_numpy(float), part["mean_criticality_ci_high"].to_numpy(float)
                err = np.vstack([np.clip(y - low, 0, None), np.clip(high - y, 0, None)])
                ax.errorbar(x, y, yerr=np.where(np.isfinite(err), err, 0), fmt="none", ecolor="#7f7f7f", elinewidth=0.8, capsize=2)
            ax.scatter(x, y, c=part["category_color"].tolist(), s=28, edgecolors="white", linewidths=0.5, zorder=3)
            log = len(x) > 0 and np.nanmax(x) > 10 * np.nanmin(x)
            if log:
                ax.set_xscale("log")
            at = np.log(x) if log else x
            spread = np.ptp(at) if len(at) > 1 else 0.0
            for xi, yi, ai, name in zip(x, y, at, part["name"]):
                right_half = spread > 0 and (ai - at.min()) / spread > 0.5  # named towards the middle: inside the axes
                ax.annotate(name, (xi, yi), xytext=(-4 if right_half else 4, 3), textcoords="offset points", fontsize=6,
                            ha="right" if right_half else "left")  # fmt: skip
            ax.margins(x=0.25, y=0.2)  # room for the names
            ax.set_title(f"tokenizer: {tokenizer}", loc="left")
            ax.set_xlabel("clean perplexity on the study's text")
            ax.grid(linewidth=0.4, alpha=0.5)
        axes[0].set_ylabel("mean Layer Criticality [%]\n(over layers; 95 % interval)")
        shown = rows.drop_duplicates("category")
        handles = [Line2D([], [], linestyle="", marker="o", markersize=6, markerfacecolor=c, markeredgecolor="white", label=label)
                   for c, label in zip(shown["category_color"], shown["category_label"])]  # fmt: skip
        fig.legend(handles=handles, loc="outside right upper", frameon=False, title="category")
    return common.save_figure(fig, out_base)
