"""Figs. 1, 4 and 5: models × layers heatmaps (criticality, its difference from the baseline
model, its std over seeds) with a category band and mean ± std margins.

A study may mix architectures (a ResNet-50 and a ViT): their layers are different layers even
where names agree, so a heatmap has one panel per layer list (``heatmap_panels``), stacked in one
figure that shares the colour scale, the margins' scales and the category legend. A study of one
architecture has one panel.

Modules, in the order the data flows: ``labels`` (a layer's column label), ``panels`` (tables →
one matrix per layer list), ``margins`` (mean ± std per row and column), ``layout`` (the grid
under matplotlib's constrained layout), ``draw`` (axes, colour bar, legend), ``criticality``
(Figs. 1 and 5) and ``difference`` (Fig. 4). This package re-exports their public names, so that
``from layercrit.figures.heatmaps import …`` reads as it did when they were one module.
"""

from layercrit.figures.heatmaps.criticality import CRITICALITY_LABEL, criticality_heatmap, seed_std_heatmap
from layercrit.figures.heatmaps.difference import DIFFERENCE_BOUND, difference_heatmap, significance_label
from layercrit.figures.heatmaps.draw import NAN_HATCH, NAN_HATCH_COLOR, PARTIAL_HATCH, SIGNIFICANCE_GID
from layercrit.figures.heatmaps.labels import layer_label, norm_kind, paper_layer_label
from layercrit.figures.heatmaps.panels import (
    HeatmapPanel,
    LayerList,
    heatmap_matrix,
    heatmap_panels,
    layer_list_groups,
    layer_table,
    model_layer_lists,
)

__all__ = [
    "CRITICALITY_LABEL",
    "DIFFERENCE_BOUND",
    "HeatmapPanel",
    "LayerList",
    "NAN_HATCH",
    "NAN_HATCH_COLOR",
    "PARTIAL_HATCH",
    "SIGNIFICANCE_GID",
    "criticality_heatmap",
    "difference_heatmap",
    "heatmap_matrix",
    "heatmap_panels",
    "layer_label",
    "layer_list_groups",
    "layer_table",
    "model_layer_lists",
    "norm_kind",
    "paper_layer_label",
    "seed_std_heatmap",
    "significance_label",
]
