"""Snakemake adapter: the index of a study's figures (layercrit.figures.index)."""

from pathlib import Path

from layercrit.figures.index import write_figure_index
from layercrit.joblog import script_log


def main(sm) -> None:
    write_figure_index(Path(sm.output.index).parent, sm.params.made, sm.params.left_out, sm.output.index)


with script_log(snakemake.log[0]):
    main(snakemake)
