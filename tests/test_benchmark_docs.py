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
    ("scheduler_comparison", "docs/benchmark_scheduler_firstfit.json"),
    ("lm_reuse", "docs/lm_reuse_cpu.json"),
]


@pytest.mark.parametrize(("benchmark", "record"), RECORDS)
def test_benchmarks_md_shows_the_committed_record(benchmark, record):
    module = importlib.import_module(f"benchmarks.{benchmark}")
    rendered = module.markdown(json.loads((REPO / record).read_text()))
    assert rendered in (REPO / "docs/benchmarks.md").read_text(), f"docs/benchmarks.md does not show {record}: run python -m benchmarks.{benchmark} --markdown {record}"


def test_the_harness_records_provenance_machine_and_settings_and_renders_a_record(tmp_path, capsys):
    import argparse

    from benchmarks import harness

    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=2)
    args, record = harness.start(parser, "example", lambda r: f"{r['benchmark']}: {r['n']}", argv=["--out", str(tmp_path / "r.json")])
    assert record["benchmark"] == "example" and record["settings"] == {"images": 2}
    assert {"created", "host", "versions"} <= set(record) and {"cpu", "cores"} <= set(record["machine"])
    record["n"] = 3
    harness.finish(args, record, lambda r: f"{r['benchmark']}: {r['n']}")
    assert json.loads((tmp_path / "r.json").read_text())["n"] == 3
    parser = argparse.ArgumentParser()
    assert harness.start(parser, "example", lambda r: f"{r['benchmark']}: {r['n']}", argv=["--markdown", str(tmp_path / "r.json")]) is None
    assert capsys.readouterr().out.splitlines() == ["example: 3", "example: 3"]
