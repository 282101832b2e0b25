"""The heatmap and the depth profile from ``layer_criticality``'s table (or several, concatenated,
or a study's ``resets.csv``), drawn by the workflow's own figure code: the table is summarized
over seeds as the workflow summarizes it (``analysis.aggregation.summarize``), each model a row.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from layercrit.analysis.aggregation import summarize
from layercrit.figures.heatmaps import criticality_heatmap
from layercrit.figures.profile import criticality_profile

# Every model of a notebook table in one category: the figures' category band then has one colour.
_CATEGORY = {"id": "notebook", "label": "Models"}


def figure_tables(
    table: pd.DataFrame, names: Mapping[str, str] | None = None, architectures: Mapping[str, str] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The figures' ``summary`` (per model × layer over seeds) and ``models`` (per model, in the
    table's order: its ``names`` or id, its ``architectures`` entry, which titles a heatmap panel
    where models of several layer lists get one each, and its top-1 measured on the images)."""
    if table.empty:
        raise ValueError("the table has no rows: nothing to draw")
    summary = summarize(table)
    first = table.drop_duplicates("model")
    names, architectures = dict(names or {}), dict(architectures or {})
    models = pd.DataFrame(
        {
            "model": first["model"].astype(str),
            "display_name": [names.get(m, m) for m in first["model"].astype(str)],
            "category": _CATEGORY["id"],
            "architecture": [architectures.get(m, "") for m in first["model"].astype(str)],
            "top1": first["original_top1"].astype(float),
            "top1_source": "measured",
            "in_figures": True,
        }
    ).reset_index(drop=True)
    return summary, models


def plot_heatmap(
    table: pd.DataFrame,
    out_base: str | Path,
    *,
    names: Mapping[str, str] | None = None,
    architectures: Mapping[str, str] | None = None,
) -> list[Path]:
    """The workflow's criticality heatmap (models × layers, mean over seeds, with mean ± std
    margins) of ``table``, written to ``<out_base>.png`` and ``.pdf``; returns their paths.
    ``names`` gives models a display name (row label, with the top-1 on the images);
    ``architectures`` (model id -> name) titles the panels of models with different layers."""
    summary, models = figure_tables(table, names, architectures)
    return criticality_heatmap(summary, models, [_CATEGORY], out_base)


def plot_profile(table: pd.DataFrame, out_base: str | Path, *, names: Mapping[str, str] | None = None) -> list[Path]:
    """The depth profile (``figures.profile``: criticality along the layers, mean ± std over
    seeds, one line per model) of ``table``, written to ``<out_base>.png`` and ``.pdf``."""
    summary, models = figure_tables(table, names)
    return criticality_profile(summary, models, [_CATEGORY], out_base)
