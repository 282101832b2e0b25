"""The paper's figures: criticality heatmaps (Figs. 1, 4, 5) and model-level scatters (Figs. 2, 3).

Inputs are the aggregation step's tables (see ``heatmap_matrix`` and the plotting functions):
``summary`` (one row per model × layer), ``models`` (one row per model, in display order) and
``categories`` (list of ``{"id", "label", "color"}`` dicts in display order).

``FIGURES`` maps every name of ``layercrit.study.FIGURE_NAMES`` to its drawing function, each
called alike: ``FIGURES[name](summary, models, study, out_base)`` (or ``draw(name, ...)``), where
``study`` is a ``StudyInfo``: the categories, the baseline model, Fig. 4's threshold.

A study may mix architectures (a ResNet-50 and a ViT): their layers are different layers even
where names agree. The heatmaps then stack one panel per layer list (``heatmap_panels``; Fig. 4
shows only the models with the baseline's and names the others), the scatters give each
architecture a marker shape, and Table 1 gets an architecture column. Columns that tables written
before them lack (``models.architecture``, ``summary.criticality_se``) are read as unknown.

Every plotting function writes ``<out_base>.png`` and ``<out_base>.pdf`` and returns their paths.
Figures are built on ``matplotlib.figure.Figure`` directly, never through ``pyplot``: that needs
no GUI backend (so no ``matplotlib.use`` call that would change a caller's backend) and leaves no
global figure registry behind to leak memory across many figures.

Modules: ``common`` (style, saving, row order and labels), ``heatmaps`` (a package: Figs. 1, 4
and 5, their labels, panels, layout and drawing), ``epsilon`` (Fig. 2),
``scatter`` (Fig. 3 and the replication figures), ``table`` (Table 1), ``profile`` (criticality along
the layers, drawn from a notebook's table: ``layercrit.notebook``; no figure of the workflow's),
``language`` (a package: the figures of language-model studies, with a registry of their own,
``LANGUAGE_FIGURES``, since they read the per-seed table too). The statistics they
show are computed in ``layercrit.analysis.statistics``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pandas as pd

from layercrit.figures.common import format_top1, ordered_models, save_figure
from layercrit.analysis.statistics import MIN_DIFFERENCE
from layercrit.figures.epsilon import criticality_vs_epsilon
from layercrit.figures.heatmaps import (
    HeatmapPanel,
    criticality_heatmap,
    difference_heatmap,
    heatmap_matrix,
    heatmap_panels,
    layer_label,
    layer_list_groups,
    model_layer_lists,
    norm_kind,
    paper_layer_label,
    seed_std_heatmap,
)
from layercrit.figures.scatter import (
    criticality_vs_accuracy,
    replication_figure,
    trial_replication_figure,
)
from layercrit.figures.table import model_overview, model_overview_table

__all__ = [
    "FIGURES",
    "HeatmapPanel",
    "StudyInfo",
    "criticality_heatmap",
    "criticality_vs_accuracy",
    "criticality_vs_epsilon",
    "difference_heatmap",
    "draw",
    "format_top1",
    "heatmap_matrix",
    "heatmap_panels",
    "layer_label",
    "layer_list_groups",
    "model_layer_lists",
    "model_overview",
    "model_overview_table",
    "norm_kind",
    "ordered_models",
    "paper_layer_label",
    "replication_figure",
    "save_figure",
    "trial_replication_figure",
    "seed_std_heatmap",
]


@dataclass(frozen=True)
class StudyInfo:
    """What the figures need of a study: its categories (display order, ``{"id", "label",
    "color"}``), its baseline model id (None without one) and the smallest difference from the
    baseline that Fig. 4 marks (config figures.min_difference, in criticality points); of a
    language-model study also each model's tokenizer (model id → its name: ``Study.tokenizers``),
    within which alone perplexities compare, and the pairs (model, reference) whose differences
    it draws (``Study.comparisons``)."""

    categories: Sequence[Mapping[str, Any]]
    baseline: str | None = None
    min_difference: float = MIN_DIFFERENCE
    tokenizers: Mapping[str, str] = field(default_factory=dict)
    comparisons: Sequence[tuple[str, str]] = ()


Draw = Callable[[pd.DataFrame, pd.DataFrame, StudyInfo, str | Path], list[Path]]

# name -> drawing function, one call for all; the names are layercrit.study.FIGURE_NAMES (a test
# keeps them equal), which the workflow's figure targets and wildcard read.
FIGURES: Mapping[str, Draw] = MappingProxyType(
    {
        "criticality_heatmap": lambda summary, models, study, out_base: criticality_heatmap(
            summary, models, study.categories, out_base
        ),
        "criticality_vs_accuracy": lambda summary, models, study, out_base: criticality_vs_accuracy(
            models, study.categories, out_base
        ),
        "seed_std_heatmap": lambda summary, models, study, out_base: seed_std_heatmap(
            summary, models, study.categories, out_base
        ),
        "difference_heatmap": lambda summary, models, study, out_base: difference_heatmap(
            summary, models, study.categories, study.baseline, out_base, min_difference=study.min_difference
        ),
        "criticality_vs_epsilon": lambda summary, models, study, out_base: criticality_vs_epsilon(
            models, out_base, baseline=study.baseline
        ),
    }
)


def draw(name: str, summary: pd.DataFrame, models: pd.DataFrame, study: StudyInfo, out_base: str | Path) -> list[Path]:
    """Draw the figure ``name`` (a key of ``FIGURES``) to ``<out_base>.png`` and ``.pdf``."""
    if name not in FIGURES:
        raise ValueError(f"unknown figure {name!r}; known: {list(FIGURES)}")
    return FIGURES[name](summary, models, study, out_base)
