"""Snakemake adapter: draw one figure of the study from the tidy tables."""

from pathlib import Path

import pandas as pd

from layercrit import figures
from layercrit.joblog import script_log


def main(sm) -> None:
    summary = pd.read_csv(sm.input.summary)
    summary["kernel"] = summary["kernel"].fillna("")  # linear layers have no kernel
    models = pd.read_csv(sm.input.models)
    study = figures.StudyInfo(
        categories=sm.params.categories, baseline=sm.params.baseline, min_difference=sm.params.min_difference
    )
    figures.draw(sm.wildcards.figure, summary, models, study, Path(sm.output.png).with_suffix(""))


with script_log(snakemake.log[0]):
    main(snakemake)
