"""Snakemake adapter: Table 1 (the models, their category, method, accuracy, criticality)."""

from pathlib import Path

import pandas as pd

from layercrit import figures
from layercrit.io import write_csv
from layercrit.joblog import script_log


def main(sm) -> None:
    models = pd.read_csv(sm.input.models)
    write_csv(figures.model_overview(models, sm.params.categories), sm.output.csv)
    figures.model_overview_table(models, sm.params.categories, Path(sm.output.png).with_suffix(""))


with script_log(snakemake.log[0]):
    main(snakemake)
