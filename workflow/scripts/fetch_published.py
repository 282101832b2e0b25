"""Snakemake adapter: fetch the authors' raw results file (URL, file:// URL or local path), verified."""

import hashlib
import shutil
from pathlib import Path
from urllib.parse import urlsplit

from layercrit.io import atomic_path
from layercrit.joblog import script_log
from layercrit.sources import fetch_file


def main(sm) -> None:
    source = sm.params.source
    url = source["url"]
    if urlsplit(url).scheme in ("http", "https"):
        path, record = fetch_file({"kind": "url", "url": url, "sha256": source["sha256"]}, model_id="published results", cache_dir=Path(sm.params.cache))
        print(record, flush=True)
    else:
        path = Path(urlsplit(url).path if url.startswith("file://") else url)
        if not path.is_file():
            raise FileNotFoundError(f"published.url: {url!r} is not a file; give an https URL, file:///path or a path")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != source["sha256"]:
            raise ValueError(
                f"published results {url!r}: sha256 {digest} does not match the expected {source['sha256']} (published.sha256)"
            )
    with atomic_path(sm.output[0]) as tmp:
        shutil.copyfile(path, tmp)


with script_log(snakemake.log[0]):
    main(snakemake)
