"""The figures of a language-model study (``layercrit.study.LANGUAGE_FIGURE_NAMES``), drawn
besides the heatmaps every study has: criticality by block × sublayer kind (``heatmap``), along
the blocks (``profile``) and against the clean perplexity within each tokenizer
(``perplexity``), and the differences of the pairs a zoo compares (``difference``); ``blocks`` reads a layer's block and kind from its name.

They read the per-seed table (``resets``: a block's spread over seeds, the clean perplexity)
besides ``summary`` and ``models``, so they have a registry and a rule of their own:
``LANGUAGE_FIGURES[name](resets, summary, models, study, out_base)``, ``study`` a
``layercrit.figures.StudyInfo`` whose ``tokenizers`` names each model's tokenizer and
``comparisons`` lists the pairs (model, reference).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pandas as pd

from layercrit.figures.language.blocks import block_layout, block_matrix, block_profile_table, sublayer_kinds
from layercrit.figures.language.difference import block_difference_heatmap
from layercrit.figures.language.heatmap import BlockPanel, block_panels, block_sublayer_heatmap
from layercrit.figures.language.perplexity import clean_perplexities, criticality_vs_perplexity
from layercrit.figures.language.profile import block_profile

__all__ = [
    "LANGUAGE_FIGURES", "BlockPanel", "block_difference_heatmap", "block_layout", "block_panels", "block_matrix", "block_profile", "block_profile_table", "block_sublayer_heatmap",
    "clean_perplexities", "criticality_vs_perplexity", "draw_language", "sublayer_kinds",
]  # fmt: skip

LanguageDraw = Callable[[pd.DataFrame, pd.DataFrame, pd.DataFrame, Any, str | Path], list[Path]]

# name -> drawing function; the names are layercrit.study.LANGUAGE_FIGURE_NAMES (a test keeps them equal)
LANGUAGE_FIGURES: Mapping[str, LanguageDraw] = MappingProxyType(
    {
        "block_sublayer_heatmap": lambda resets, summary, models, study, out_base: block_sublayer_heatmap(
            summary, models, study.categories, out_base, perplexities=clean_perplexities(resets)
        ),
        "block_profile": lambda resets, summary, models, study, out_base: block_profile(
            resets, models, study.categories, out_base
        ),
        "criticality_vs_perplexity": lambda resets, summary, models, study, out_base: criticality_vs_perplexity(
            models, clean_perplexities(resets), study.tokenizers, study.categories, out_base
        ),
        "block_difference_heatmap": lambda resets, summary, models, study, out_base: block_difference_heatmap(
            summary, models, study.comparisons, out_base
        ),
    }
)


def draw_language(
    name: str, resets: pd.DataFrame, summary: pd.DataFrame, models: pd.DataFrame, study: Any, out_base: str | Path
) -> list[Path]:
    """Draw the language-model figure ``name`` (a key of ``LANGUAGE_FIGURES``) to ``<out_base>.png`` and ``.pdf``."""
    if name not in LANGUAGE_FIGURES:
        raise ValueError(f"unknown language-model figure {name!r}; known: {list(LANGUAGE_FIGURES)}")
    return LANGUAGE_FIGURES[name](resets, summary, models, study, out_base)
