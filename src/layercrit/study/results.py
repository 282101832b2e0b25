"""The names of what a study writes: where a reset result lives (and, back from a path, what it
stands for), and every figure a study can have. Targets, scripts and the figure index share
these, so that a path or a name is written in one place.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any


# Where one reset result lives under results/<study>/ (every field a single path component).
RESET_RESULT = "resets/{mode}/{model}/{layer}/seed{seed}.json"
# ... and its inverse, derived from it: each field one path component, the seed a number.
_RESET_RESULT_TAIL = re.compile(
    "(?:^|/)"
    + re.escape(RESET_RESULT)
    .replace(r"\{seed\}", r"(?P<seed>\d+)")
    .replace(r"\{mode\}", "(?P<mode>[^/]+)")
    .replace(r"\{model\}", "(?P<model>[^/]+)")
    .replace(r"\{layer\}", "(?P<layer>[^/]+)")
    + "$"
)


# them by these names, and Study.figures says which of them a study's zoo supports.
FIGURE_NAMES = (
    "criticality_heatmap",
    "criticality_vs_accuracy",
    "seed_std_heatmap",
    "difference_heatmap",
    "criticality_vs_epsilon",
)
# The figures of a language-model study (data.kind text; layercrit.figures.language), drawn by
# their own rule from the per-seed table too: by block x sublayer kind, along the blocks,
# criticality against the clean perplexity within each tokenizer, and the differences of the
# zoo's comparisons by block x sublayer kind. Study.language_figures.
LANGUAGE_FIGURE_NAMES = ("block_sublayer_heatmap", "block_profile", "criticality_vs_perplexity", "block_difference_heatmap")
# Table 1, rendered beside the figures (layercrit.figures.table).
MODEL_TABLE = "model_table"
# The comparisons with the published results (layercrit.analysis.replication): of the means over seeds,
# and, under reset.seed_scheme authors, trial by trial.
REPLICATION_FIGURES = ("replication", "replication_trials")
# Every figure the workflow draws into a study's figures/<mode>/, the one list of them: the
# targets name theirs from it, and the figure index moves any a study no longer makes to outdated/.
STUDY_FIGURE_FILES = (*FIGURE_NAMES, *LANGUAGE_FIGURE_NAMES, MODEL_TABLE, *REPLICATION_FIGURES)


def reset_result_path(mode: str, model: str, layer: str, seed: int | str) -> str:
    """A reset result's path relative to results/<study>/."""
    return RESET_RESULT.format(mode=mode, model=model, layer=layer, seed=seed)


def reset_result_identity(path: str | Path) -> dict[str, Any]:
    """The model, layer, seed and mode a reset result's path stands for."""
    match = _RESET_RESULT_TAIL.search(Path(path).as_posix())
    if match is None:
        raise ValueError(f"{path} is not a reset result path (…/{RESET_RESULT})")
    return {"model": match["model"], "layer": match["layer"], "seed": int(match["seed"]), "mode": match["mode"]}
