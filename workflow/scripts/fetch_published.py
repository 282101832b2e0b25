"""Snakemake adapter: fetch the authors' raw results file (URL, file:// URL or local path), verified."""

import shutil
from pathlib import Path

from layercrit.downloads import fetch_file, url_remote
from layercrit.io import atomic_path
from layercrit.joblog import script_log


def main(sm) -> None:
    source, cache = sm.params.source, Path(sm.params.cache)
    remote = url_remote(source["url"], cache, source["sha256"], sha256_origin="published.sha256")
    path, record = fetch_file([remote], model_id="published results", cache_dir=cache)
    print(record, flush=True)
    with atomic_path(sm.output[0]) as tmp:
        shutil.copyfile(path, tmp)


with script_log(snakemake.log[0]):
    main(snakemake)
