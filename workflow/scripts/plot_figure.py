"""Snakemake adapter: draw one figure of the study from the tidy tables."""

from pathlib import Path

import pandas as pd

from layercrit import figures
from layercrit.joblog import script_log


def main(sm) -> None:
    summary = pd.read_csv(sm.input.summary)
    summary["kernel"] = summary["kernel"].fillna("")  # linear layers have no kernel
    models = pd.read_csv(sm.input.models)
    categories = sm.params.categories
    out_base = Path(sm.output.png).with_suffix("")
    name = sm.wildcards.figure
    if name == "criticality_heatmap":
        figures.criticality_heatmap(summary, models, categories, out_base)
    elif name == "difference_heatmap":
        figures.difference_heatmap(summary, models, categories, sm.params.baseline, out_base)
    elif name == "seed_std_heatmap":
        figures.seed_std_heatmap(summary, models, categories, out_base)
    elif name == "criticality_vs_epsilon":
        figures.criticality_vs_epsilon(models, out_base)
    elif name == "criticality_vs_accuracy":
        figures.criticality_vs_accuracy(models, categories, out_base)
    else:
        raise ValueError(f"unknown figure {name!r}")


with script_log(snakemake.log[0]):
    main(snakemake)
