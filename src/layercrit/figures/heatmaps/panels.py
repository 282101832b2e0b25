"""Tables → heatmap panels: the aggregation step's tidy ``summary`` pivoted into one models ×
layers matrix per layer list (``heatmap_panels``), since a study may mix architectures whose
layers are different layers even where names agree (``layer_list_groups``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from layercrit.figures.common import architecture_name, architectures, ordered_models
from layercrit.figures.heatmaps.labels import layer_label

def layer_table(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per layer in ``layer_index`` order, with its label (``layer_label``)."""
    cols = [c for c in ("layer", "layer_index", "layer_type", "kernel") if c in summary]
    layers = summary[cols].copy()
    layers["layer"] = layers["layer"].astype(str)
    layers = layers.sort_values("layer_index", kind="stable").drop_duplicates("layer", keep="first")
    layers["label"] = [
        layer_label(r.layer, getattr(r, "layer_type", ""), getattr(r, "kernel", ""))
        for r in layers.itertuples(index=False)
    ]
    return layers.reset_index(drop=True)


def pivot(summary: pd.DataFrame, value: str) -> pd.DataFrame:
    """``value`` as a models × layers matrix (ids as strings); duplicate rows are an error."""
    if value not in summary:
        raise ValueError(f"summary has no column {value!r}")
    s = summary.assign(model=summary["model"].astype(str), layer=summary["layer"].astype(str))
    dup = s.duplicated(["model", "layer"])
    if dup.any():
        first = s.loc[dup, ["model", "layer"]].iloc[0].tolist()
        raise ValueError(f"summary has duplicate model × layer rows, e.g. {first}")
    return s.pivot(index="model", columns="layer", values=value).astype(float)


def heatmap_matrix(
    summary: pd.DataFrame,
    models: pd.DataFrame,
    categories: Sequence[Mapping[str, Any]],
    value: str = "criticality_mean",
) -> pd.DataFrame:
    """The heatmap's data for a study of one layer list: rows = figure models (``ordered_models``
    order, index = model id), columns = layer names in ``layer_index`` order. Missing model ×
    layer cells are NaN. With several layer lists the columns would mix architectures: use
    ``heatmap_panels``, which gives one such matrix per layer list."""
    rows = ordered_models(models, categories)["model"].tolist()
    cols = layer_table(summary)["layer"].tolist()
    wide = pivot(summary, value)
    return wide.reindex(index=rows, columns=cols).rename_axis(index="model", columns="layer")


LayerList = tuple[str, ...]  # a model's layer names in layer_index order


def model_layer_lists(summary: pd.DataFrame) -> dict[str, LayerList]:
    """Each model's layer names in ``layer_index`` order (the order its architecture lists them)."""
    s = summary.assign(model=summary["model"].astype(str), layer=summary["layer"].astype(str))
    s = s.sort_values("layer_index", kind="stable")
    return {model: tuple(dict.fromkeys(group["layer"])) for model, group in s.groupby("model", sort=False)}


def _host(key: LayerList, keys: Sequence[LayerList], archs: Mapping[LayerList, set[str]]) -> LayerList | None:
    """The longest layer list (first of equals) that ``key`` is a strict part of and whose models
    have every known architecture of ``key``'s: there, ``key``'s models only lack some results."""
    hosts = [h for h in keys if len(h) > len(key) and set(key) <= set(h) and archs[key] <= archs[h]]
    return max(hosts, key=len) if hosts else None


def layer_list_groups(
    order: Sequence[str], lists: Mapping[str, LayerList], architecture: Mapping[str, str]
) -> list[list[str]]:
    """The models of ``order`` grouped by their layer list, groups in order of their first model.

    Models with identical lists share a group whatever their architecture ids (the same network
    from another source). A model whose results lack some layers of its architecture's list (a
    partial run, published results with gaps) joins the group of its architecture's full list,
    where its missing cells show as missing, instead of opening a panel of its own; a model
    without any results joins its architecture's group, else the first one. (Without
    architecture ids, as in tables from before they were written, a list that is part of another
    counts as gaps: those tables come from studies of one architecture.)
    """
    exact: dict[LayerList, list[str]] = {}
    for model in order:
        exact.setdefault(lists.get(model, ()), []).append(model)
    keys = list(exact)
    archs = {k: {architecture.get(m, "") for m in exact[k]} - {""} for k in keys}
    target = {k: _host(k, keys, archs) for k in keys}
    groups: dict[LayerList, list[str]] = {}
    for k in keys:
        root = k
        while target[root] is not None:
            root = target[root]
        if not root and len(keys) > 1:  # no results and no architecture to go by: the first group
            root = next(h for h in keys if h)
        groups.setdefault(root, []).extend(exact[k])
    position = {m: i for i, m in enumerate(order)}
    ordered = [sorted(members, key=position.__getitem__) for members in groups.values()]
    return sorted(ordered, key=lambda members: position[members[0]])


@dataclass(frozen=True, eq=False)
class HeatmapPanel:
    """One layer list's heatmap: ``matrix`` (rows = its models in figure order, columns = its
    layers in ``layer_index`` order), the ``ordered_models`` ``rows`` of those models, the
    ``layers`` table (with ``label``), the architecture ids of its models and, for Fig. 4, the
    cells to mark (``marks``, bool, the matrix's shape)."""

    matrix: pd.DataFrame
    rows: pd.DataFrame
    layers: pd.DataFrame
    architectures: tuple[str, ...]
    marks: np.ndarray | None = None

    @property
    def title(self) -> str:
        """Which architecture(s) and how many layers: "resnet50 (54 layers)"."""
        names = ", ".join(self.architectures) or architecture_name("")
        return f"{names} ({len(self.layers)} layers)"


def panel_of(summary: pd.DataFrame, rows: pd.DataFrame, value: str) -> HeatmapPanel:
    """The panel of ``rows``' models: their layers (the union of their lists) and values."""
    members = rows["model"].tolist()
    layers = layer_table(summary[summary["model"].astype(str).isin(members)])
    matrix = pivot(summary, value).reindex(index=members, columns=layers["layer"].tolist())
    archs = tuple(a for a in dict.fromkeys(architectures(rows)) if a)
    return HeatmapPanel(matrix.rename_axis(index="model", columns="layer"), rows.reset_index(drop=True), layers, archs)


def groups_of(summary: pd.DataFrame, rows: pd.DataFrame, order: Sequence[str]) -> list[list[str]]:
    """``layer_list_groups`` of the models in ``order``, their architectures read from ``rows``."""
    architecture = dict(zip(rows["model"], architectures(rows)))
    return layer_list_groups(order, model_layer_lists(summary), architecture)


def heatmap_panels(
    summary: pd.DataFrame,
    models: pd.DataFrame,
    categories: Sequence[Mapping[str, Any]],
    value: str = "criticality_mean",
) -> list[HeatmapPanel]:
    """The figure models split by layer list (``layer_list_groups``), one ``HeatmapPanel`` each,
    panels in the order of their first model (so the panel of the first category, usually the
    baseline's, comes first) and rows in figure order within each. One panel for a study of one
    architecture; its matrix is then ``heatmap_matrix``."""
    pivot(summary, value)  # a missing column or duplicate rows are reported as such
    rows = ordered_models(models, categories)
    groups = groups_of(summary, rows, rows["model"].tolist())
    return [panel_of(summary, rows[rows["model"].isin(members)], value) for members in groups]
