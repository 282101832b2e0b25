"""Figs. 1, 4 and 5: models × layers heatmaps (criticality, its difference from the baseline
model, its std over seeds) with a category band and mean ± std margins.

A study may mix architectures (a ResNet-50 and a ViT): their layers are different layers even
where names agree, so a heatmap has one panel per layer list (``heatmap_panels``), stacked in one
figure that shares the colour scale, the margins' scales and the category legend. A study of one
architecture has one panel, drawn as before.
"""

from __future__ import annotations

import math
import re
import textwrap
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.colors import Colormap, ListedColormap, Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle
from matplotlib.transforms import blended_transform_factory

from layercrit.figures import common
from layercrit.figures.common import ACCURACY_TEXT, architecture_name, architectures, figure_style, ordered_models
from layercrit.statistics import CRITICALITY_RANGE, accuracy_sources, cell_text, figure_models

CRITICALITY_LABEL = "Layer Criticality [%]"
# Cells without a finite value are drawn hatched on white: a flat grey would be indistinguishable
# from the neutral middle of ``coolwarm`` (0 difference) in Fig. 4.
NAN_HATCH = "////"
NAN_HATCH_COLOR = "#8c8c8c"
PARTIAL_HATCH = "xxxx"  # margin bars that average only the finite cells of their row or column
# Fig. 4's mark of a cell that differs from the baseline beyond its uncertainty: a black dot in a
# white ring reads on every colour of ``coolwarm``, from dark blue through grey to dark red.
SIGNIFICANCE_GID = "significance_marks"
_MARK_STYLE = {"marker": "o", "facecolor": "black", "edgecolor": "white", "linewidth": 0.6}

# --------------------------------------------------------------------------------------------
# Layer labels
# --------------------------------------------------------------------------------------------

_BLOCK_CONV = re.compile(r"^layer(\d+)\.(\d+)\.(conv\d+)$")
_BLOCK_DOWNSAMPLE = re.compile(r"^layer(\d+)\.(\d+)\.downsample\.\d+$")
_BLOCK_NORM = re.compile(r"^layer(\d+)\.(\d+)\.(bn\d+)$")


def paper_layer_label(layer: str, layer_type: str, kernel: str) -> str:
    """Paper-style column label for a module of a bottleneck ResNet.

    ``conv1`` → ``[0.0] conv:7x7``; ``layer2.3.conv2`` → ``[2.3] conv2:3x3``;
    ``layer1.0.downsample.0`` → ``[1.0] downsample``; ``fc`` → ``[Head] fc``; anything else is
    returned unchanged. A ``model.`` prefix (as in the authors' raw CSV) is tolerated.
    ``layer_label`` uses it for ResNet names and labels every other architecture.
    """
    name = cell_text(layer)
    core = name[len("model.") :] if name.startswith("model.") else name
    kernel = cell_text(kernel)
    suffix = f":{kernel}" if kernel else ""
    if core == "conv1":
        return f"[0.0] conv{suffix}"
    if core == "fc":
        return "[Head] fc"
    if m := _BLOCK_CONV.match(core):
        return f"[{m[1]}.{m[2]}] {m[3]}{suffix}"
    if (m := _BLOCK_DOWNSAMPLE.match(core)) and cell_text(layer_type) in ("", "Conv2d"):
        return f"[{m[1]}.{m[2]}] downsample"
    return name


# Substrings of a module type that make it a normalization layer, and how its label marks it.
_NORM_KINDS = (
    ("batchnorm", "BN"), ("layernorm", "LN"), ("groupnorm", "GN"), ("instancenorm", "IN"), ("rmsnorm", "RMS"),
)  # fmt: skip
# Top-level modules before the first block and after the last one (timm's names).
_STEM_MODULES = frozenset({"stem", "patch_embed", "conv_stem"})
_HEAD_MODULES = frozenset({"head", "fc", "fc_norm", "classifier", "conv_head", "pre_logits"})
# Containers of blocks: a module named ``stages.1.blocks.0`` is block [1.0] itself.
_BLOCK_CONTAINERS = frozenset({"blocks", "layers", "stages"})


def norm_kind(layer_type: str) -> str:
    """"BN", "LN", "GN", … for a normalization layer type (``BatchNorm2d``, ``LayerNorm2d``,
    timm's ``BatchNormAct2d``), "norm" for another ``*Norm*`` type, "" for any other layer.

    Labels mark such layers: resetting a norm layer resets a per-channel scale and shift, not a
    weight matrix, and its criticality reads differently."""
    kind = cell_text(layer_type).lower()
    for key, short in _NORM_KINDS:
        if key in kind:
            return short
    return "norm" if "norm" in kind else ""


# torchvision's containers, renamed to timm's so that one labelling serves both: a ViT's
# encoder layers and patch projection, a RegNet's stages and blocks, the stem that MobileNet,
# EfficientNet and ConvNeXt keep as the first of their ``features``.
_TORCHVISION_NAMES = (
    (re.compile(r"^encoder\.layers\.encoder_layer_(\d+)\."), r"blocks.\1."),
    (re.compile(r"^encoder\.ln$"), "norm"),
    (re.compile(r"^conv_proj$"), "patch_embed.proj"),
    (re.compile(r"^heads\.head$"), "head"),
    (re.compile(r"^trunk_output\.block(\d+)\.block\d+-(\d+)\."), r"stages.\1.blocks.\2."),
    (re.compile(r"^features\.0\.(\d+)$"), r"stem.\1"),
    (re.compile(r"^stage(\d+)\."), r"stages.\1."),  # ShuffleNetV2
    (re.compile(r"^features\.denseblock(\d+)\.denselayer(\d+)\."), r"stages.\1.blocks.\2."),  # DenseNet
)
# A module that is a member of a Sequential is named by its index alone ("block.0.0"): its kind
# is put before the index ("block.0 conv0"), which stays (two Linear layers of one MLP).
_KIND_NAMES = {"Conv2d": "conv", "Linear": "linear"}


def _torchvision_to_timm(core: str) -> str:
    for pattern, replacement in _TORCHVISION_NAMES:
        core = pattern.sub(replacement, core)
    return core


def _member_kind(rest: str, layer_type: str, kind: str) -> str:
    """``rest`` with a trailing Sequential index named by the layer's kind (conv0, linear3, bn1)."""
    container, _, index = rest.rpartition(".")
    if not index.isdigit():
        return rest
    what = kind.lower() if kind else _KIND_NAMES.get(layer_type, layer_type.lower())
    return f"{container} {what}{index}" if container else f"{what}{index}"


def _split_position(core: str) -> tuple[list[str], str]:
    """Leading block indices of a module name and the rest: ``stages.1.blocks.0.conv_dw`` →
    (["1", "0"], "conv_dw"); ``blocks.3.attn.qkv`` → (["3"], "attn.qkv"); nested Sequential
    indices join them (``blocks.1.0.conv_dw`` → (["1", "0"], "conv_dw")). A name that ends in
    its index (``stem.0``) keeps it: that index is the layer's name, not its position."""
    parts = core.split(".")
    position: list[str] = []
    i = 0
    while i < len(parts) - 1:
        if parts[i] == "block":  # torchvision's Sequential inside a block: a role, not a position
            break
        if parts[i].isdigit() and position:
            position.append(parts[i])
            i += 1
        elif not parts[i].isdigit() and parts[i + 1].isdigit() and i + 2 < len(parts):
            position.append(parts[i + 1])
            i += 2
        else:
            break
    return position, ".".join(parts[i:])


def layer_label(layer: str, layer_type: str, kernel: str) -> str:
    """Compact column label of any architecture's layer: "[position] name:kernel", norm layers
    marked with their kind.

    ResNet names keep the paper's labels (``paper_layer_label``), their BatchNorms follow suit
    (``layer1.0.bn2`` → ``[1.0] bn2 (BN)``, ``bn1`` → ``[0.0] bn (BN)``). Other architectures: the
    block indices in brackets and the module's name within its block (ViT ``blocks.3.attn.qkv`` →
    ``[3] attn.qkv``; ConvNeXt ``stages.1.blocks.0.conv_dw`` → ``[1.0] conv_dw:7x7``,
    ``stages.1.blocks.0.norm`` → ``[1.0] norm (LN)``; a whole block, ``stages.1.blocks.0`` of
    type ``ConvNeXtBlock`` (its layer scale), → ``[1.0] ConvNeXtBlock``); stem and head modules
    tagged as such (``patch_embed.proj`` → ``[Stem] proj:16x16``, ``head.fc`` → ``[Head] fc``).
    Anything else is the module's name, with its kernel and norm mark. Labels stay short because
    the column labels' height is set by the longest, and distinct within a layer list.
    """
    name = cell_text(layer)
    core = _torchvision_to_timm(name[len("model.") :] if name.startswith("model.") else name)
    kind = norm_kind(layer_type)
    mark = f" ({kind})" if kind else ""
    kernel = cell_text(kernel)
    suffix = f":{kernel}" if kernel and not kind else ""
    if not kind and (paper := paper_layer_label(layer, layer_type, kernel)) != name:
        return paper
    if kind and core == "bn1":
        return f"[0.0] bn{mark}"
    if kind and (m := _BLOCK_NORM.match(core)):
        return f"[{m[1]}.{m[2]}] {m[3]}{mark}"
    if kind and (m := _BLOCK_DOWNSAMPLE.match(core)):
        return f"[{m[1]}.{m[2]}] downsample{mark}"
    position, rest = _split_position(core)
    container, _, index = rest.rpartition(".")
    if position and container in _BLOCK_CONTAINERS and index.isdigit():  # a whole block (its own
        position, rest = [*position, index], cell_text(layer_type) or container  # parameters)
    if position:
        return f"[{'.'.join(position)}] {_member_kind(rest, cell_text(layer_type), kind)}{suffix}{mark}"
    first, _, tail = core.partition(".")
    tag = "Stem" if first in _STEM_MODULES else "Head" if first in _HEAD_MODULES else ""
    if not tag:
        return f"{core}{suffix}{mark}"
    shown = tail if tail and not tail.isdigit() else core  # "stem.0" stays whole: "0" says nothing
    return f"[{tag}] {shown}{suffix}{mark}"


# --------------------------------------------------------------------------------------------
# Tables → ordered matrices, one per layer list
# --------------------------------------------------------------------------------------------


def _layer_table(summary: pd.DataFrame) -> pd.DataFrame:
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


def _pivot(summary: pd.DataFrame, value: str) -> pd.DataFrame:
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
    cols = _layer_table(summary)["layer"].tolist()
    wide = _pivot(summary, value)
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


def _panel(summary: pd.DataFrame, rows: pd.DataFrame, value: str) -> HeatmapPanel:
    """The panel of ``rows``' models: their layers (the union of their lists) and values."""
    members = rows["model"].tolist()
    layers = _layer_table(summary[summary["model"].astype(str).isin(members)])
    matrix = _pivot(summary, value).reindex(index=members, columns=layers["layer"].tolist())
    archs = tuple(a for a in dict.fromkeys(architectures(rows)) if a)
    return HeatmapPanel(matrix.rename_axis(index="model", columns="layer"), rows.reset_index(drop=True), layers, archs)


def _groups_of(summary: pd.DataFrame, rows: pd.DataFrame, order: Sequence[str]) -> list[list[str]]:
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
    _pivot(summary, value)  # a missing column or duplicate rows are reported as such
    rows = ordered_models(models, categories)
    groups = _groups_of(summary, rows, rows["model"].tolist())
    return [_panel(summary, rows[rows["model"].isin(members)], value) for members in groups]


# --------------------------------------------------------------------------------------------
# Heatmap drawing
# --------------------------------------------------------------------------------------------

def _nice_ceil(x: float) -> float:
    """Smallest of 1, 2, 2.5, 5 × 10^k that is ≥ x (axis limits that read well)."""
    if not np.isfinite(x) or x <= 0:
        return 1.0
    base = 10 ** math.floor(math.log10(x))
    for step in (1, 2, 2.5, 5, 10):
        if step * base >= x * (1 - 1e-9):
            return step * base
    return 10 * base


def _abs_max(*arrays: np.ndarray) -> float:
    """Largest finite |value| over the arrays; 0 when there is none (all-NaN margins)."""
    vals = np.abs(np.concatenate([np.ravel(a) for a in arrays]))
    vals = vals[np.isfinite(vals)]
    return float(vals.max()) if vals.size else 0.0


def _margin_extent(mean: np.ndarray, std: np.ndarray, bound: tuple[float, float], fixed: bool) -> tuple[float, float]:
    """Axis range of a margin panel. ``fixed``: the values' ``bound`` itself (criticality is
    0–100 by construction, so bars read against the same scale in every study); otherwise the
    data's |mean ± std| rounded up (1/2/2.5/5 × 10^k) and capped at the bound, so that small
    values (differences, seed spreads) stay visible. Symmetric around 0 for a signed bound."""
    lo, hi = bound
    if not fixed:
        hi = min(max(abs(lo), hi), _nice_ceil(_abs_max(mean + std, mean - std)))
        lo = -hi if lo < 0 else 0.0
    return float(lo), float(hi)


def _clipped_whiskers(mean: np.ndarray, std: np.ndarray, extent: tuple[float, float]) -> np.ndarray:
    """Asymmetric error-bar lengths (2 × n) for mean ± std that end at the panel's edges: a
    quantity bounded at 100 cannot spread past it, and a whisker cut by the axes frame would hide
    its cap. The printed "mean ± std" keeps the unclipped std."""
    lo, hi = extent
    below = np.minimum(std, np.maximum(mean - lo, 0.0))
    above = np.minimum(std, np.maximum(hi - mean, 0.0))
    return np.vstack([below, above])


def _nan_stats(values: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and sample std (ddof=1, as pandas) over the finite values, and how many there are;
    NaN where nothing is finite. The figures show the count wherever values were left out."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices / single values
        mean = np.nanmean(values, axis=axis)
        finite = np.isfinite(values).sum(axis=axis)
        std = np.where(finite > 1, np.nanstd(values, axis=axis, ddof=1), np.where(finite == 1, 0.0, np.nan))
    return mean, std, finite


def _hatch(bars: Any, which: np.ndarray) -> None:
    """Hatch the margin bars that average only some of their cells."""
    for bar, partial in zip(bars, which):
        if partial:
            bar.set_hatch(PARTIAL_HATCH)
            bar.set_edgecolor("white")


def _legend_width(entry_in: Sequence[float], ncol: int) -> float:
    """Width of a legend of entries this wide in ``ncol`` columns. Matplotlib fills column by
    column, the first ``n % ncol`` columns one entry longer, each as wide as its widest entry."""
    rows, large = divmod(len(entry_in), ncol)
    sizes = [rows + 1] * large + [rows] * (ncol - large)
    starts = np.cumsum([0, *sizes])
    return sum(max(entry_in[a:b]) for a, b in zip(starts[:-1], starts[1:]) if b > a)


def _legend_columns(labels: Sequence[str], available_in: float, char_in: float) -> int:
    """Legend columns for the fewest rows whose estimated width fits ``available_in`` inches,
    and of those the fewest columns, so that the columns are filled evenly (9 entries in two
    rows: 5 columns, not 8 with one of two entries and seven of one)."""
    entry = [len(s) * char_in + 0.45 for s in labels]  # handle + padding ≈ 0.45 in
    widest = next((n for n in range(len(labels), 1, -1) if _legend_width(entry, n) <= available_in), 1)
    even = math.ceil(len(labels) / math.ceil(len(labels) / widest))
    return even if _legend_width(entry, even) <= available_in else widest


# Whiskers end exactly at the panel's edge at most (``_clipped_whiskers``): drawn unclipped, so
# a cap there shows in full instead of being cut in half by the axes frame.
_WHISKERS = {"elinewidth": 0.7, "capsize": 1.2, "ecolor": "#333333", "clip_on": False}
_CHAR_IN = 7 * 0.55 / 72  # approximate width of a 7 pt glyph (≈ 0.55 em) in inches
_NOTE_CHARS = 150  # a note wraps at the figure's width, but never to lines longer than this
_PARTIAL_LABEL = "margin over the finite cells only (n = their number)"
_NAN_LABEL = "not finite / missing"
_POSITION = re.compile(r"^\[([^\].]+)")


def _column_group(label: str) -> str:
    """What a white rule separates: the first number of the label's position (a ResNet or
    ConvNeXt stage, a ViT block), the stem, the head; a label without position stands alone.
    The rules guide the eye on big grids."""
    m = _POSITION.match(label)
    return m[1] if m else label


@dataclass(frozen=True)
class _PanelStats:
    """A panel's values (±inf as NaN: it would saturate silently) and its margins: mean, sample
    std and count of the finite cells per row and column, and which of them lack some cells."""

    values: np.ndarray
    row_mean: np.ndarray
    row_std: np.ndarray
    row_n: np.ndarray
    col_mean: np.ndarray
    col_std: np.ndarray
    col_n: np.ndarray
    row_partial: np.ndarray
    col_partial: np.ndarray
    col_labels: list[str]


def _panel_stats(panel: HeatmapPanel) -> _PanelStats:
    """Margins average the finite cells only; where a row or column lacks some, its label says how
    many it has and its bar is hatched, so that no margin silently stands for fewer cells."""
    values = panel.matrix.to_numpy(dtype=float)
    values = np.where(np.isfinite(values), values, np.nan)
    n_rows, n_cols = values.shape
    row_mean, row_std, row_n = _nan_stats(values, axis=1)
    col_mean, col_std, col_n = _nan_stats(values, axis=0)
    anything = bool(np.isfinite(values).any())
    row_partial = (row_n < n_cols) & anything
    col_partial = (col_n < n_rows) & anything
    labels = panel.layers["label"].tolist()
    col_labels = [f"{label} (n={k})" if part else label for label, k, part in zip(labels, col_n, col_partial)]
    return _PanelStats(values, row_mean, row_std, row_n, col_mean, col_std, col_n, row_partial, col_partial, col_labels)


@dataclass(frozen=True)
class _Box:
    """Where one panel goes, in inches from the figure's lower left corner."""

    x_band: float
    x_hm: float
    x_right: float
    y_bottom: float
    y_hm: float
    hm_w: float
    hm_h: float
    bottom_h: float


@dataclass(frozen=True)
class _Layout:
    """The whole figure's geometry in inches (see ``_layout``): size, one box per panel (top
    first), the colour bar's rectangle, the cell size and what sits above the top panel."""

    fig_w: float
    fig_h: float
    boxes: list[_Box]
    band_w: float
    right_w: float
    cbar: tuple[float, float, float, float]
    cell: tuple[float, float]
    title_h: float  # above each panel: its title (several panels only)
    legend_cols: int
    legend_h: float
    note_lines: list[str]


_NOTE_LINE_H = 0.15


def _layout(
    stats: Sequence[_PanelStats],
    rows: Sequence[pd.DataFrame],
    legend_labels: Sequence[str],
    note: str | None,
    title: bool,
) -> _Layout:
    """Panels stacked top to bottom, laid out in inches so cells keep a legible size whatever the
    matrix shape; ``bbox_inches="tight"`` on saving then crops or extends to the labels.

    Every panel has the same cell size, so that a cell reads the same in each and the panels
    form one grid, left-aligned at a common row-label column. The width is the one-panel rule
    applied to the widest panel (roomy for a small demo, ~0.19 in, ≈ 13.7 pt, where 7 pt text
    fits, for the paper's 54 layers or a ViT's 80): a 17-layer panel beside an 80-layer one is
    narrower, not stretched, and its margins follow right after it. The height rule uses all
    rows together, so the figure is as tall as one heatmap of every model would be."""
    cw, ch = _cell_size([s.values.shape for s in stats])
    label_w = max(len(s) for r in rows for s in r["row_label"]) * _CHAR_IN + 0.15
    band_w, gap = 0.14, 0.06
    right_w = 1.0
    right_text_w = 1.1 if any(s.row_partial.any() for s in stats) else 0.75
    bottom_h, panel_gap = 0.85, 0.15
    title_h = 0.25 if len(stats) > 1 else 0.0
    x_band = label_w
    x_hm = x_band + band_w + gap
    boxes: list[_Box] = []
    y0 = 0.0
    for s in reversed(stats):  # bottom panel first
        hm_w, hm_h = s.values.shape[1] * cw, s.values.shape[0] * ch
        y_bottom = y0 + max(len(t) for t in s.col_labels) * _CHAR_IN + 0.15
        y_hm = y_bottom + bottom_h + 0.1
        x_right = x_hm + hm_w + 0.22  # room for the first tick label of the margin below
        boxes.insert(0, _Box(x_band, x_hm, x_right, y_bottom, y_hm, hm_w, hm_h, bottom_h))
        y0 = y_hm + hm_h + title_h + panel_gap
    top = boxes[0]
    x_cbar = max(b.x_right for b in boxes) + right_w + right_text_w + 0.1
    cbar_w = 0.14
    fig_w = x_cbar + cbar_w + 0.7
    legend_cols = _legend_columns(legend_labels, max(b.hm_w for b in boxes) + right_w + right_text_w, _CHAR_IN)
    legend_h = 0.06 + 0.18 * math.ceil(len(legend_labels) / legend_cols)
    width = min(_NOTE_CHARS, max(40, int((fig_w - x_hm - 0.2) / _CHAR_IN)))
    note_lines = textwrap.wrap(note, width) if note else []
    note_h = _NOTE_LINE_H * len(note_lines) + (0.05 if note_lines else 0.0)
    top_edge = top.y_hm + top.hm_h + title_h
    fig_h = top_edge + legend_h + note_h + (0.3 if title else 0.05)
    # The colour bar beside the top panel, centred on it, within the panels' span; a heatmap of
    # a few rows lends it the height of its column margin too, or it would be too short to read.
    hi = top.y_hm + top.hm_h
    lo = boxes[-1].y_hm if hi - boxes[-1].y_hm >= 1.6 else boxes[-1].y_bottom
    cb_h = min(hi - lo, max(1.6, 0.6 * top.hm_h))
    cb_y = min(max(top.y_hm + (top.hm_h - cb_h) / 2, lo), hi - cb_h)
    return _Layout(fig_w, fig_h, boxes, band_w, right_w, (x_cbar, cb_y, cbar_w, cb_h), (cw, ch), title_h,
                   legend_cols, legend_h, note_lines)  # fmt: skip


def _cell_size(shapes: Sequence[tuple[int, ...]]) -> tuple[float, float]:
    """Cell width and height in inches of panels of these (rows, columns) shapes (see ``_layout``)."""
    n_cols = max(shape[1] for shape in shapes)
    n_rows = sum(shape[0] for shape in shapes)
    return float(np.clip(10.0 / n_cols, 0.19, 0.34)), float(np.clip(8.0 / n_rows, 0.19, 0.32))


@dataclass(frozen=True)
class _Style:
    """What every panel of one figure shares: colours and the margins' scales and labels."""

    cmap: Colormap
    norm: Normalize
    signed: bool
    row_extent: tuple[float, float]
    col_extent: tuple[float, float]
    row_margin_label: str
    col_margin_label: str
    row_label_title: str


def _draw_cells(fig: Figure, box: list[float], s: _PanelStats, style: _Style) -> Any:
    """The heatmap axes. NaN cells are transparent and show a hatched background instead."""
    ax = fig.add_axes(box)
    n_rows, n_cols = s.values.shape
    ax.add_patch(
        Rectangle(
            (-0.5, -0.5), n_cols, n_rows, facecolor="white", edgecolor=NAN_HATCH_COLOR,
            hatch=NAN_HATCH, linewidth=0, zorder=0.5,
        )
    )  # fmt: skip
    ax.imshow(
        np.ma.masked_invalid(s.values), cmap=style.cmap, norm=style.norm, aspect="auto",
        interpolation="nearest", zorder=1,
    )  # fmt: skip
    ax.set_xlim(-0.5, n_cols - 0.5)
    ax.set_ylim(n_rows - 0.5, -0.5)
    ax.tick_params(left=False, labelleft=False, bottom=False, labelbottom=False)
    return ax


def _draw_band(fig: Figure, box: list[float], ax: Any, rows: pd.DataFrame) -> Any:
    """Category band with the row labels to its left; white rules between category groups."""
    ax_band = fig.add_axes(box, sharey=ax)
    cats = rows["category"].tolist()
    for i in range(1, len(cats)):
        if cats[i] != cats[i - 1]:
            for a in (ax, ax_band):
                a.axhline(i - 0.5, color="white", linewidth=1.2, zorder=3)
    cat_ids = list(dict.fromkeys(cats))
    cat_color = dict(zip(rows["category"], rows["category_color"]))
    band = np.array([[cat_ids.index(c)] for c in cats])
    ax_band.imshow(
        band, cmap=ListedColormap([cat_color[c] for c in cat_ids]), vmin=-0.5,
        vmax=len(cat_ids) - 0.5, aspect="auto", interpolation="nearest",
    )  # fmt: skip
    ax_band.set_xticks([])
    ax_band.set_yticks(range(len(cats)), rows["row_label"].tolist())
    ax_band.tick_params(axis="y", length=0, pad=3)
    for spine in ax_band.spines.values():
        spine.set_visible(False)
    return ax_band


def _draw_row_margin(fig: Figure, box: list[float], ax: Any, s: _PanelStats, rows: pd.DataFrame, style: _Style) -> None:
    """Right margin: per-row mean ± std over columns, as a bar with error and as numbers."""
    ax_right = fig.add_axes(box, sharey=ax)
    ypos = np.arange(len(rows))
    bars = ax_right.barh(
        ypos, s.row_mean, height=0.72, color=rows["category_color"].tolist(),
        xerr=_clipped_whiskers(s.row_mean, s.row_std, style.row_extent), error_kw=_WHISKERS,
    )  # fmt: skip
    _hatch(bars, s.row_partial)
    ax_right.set_xlim(*style.row_extent)
    if style.signed:
        ax_right.axvline(0, color="#333333", linewidth=0.6)
    ax_right.tick_params(left=False, labelleft=False)
    ax_right.set_xlabel(style.row_margin_label)
    ax_right.xaxis.set_major_locator(mpl.ticker.MaxNLocator(nbins=2, steps=[1, 2, 2.5, 5, 10]))
    ax_right.grid(axis="x", color="#dddddd", linewidth=0.5)
    ax_right.set_axisbelow(True)
    trans = blended_transform_factory(ax_right.transAxes, ax_right.transData)
    for y, mu, sd, k, part in zip(ypos, s.row_mean, s.row_std, s.row_n, s.row_partial):
        text = "n/a" if not np.isfinite(mu) else f"{mu:.1f} ± {sd:.1f}"
        text += f" (n={k})" if part and np.isfinite(mu) else ""
        ax_right.text(1.04, y, text, transform=trans, va="center", ha="left", fontsize=6.5)


def _draw_col_margin(fig: Figure, box: list[float], ax: Any, s: _PanelStats, style: _Style) -> None:
    """Bottom margin: per-column mean ± std over rows; it carries the column labels."""
    ax_bottom = fig.add_axes(box, sharex=ax)
    xpos = np.arange(s.values.shape[1])
    bars = ax_bottom.bar(
        xpos, s.col_mean, width=0.72, color="#7f7f7f",
        yerr=_clipped_whiskers(s.col_mean, s.col_std, style.col_extent), error_kw=_WHISKERS,
    )  # fmt: skip
    _hatch(bars, s.col_partial)
    ax_bottom.set_ylim(*style.col_extent)
    if style.signed:
        ax_bottom.axhline(0, color="#333333", linewidth=0.6)
    ax_bottom.set_ylabel(style.col_margin_label)
    ax_bottom.yaxis.set_major_locator(mpl.ticker.MaxNLocator(nbins=2, steps=[1, 2, 2.5, 5, 10]))
    ax_bottom.grid(axis="y", color="#dddddd", linewidth=0.5)
    ax_bottom.set_axisbelow(True)
    ax_bottom.set_xticks(xpos, list(s.col_labels), rotation=90)
    ax_bottom.tick_params(axis="x", length=2)


def _mark_size(cell: tuple[float, float]) -> float:
    """Marker area (pt²) of a significance dot: a third of the smaller cell side across, small
    enough to leave the cell's colour readable around it."""
    return (min(cell) * 72 / 3) ** 2


def _draw_marks(ax: Any, marks: np.ndarray, cell: tuple[float, float]) -> None:
    rows, cols = np.nonzero(marks)
    ax.scatter(cols, rows, s=_mark_size(cell), zorder=4, gid=SIGNIFICANCE_GID, **_MARK_STYLE)


def _draw_panel(fig: Figure, layout: _Layout, box: _Box, panel: HeatmapPanel, s: _PanelStats, style: _Style) -> Any:
    """One panel: cells, category band, both margins, its heading (and title, with several)."""

    def rect(x: float, y: float, w: float, h: float) -> list[float]:
        return [x / layout.fig_w, y / layout.fig_h, w / layout.fig_w, h / layout.fig_h]

    ax = _draw_cells(fig, rect(box.x_hm, box.y_hm, box.hm_w, box.hm_h), s, style)
    _draw_band(fig, rect(box.x_band, box.y_hm, layout.band_w, box.hm_h), ax, panel.rows)
    groups = [_column_group(label) for label in panel.layers["label"]]
    for j in range(1, len(groups)):
        if groups[j] != groups[j - 1]:
            ax.axvline(j - 0.5, color="white", linewidth=0.8, zorder=3)
    if panel.marks is not None and panel.marks.any():
        _draw_marks(ax, panel.marks, layout.cell)
    _draw_row_margin(fig, rect(box.x_right, box.y_hm, layout.right_w, box.hm_h), ax, s, panel.rows, style)
    _draw_col_margin(fig, rect(box.x_hm, box.y_bottom, box.hm_w, box.bottom_h), ax, s, style)
    # Above the row labels, right-aligned with them: what the number in brackets is.
    y_text = (box.y_hm + box.hm_h + 0.05) / layout.fig_h
    fig.text((box.x_band - 0.04) / layout.fig_w, y_text, style.row_label_title, ha="right", va="bottom",
             fontsize=6.5, style="italic")  # fmt: skip
    if layout.title_h:
        fig.text(box.x_hm / layout.fig_w, y_text, panel.title, ha="left", va="bottom", fontsize=8, weight="bold")
    return ax


def _legend_handles(panels: Sequence[HeatmapPanel], stats: Sequence[_PanelStats], extra: Sequence[Any]) -> list[Any]:
    """Category colours of every panel's rows, the NaN hatch if any cell is not finite, the
    partial-margin hatch if any margin lacks cells, then ``extra`` (Fig. 4's marks)."""
    rows = pd.concat([p.rows for p in panels], ignore_index=True)
    cats = dict(zip(rows["category"], zip(rows["category_label"], rows["category_color"])))
    handles: list[Any] = [Patch(facecolor=color, label=label) for label, color in cats.values()]
    if any(np.isnan(s.values).any() for s in stats):
        handles.append(Patch(facecolor="white", edgecolor=NAN_HATCH_COLOR, hatch=NAN_HATCH, label=_NAN_LABEL))
    if any(s.row_partial.any() or s.col_partial.any() for s in stats):
        handles.append(Patch(facecolor="#bbbbbb", edgecolor="white", hatch=PARTIAL_HATCH, label=_PARTIAL_LABEL))
    return handles + list(extra)


def _draw_heatmap(
    panels: Sequence[HeatmapPanel],
    *,
    cmap_name: str,
    vmin: float,
    vmax: float,
    cbar_label: str,
    title: str | None,
    value_bound: tuple[float, float],
    fixed_margins: bool,
    row_margin_label: str,
    col_margin_label: str,
    row_label_title: str,
    legend_extra: Sequence[Any] = (),
    note: str | None = None,
) -> Figure:
    """Heatmap panels stacked vertically (see ``_layout``), each with a category band (left),
    per-row mean ± std (right) and per-column mean ± std (bottom, with its layer labels); one
    colour bar, one legend above the top panel and, with several panels, a title above each.

    ``value_bound``: the range the values can take; margins span it (``fixed_margins``) or the
    data of all panels, capped at it (see ``_margin_extent``): one scale for every panel, so
    that bars compare across them. ``row_label_title`` heads each panel's row labels (it says
    which accuracy they show); ``legend_extra`` are more legend handles; ``note`` is printed
    above the legend (what the figure leaves out)."""
    if not panels or any(0 in p.matrix.shape for p in panels):
        raise ValueError("nothing to plot: no model rows (in_figures) or no layers in summary")
    stats = [_panel_stats(p) for p in panels]
    handles = _legend_handles(panels, stats, legend_extra)
    layout = _layout(stats, [p.rows for p in panels], [h.get_label() for h in handles], note, bool(title))
    joined = {k: np.concatenate([getattr(s, k) for s in stats]) for k in ("row_mean", "row_std", "col_mean", "col_std")}
    style = _Style(
        cmap=mpl.colormaps[cmap_name].with_extremes(bad=(0, 0, 0, 0)), norm=Normalize(vmin=vmin, vmax=vmax),
        signed=value_bound[0] < 0,
        row_extent=_margin_extent(joined["row_mean"], joined["row_std"], value_bound, fixed_margins),
        col_extent=_margin_extent(joined["col_mean"], joined["col_std"], value_bound, fixed_margins),
        row_margin_label=row_margin_label, col_margin_label=col_margin_label, row_label_title=row_label_title,
    )  # fmt: skip

    fig = Figure(figsize=(layout.fig_w, layout.fig_h))
    axes = [_draw_panel(fig, layout, box, p, s, style) for box, p, s in zip(layout.boxes, panels, stats)]
    x, y, w, h = layout.cbar
    cax = fig.add_axes([x / layout.fig_w, y / layout.fig_h, w / layout.fig_w, h / layout.fig_h])
    fig.colorbar(axes[0].images[0], cax=cax, label=cbar_label)

    top, ax = layout.boxes[0], axes[0]
    ax.legend(
        handles=handles, loc="lower left", bbox_to_anchor=(0.0, 1.0 + layout.title_h / top.hm_h),
        ncol=layout.legend_cols, frameon=False, handlelength=1.2, columnspacing=1.2, borderaxespad=0.3,
    )  # fmt: skip
    y_top = top.y_hm + top.hm_h + layout.title_h + layout.legend_h
    for k, line in enumerate(reversed(layout.note_lines)):
        fig.text(top.x_hm / layout.fig_w, (y_top + 0.03 + k * _NOTE_LINE_H) / layout.fig_h, line,
                 va="bottom", ha="left", fontsize=7, style="italic")  # fmt: skip
    if title:
        y_title = y_top + (_NOTE_LINE_H * len(layout.note_lines) + 0.05 if layout.note_lines else 0.0) + 0.05
        fig.text(top.x_hm / layout.fig_w, y_title / layout.fig_h, title, va="bottom", ha="left", fontsize=10,
                 weight="bold")  # fmt: skip
    return fig


def _row_label_title(models: pd.DataFrame) -> str:
    source = accuracy_sources(figure_models(models))[0]  # the one ordered_models' row labels show
    return f"model [{ACCURACY_TEXT[source]} %]"



def criticality_heatmap(
    summary: pd.DataFrame,
    models: pd.DataFrame,
    categories: Sequence[Mapping[str, Any]],
    out_base: str | Path,
    *,
    value: str = "criticality_mean",
    title: str | None = None,
) -> list[Path]:
    """Fig. 1: models × layers criticality (0–100 %, ``viridis_r``) with category band,
    per-model mean ± std over layers (right) and per-layer mean ± std over models (bottom).

    Margins are computed from the plotted matrix (sample std, ddof=1, NaN cells ignored), so they
    follow ``value``; their axes span criticality's bound 0–100, whiskers clipped there. Row
    labels show the ``headline_top1``. Non-finite cells are drawn hatched. Rows with
    ``in_figures`` False are left out. Models of different layer lists (architectures) get one
    panel each (``heatmap_panels``), on one colour scale: criticality is a number on the same
    0–100 scale for every architecture, only its layers differ.
    """
    panels = heatmap_panels(summary, models, categories, value)
    with figure_style():
        fig = _draw_heatmap(
            panels, cmap_name="viridis_r", vmin=0, vmax=100,
            cbar_label=CRITICALITY_LABEL if value == "criticality_mean" else value, title=title,
            value_bound=CRITICALITY_RANGE, fixed_margins=True, row_margin_label="mean ± std\nover layers [%]",
            col_margin_label="mean ± std\nover models [%]", row_label_title=_row_label_title(models),
        )  # fmt: skip
    return common.save_figure(fig, out_base)


def _fitted_colour_limit(panels: Sequence[HeatmapPanel]) -> float:
    """The top of a colour scale fit to the panels' values: the largest finite one rounded up to
    the next tick matplotlib would draw (1, 2, 2.5, 5 × 10^k steps), at most 100; 100 where none
    is finite."""
    values = np.concatenate([p.matrix.to_numpy(dtype=float).ravel() for p in panels])
    largest = np.max(values[np.isfinite(values)], initial=0.0)
    if largest <= 0:
        return CRITICALITY_RANGE[1]
    ticks = mpl.ticker.MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]).tick_values(0.0, largest)
    return float(min(ticks[ticks >= largest][0], CRITICALITY_RANGE[1]))


def seed_std_heatmap(
    summary: pd.DataFrame,
    models: pd.DataFrame,
    categories: Sequence[Mapping[str, Any]],
    out_base: str | Path,
    *,
    vmax: float | None = None,
    title: str | None = None,
) -> list[Path]:
    """Fig. 5: std of criticality over seeds (``criticality_std``), ``viridis_r``.

    Colours span 0 to the largest std rounded up (``_fitted_colour_limit``): spreads over seeds
    are a few points, and on the paper's 0–100 they would leave the figure nearly blank. The
    colour bar's label states the scale, so that a reader does not take it for the paper's;
    ``vmax=100`` draws the paper's. Margin axes are data-driven too (capped at 100), one scale
    for all panels. Cells from a single seed are NaN. One panel per layer list, as Fig. 1.
    """
    panels = heatmap_panels(summary, models, categories, "criticality_std")
    top = _fitted_colour_limit(panels) if vmax is None else vmax
    scale = "fit to the values" if vmax is None else "as given"
    with figure_style():
        fig = _draw_heatmap(
            panels, cmap_name="viridis_r", vmin=0, vmax=top,
            cbar_label=f"Std of Layer Criticality over seeds [%]\n(colour scale 0–{top:g}, {scale})", title=title,
            value_bound=CRITICALITY_RANGE, fixed_margins=False, row_margin_label="mean ± std\nover layers [%]",
            col_margin_label="mean ± std\nover models [%]", row_label_title=_row_label_title(models),
        )  # fmt: skip
    return common.save_figure(fig, out_base)
