"""Table 1: every model with its category, training method, accuracies and mean criticality, as
a table (``model_overview``, written to table1.csv) and drawn (``model_overview_table``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from layercrit.figures import common
from layercrit.figures.common import TOP1_DECIMALS, architectures, figure_style, ordered_models
from layercrit.analysis.statistics import cell_text, top1_by_source

TABLE1_COLUMNS = {
    "category_label": "Category",
    "display_name": "Model",
    "architecture": "Architecture",  # only where the models have more than one
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
    The architecture column is there only where the models have more than one architecture: in
    a study of one it would repeat one word in every row, as the paper's table does not.
    """
    rows = ordered_models(models, categories, figures_only=False)
    columns = dict(TABLE1_COLUMNS)
    if len(set(architectures(rows))) < 2:
        del columns["architecture"]
    table = rows.reindex(columns=["model", *columns]).rename(columns=columns)
    accuracies = top1_by_source(rows)
    table[TABLE1_COLUMNS["reported_top1"]] = accuracies["reported"]
    table[TABLE1_COLUMNS["top1"]] = accuracies["measured"]
    return table


def _table1_cell(value: Any, column: str) -> str:
    if isinstance(value, float):
        return f"{value:.{_TABLE1_DECIMALS.get(column, 2)}f}" if np.isfinite(value) else "–"
    return cell_text(value)


def model_overview_table(models: pd.DataFrame, categories: Sequence[Mapping[str, Any]], out_base: str | Path) -> list[Path]:
    """Table 1 rendered as a figure (PNG + PDF), one row per model, grouped by category colour."""
    table = model_overview(models, categories)
    shown = table.drop(columns=["model"])
    cells = [[_table1_cell(v, c) for v, c in zip(row, shown.columns)] for row in shown.itertuples(index=False)]
    colors = ordered_models(models, categories, figures_only=False)["category_color"].tolist()
    with figure_style():
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
    return common.save_figure(fig, out_base)
