"""Snakemake adapter: draw one language-model figure of a text study from the tidy tables."""

from pathlib import Path

import pandas as pd

from layercrit import figures
from layercrit.figures.language import draw_language
from layercrit.joblog import script_log


def main(sm) -> None:
    tables = {}
    for name in ("resets", "summary"):
        tables[name] = pd.read_csv(sm.input[name])
        tables[name]["kernel"] = tables[name]["kernel"].astype(object).fillna("")  # linear layers have no kernel
    models = pd.read_csv(sm.input.models)
    study = figures.StudyInfo(
        categories=sm.params.categories,
        tokenizers=sm.params.tokenizers,
        comparisons=[tuple(pair) for pair in sm.params.comparisons],
    )
    draw_language(sm.wildcards.figure, tables["resets"], tables["summary"], models, study, Path(sm.output.png).with_suffix(""))


with script_log(snakemake.log[0]):
    main(snakemake)
