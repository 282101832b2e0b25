"""Snakemake adapter: Spearman and Kendall correlation of model criticality vs accuracy."""

import pandas as pd

from layercrit.figures import accuracy_correlations
from layercrit.io import atomic_path
from layercrit.joblog import script_log


def main(sm) -> None:
    models = pd.read_csv(sm.input.models)
    table = accuracy_correlations(models[models["in_figures"]])
    with atomic_path(sm.output[0]) as tmp:
        table.to_csv(tmp, index=False)
    print(table.to_string(index=False), flush=True)


with script_log(snakemake.log[0]):
    main(snakemake)
