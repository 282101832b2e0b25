"""Layer criticality in a notebook: the workflow's numbers for a model in memory
(``layer_criticality``, returning the rows of ``resets.csv``) and its heatmap and depth profile
drawn from that table (``plot_heatmap``, ``plot_profile``). README: "In a notebook"."""

from layercrit.notebook.criticality import layer_criticality
from layercrit.notebook.figures import plot_heatmap, plot_profile

__all__ = ["layer_criticality", "plot_heatmap", "plot_profile"]
