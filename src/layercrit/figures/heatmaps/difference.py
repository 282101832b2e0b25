"""Fig. 4: criticality minus the baseline model's, per layer, with a mark on each cell that
differs from the baseline beyond its uncertainty. Drawn with the heatmaps' panel machinery
(``panels``, ``draw``); the test of each cell is ``statistics.difference_from_baseline``."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from layercrit.figures import common
from layercrit.figures.common import architecture_name, architectures, figure_style, ordered_models
from layercrit.figures.heatmaps.criticality import row_label_title
from layercrit.figures.heatmaps.draw import MARK_STYLE, draw_heatmap, mark_size
from layercrit.figures.heatmaps.layout import cell_size
from layercrit.figures.heatmaps.panels import HeatmapPanel, LayerList, groups_of, model_layer_lists, panel_of, pivot
from layercrit.analysis.statistics import CONFIDENCE, MIN_DIFFERENCE, cell_text, difference_from_baseline

log = logging.getLogger(__name__)


def significance_label(min_difference: float) -> str:
    """What a mark says: beyond the interval, and by at least ``min_difference`` points."""
    return (
        f"differs from the baseline beyond the {CONFIDENCE * 100:g} % interval (seeds and images) "
        f"and by ≥ {min_difference:g} points"
    )


DIFFERENCE_BOUND = (-100.0, 100.0)


def _with_string_ids(summary: pd.DataFrame) -> pd.DataFrame:
    """``summary`` with model and layer ids as strings, as the baseline's id and the models table
    name them (a CSV may give an id that looks like a number back as one). Tables without the
    uncertainty columns need nothing here: ``difference_from_baseline`` reads them as unknown."""
    return summary.assign(model=summary["model"].astype(str), layer=summary["layer"].astype(str))


def _display_names(models: pd.DataFrame) -> dict[str, str]:
    """model id → its display name (the id where it has none)."""
    names = models["display_name"] if "display_name" in models else models["model"]
    return {str(m): cell_text(n) or str(m) for m, n in zip(models["model"], names)}


def _comparable_with(summary: pd.DataFrame, models: pd.DataFrame, rows: pd.DataFrame, baseline: str) -> list[str]:
    """The figure models in ``baseline``'s layer-list group (``layer_list_groups``, the baseline
    taking part even where it is no figure model): those whose layers are the baseline's."""
    order = rows["model"].tolist()
    known = pd.concat([rows, models.assign(model=models["model"].astype(str))], ignore_index=True)
    known = known.drop_duplicates("model")
    groups = groups_of(summary, known, order if baseline in order else [*order, baseline])
    group = next(g for g in groups if baseline in g)
    return [m for m in order if m in group]


def _left_out_note(
    rows: pd.DataFrame, left_out: Sequence[str], lists: Mapping[str, LayerList], names: Mapping[str, str],
    baseline: str, baseline_arch: str,
) -> str:
    """Which figure models Fig. 4 leaves out and why, grouped by architecture."""
    out = rows[rows["model"].isin(left_out)]
    groups: dict[str, list[str]] = {}
    for model, arch in zip(out["model"], architectures(out)):
        key = f"{architecture_name(arch)}, {len(lists.get(model, ()))} layers"
        groups.setdefault(key, []).append(names[model])
    who = "; ".join(f"{key}: {', '.join(members)}" for key, members in groups.items())
    base = f"{names.get(baseline, baseline)}: {architecture_name(baseline_arch)}, {len(lists[baseline])} layers"
    return f"Not compared, their layer list differs from the baseline's ({base}) — {who}."


def _marks(summary: pd.DataFrame, baseline: str, diff: pd.DataFrame, min_difference: float) -> tuple[np.ndarray, np.ndarray]:
    """Cells of ``diff`` that ``difference_from_baseline`` marks (significant and at least
    ``min_difference`` points), and those of a finite difference whose uncertainty is unknown (no
    ``criticality_se``: published results, tables from before it)."""
    tested = difference_from_baseline(summary, baseline, min_difference)
    wide = {
        c: tested.pivot(index="model", columns="layer", values=c).astype(float).reindex_like(diff).to_numpy()
        for c in ("marked", "difference_se")
    }
    finite = np.isfinite(diff.to_numpy(dtype=float))
    marked = finite & (wide["marked"] == 1.0)
    unknown = finite & ~np.isfinite(wide["difference_se"])
    return marked, unknown


def _significance_legend(
    significant_known: bool, unknown: np.ndarray, cell: tuple[float, float], min_difference: float
) -> list[Any]:
    """Legend entries for Fig. 4's marks: what a dot means (the dot as drawn in a ``cell``) where
    any cell could be tested, and that the uncertainty is unknown (nothing marked there) where
    some or all could not."""
    handles: list[Any] = []
    if significant_known:
        handles.append(Line2D([], [], linestyle="", markersize=math.sqrt(mark_size(cell)),
                              markeredgewidth=MARK_STYLE["linewidth"], marker=MARK_STYLE["marker"],
                              markerfacecolor=MARK_STYLE["facecolor"], markeredgecolor=MARK_STYLE["edgecolor"],
                              label=significance_label(min_difference)))  # fmt: skip
    if unknown.any():
        if significant_known:
            text = f"uncertainty unknown in {int(unknown.sum())} cells: not tested"
        else:
            text = "uncertainty unknown: nothing marked"
        handles.append(Line2D([], [], linestyle="", marker="", label=text))
    return handles


def difference_heatmap(
    summary: pd.DataFrame,
    models: pd.DataFrame,
    categories: Sequence[Mapping[str, Any]],
    baseline: str,
    out_base: str | Path,
    *,
    title: str | None = None,
    min_difference: float = MIN_DIFFERENCE,
) -> list[Path]:
    """Fig. 4: criticality minus the baseline model's criticality, per layer, in percentage points.

    Fixed range −100…100 (``coolwarm``) as in the paper, so colours compare across studies. The
    baseline row (all zeros by construction) stays, as in the paper: the anchor the others are
    read against. Margin axes are symmetric, data-driven and capped at ±100 so that small
    differences remain visible there.

    Only models with the baseline's layer list can be compared with it (a ViT's ``head`` is not
    a ResNet's ``fc``), so the figure has one panel; other figure models are left out, named in
    a note above the legend and in a logged warning. Where no figure model but the baseline has
    its layers there is nothing to compare: ``ValueError`` (a study then leaves the figure out,
    ``Study.figures_left_out``). A dot marks each cell that
    ``difference_from_baseline`` finds different from the baseline beyond the 95 % interval of
    seeds and images and by at least ``min_difference`` points (config figures.min_difference;
    the legend states it); where that uncertainty is unknown (no ``criticality_se``, e.g. the
    published results or tables from before it) nothing is marked and the legend says so.
    """
    summary = _with_string_ids(summary)
    wide = pivot(summary, "criticality_mean")
    base = str(baseline)
    if base not in wide.index:
        raise ValueError(f"baseline model {baseline!r} has no rows in summary")
    rows = ordered_models(models, categories)
    compared = _comparable_with(summary, models, rows, base)
    if not set(compared) - {base}:  # Study.figures_left_out leaves such a study's Fig. 4 out
        raise ValueError(
            f"difference_heatmap: no figure model besides the baseline {base!r} shares the baseline's layers: "
            "nothing to compare with it (its own row is all zeros)"
        )
    panel = panel_of(summary, rows[rows["model"].isin(compared)], "criticality_mean")
    diff = panel.matrix - wide.loc[base].reindex(panel.matrix.columns)
    marked, unknown = _marks(summary, base, diff, min_difference)
    names = _display_names(models)
    base_name = names.get(base, base)
    left_out = [m for m in rows["model"] if m not in compared]
    note = None
    if left_out:
        base_arch = next((a for a in architectures(models[models["model"].astype(str) == base]) if a), "")
        note = _left_out_note(rows, left_out, model_layer_lists(summary), names, base, base_arch)
        log.warning("difference_heatmap: %s", note)
    known = bool((np.isfinite(diff.to_numpy(dtype=float)) & ~unknown).any())
    shown = HeatmapPanel(diff, panel.rows, panel.layers, panel.architectures, marks=marked)
    with figure_style():
        fig = draw_heatmap(
            [shown], cmap_name="coolwarm", vmin=-100, vmax=100,
            cbar_label=f"Criticality − {base_name} [pp]", title=title, value_bound=DIFFERENCE_BOUND,
            fixed_margins=False, row_margin_label="mean ± std\nover layers [pp]",
            col_margin_label="mean ± std\nover models [pp]", row_label_title=row_label_title(models),
            legend_extra=_significance_legend(known, unknown, cell_size([diff.shape]), min_difference), note=note,
        )  # fmt: skip
    return common.save_figure(fig, out_base)
