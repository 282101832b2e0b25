"""Differences of two language models' criticality by block × sublayer kind: an instruct model
against its base, a later training step against an earlier one. Which pairs is the study's to
say (the zoo's ``comparisons``), since a study of several families has several bases; both models
of a pair have one layer list, so their cells are the same layers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.colors import Normalize

from layercrit.figures.language.blocks import block_matrix
from layercrit.figures.language.heatmap import BlockPanel, block_panels


def _name(models: pd.DataFrame, model: str) -> str:
    row = models[models["model"].astype(str) == model]
    names = row["display_name"] if "display_name" in row else row["model"]
    return str(names.iloc[0]) if len(row) and isinstance(names.iloc[0], str) and names.iloc[0] else model


def block_difference_heatmap(
    summary: pd.DataFrame, models: pd.DataFrame, comparisons: Sequence[tuple[str, str]], out_base: str | Path
) -> list[Path]:
    """A panel per pair ``(model, reference)`` of ``comparisons``, in their order: model's mean
    criticality over seeds minus the reference's, cell by cell (``blocks.block_matrix``; a layer
    reset in only one of them is a gap). Red: more critical in the model. One symmetric colour
    scale, the largest difference rounded up to a multiple of 5 (at most 100)."""
    if not comparisons:
        raise ValueError("block_difference_heatmap: no comparisons (the zoo's `comparisons`: pairs of model and reference)")
    have = set(summary["model"].astype(str))
    missing = sorted({m for pair in comparisons for m in pair} - have)
    if missing:
        raise ValueError(f"block_difference_heatmap: no results of {missing} in the table")
    panels = []
    for model, reference in comparisons:
        (matrix, outside), (ref_matrix, ref_outside) = (block_matrix(summary[summary["model"].astype(str) == m]) for m in (model, reference))
        if not (matrix.index.equals(ref_matrix.index) and matrix.columns.equals(ref_matrix.columns) and outside.index.equals(ref_outside.index)):
            raise ValueError(f"block_difference_heatmap: {model!r} and {reference!r} were reset in different layers; compare models of one layer list")
        panels.append(BlockPanel(f"{_name(models, model)}\nminus {_name(models, reference)}", matrix.sub(ref_matrix), outside.sub(ref_outside)))
    values = np.concatenate([np.abs(np.r_[p.matrix.to_numpy(float).ravel(), p.outside.to_numpy(float)]) for p in panels])
    top = float(np.nanmax(values, initial=0.0)) if np.isfinite(values).any() else 0.0
    limit = min(100.0, max(5.0, 5 * np.ceil(top / 5)))
    label = f"criticality difference [points]\n(model minus reference; scale ±{limit:g})"
    return block_panels(panels, mpl.colormaps["coolwarm"], Normalize(-limit, limit), 0.6, label, out_base)
