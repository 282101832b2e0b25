"""Snakemake adapter: fetch the authors' raw results file (URL, file:// URL or local path), verified."""

import shutil
from pathlib import Path

from layercrit.io import atomic_path
from layercrit.joblog import script_log
from layercrit.sources import fetch_file


def main(sm) -> None:
    source = sm.params.source
    path, record = fetch_file(
        {"kind": "url", "url": source["url"], "sha256": source["sha256"]},
        model_id="published results",
        cache_dir=Path(sm.params.cache),
        sha256_origin="published.sha256",
    )
    print(record, flush=True)
    with atomic_path(sm.output[0]) as tmp:
        shutil.copyfile(path, tmp)


with script_log(snakemake.log[0]):
    main(snakemake)
