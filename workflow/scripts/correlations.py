"""Snakemake adapter: Spearman and Kendall correlation of model criticality vs accuracy.

One block of rows per accuracy the models table has: the reported ImageNet top-1 first (the
paper's correlation), then the top-1 measured on the evaluation set (column ``accuracy``)."""

import logging

import pandas as pd

from layercrit.statistics import accuracy_correlations
from layercrit.io import write_csv
from layercrit.joblog import script_log


def main(sm) -> None:
    models = pd.read_csv(sm.input.models)
    table = accuracy_correlations(models[models["in_figures"]])
    write_csv(table, sm.output[0])
    print(table.to_string(index=False), flush=True)
    for row in table[table["n_dropped"] > 0].itertuples(index=False):
        logging.getLogger("layercrit").warning(
            "correlation with %s top-1, %s, leaves out %d model(s): %s", row.accuracy, row.subset, row.n_dropped, row.dropped
        )


with script_log(snakemake.log[0]):
    main(snakemake)
