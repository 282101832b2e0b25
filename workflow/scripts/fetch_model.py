"""Snakemake adapter: download one model's weights and write its canonical checkpoint."""

from pathlib import Path

from layercrit.joblog import script_log
from layercrit.sources import fetch_model
from layercrit.study import Architecture


def main(sm) -> None:
    arch = Architecture(**sm.params.architecture)
    meta = fetch_model(sm.params.model, arch, cache_dir=Path(sm.params.cache), out=Path(sm.output.checkpoint))
    print(meta, flush=True)


with script_log(snakemake.log[0]):
    main(snakemake)
