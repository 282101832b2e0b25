"""Snakemake adapter: the authors' raw results as this project's tidy tables."""

from pathlib import Path

import pandas as pd

from layercrit.aggregation import published_tables, write_tables
from layercrit.joblog import script_log
from layercrit.published import published_to_tidy
from layercrit.study import PUBLISHED_STUDY, build_study, load_zoo


def main(sm) -> None:
    zoo = Path(sm.params.zoo)
    study = build_study(PUBLISHED_STUDY, load_zoo(zoo), zoo.parent)
    tables = published_tables(study, published_to_tidy(pd.read_csv(sm.input[0])), zoo)
    write_tables(tables, sm.output, source=sm.config["published"], rows=len(tables.resets))
    print(f"{len(tables.resets)} published rows, {tables.resets['model'].nunique()} models", flush=True)


with script_log(snakemake.log[0]):
    main(snakemake)
