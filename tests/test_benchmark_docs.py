"""docs/benchmarks.md shows what the benchmarks' committed JSON records say, rendered by the
benchmarks' own `markdown()`: no number there is typed by hand or left behind by a newer run."""

import importlib
import json

import pytest

from conftest import REPO

RECORDS = [
    ("paper_scale", "docs/benchmark_paper_scale.json"),
    ("paper_scale", "docs/benchmark_paper_scale_slurm.json"),
    ("snakemake_scheduling", "docs/benchmark_snakemake_scheduling.json"),
]


@pytest.mark.parametrize(("benchmark", "record"), RECORDS)
def test_benchmarks_md_shows_the_committed_record(benchmark, record):
    module = importlib.import_module(f"benchmarks.{benchmark}")
    rendered = module.markdown(json.loads((REPO / record).read_text()))
    assert rendered in (REPO / "docs/benchmarks.md").read_text(), f"docs/benchmarks.md does not show {record}: run python -m benchmarks.{benchmark} --markdown {record}"
