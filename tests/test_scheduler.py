"""The `by-priority` scheduler plugin (src/snakemake_scheduler_plugin_by_priority), which the
default profile selects: jobs in order of priority, never more than the free resources allow."""

import json
import subprocess
import sys
from dataclasses import dataclass, field

import pytest
import yaml

from conftest import REPO, snakemake_env
from snakemake_scheduler_plugin_by_priority import Scheduler


@dataclass(eq=False)
class FakeJob:
    name: str
    priority: float
    scheduler_resources: dict = field(default_factory=lambda: {"_cores": 1, "_nodes": 1, "_job_count": 1})


def select(jobs, **free):
    return [j.name for j in Scheduler(None, None, None).select_jobs(jobs, jobs, free, {})]


def test_highest_priority_first_as_many_as_cores():
    jobs = [FakeJob(n, p) for n, p in (("a", 1), ("b", 3.5), ("c", 2), ("d", 3.25))]
    assert select(jobs, _cores=2, _nodes=100, _job_count=100) == ["b", "d"]
    assert select(jobs, _cores=8, _nodes=100, _job_count=100) == ["b", "d", "c", "a"]
    assert select(jobs, _cores=0, _nodes=100, _job_count=100) == []


def test_a_job_that_does_not_fit_is_skipped_and_smaller_ones_fill_the_rest():
    gpu = {"_cores": 1, "_nodes": 1, "_job_count": 1, "gpu": 1}
    jobs = [FakeJob("g1", 9, dict(gpu)), FakeJob("g2", 8, dict(gpu)), FakeJob("cpu", 1), FakeJob("wide", 5, {"_cores": 4, "_job_count": 1})]
    assert select(jobs, _cores=3, _nodes=100, _job_count=100, gpu=1) == ["g1", "cpu"]
    assert select(jobs, _cores=3, _nodes=100, _job_count=100, gpu=2) == ["g1", "g2", "cpu"]
    assert select(jobs, _cores=3, _nodes=100, _job_count=2, gpu=0) == ["cpu"]


SNAKEFILE = """
import json, time
rule all:
    input: expand("out/{i}.json", i=range(6))
rule job:
    output: "out/{i}.json"
    priority: lambda wc: [3, 1, 5, 0, 4, 2][int(wc.i)]
    resources: gpu=1
    run:
        start = time.time()
        time.sleep(0.3)
        json.dump({"start": start, "end": time.time()}, open(output[0], "w"))
"""


def run(tmp_path, *args):
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--scheduler", "by-priority", "--force-use-threads", "-q", *args],
        cwd=tmp_path, env=snakemake_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {i: json.loads((tmp_path / f"out/{i}.json").read_text()) for i in range(6)}


@pytest.mark.slow
def test_snakemake_runs_jobs_by_priority_within_resources(tmp_path):
    times = run(tmp_path, "--cores", "1")
    by_start = sorted(times, key=lambda i: times[i]["start"])
    assert by_start == [2, 4, 0, 5, 1, 3]  # priorities 5, 4, 3, 2, 1, 0
    # two cores, one GPU: never two jobs at once
    for path in (tmp_path / "out").iterdir():
        path.unlink()
    times = run(tmp_path, "--cores", "2", "--resources", "gpu=1")
    spans = sorted((t["start"], t["end"]) for t in times.values())
    assert all(end <= next_start for (_, end), (next_start, _) in zip(spans, spans[1:]))
    # two GPUs: two at once
    for path in (tmp_path / "out").iterdir():
        path.unlink()
    times = run(tmp_path, "--cores", "2", "--resources", "gpu=2")
    spans = sorted((t["start"], t["end"]) for t in times.values())
    assert any(end > next_start for (_, end), (next_start, _) in zip(spans, spans[1:]))


def test_the_default_profile_selects_it():
    profile = yaml.safe_load((REPO / "profiles/default/config.yaml").read_text())
    assert profile["scheduler"] == "by-priority"
