"""Per-job overhead on Slurm: today's per-job profile, layercrit-slurm, and the local run, side by side.

    tests/slurm/start_slurm.sh                      # a real one-node Slurm (root, Debian)
    python -m benchmarks.slurm_overhead --out docs/benchmark_slurm.json

One study (demo models, every layer, several seeds, on the CPU: the test cluster's GPUs are
fake) is prepared once (data, models, baselines), then its reset sweep runs three times from the
same prepared state:

- ``local``: ``snakemake --cores N --until reset`` on this machine (the in-process design);
- ``profile``: ``snakemake --profile profiles/slurm`` (the Slurm executor, grouped reset jobs,
  each member its own process), with only what the test cluster needs changed;
- ``allocations``: ``layercrit-slurm --allocations 2`` (each allocation the local Snakemake).

Per-job overhead is measured from the results' own timestamps, as in ``job_overhead.py``: within
one process or Slurm job, the time from one result to the next minus the job's forward passes.
Allocation seconds come from Slurm (``scontrol show job``: start and end, 1 s resolution): for
each path, the Slurm jobs that ran reset jobs, summed, divided by the number of reset jobs.
The results of all three paths are compared metric by metric.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import pandas as pd
import yaml

from benchmarks import harness
from layercrit.study import relocatable_zoo

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]
METRICS = ["criticality", "cosine", "l1", "l2", "kl", "top1_agreement", "top1", "top5", "recovered_acc"]


def study(workdir: Path, models: list[str], seeds: list[int]) -> Path:
    """The demo study, smaller: a few of its models (the shipped checkpoints: nothing is trained)."""
    zoo = relocatable_zoo(REPO / "config/zoo/demo.yaml")
    zoo["models"] = [m for m in zoo["models"] if m["id"] in models]
    (workdir / "zoo.yaml").write_text(yaml.safe_dump(zoo, sort_keys=False))
    config = yaml.safe_load((REPO / "config/demo.yaml").read_text())
    config.update(study="bench", zoo="zoo.yaml", device="auto")
    config["reset"]["seeds"] = seeds
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return workdir / "config.yaml"


def slurm_profile(directory: Path, partition: str) -> Path:
    """profiles/slurm as shipped, with what the one-node test cluster needs (no accounting
    database, small memory, short status intervals)."""
    profile = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
    profile["default-resources"]["slurm_partition"] = f"'{partition}'"
    profile["cores"] = min(int(profile["cores"]), os.cpu_count() or 1)
    for resources in [profile["default-resources"], *profile["set-resources"].values()]:
        resources["mem_mb"] = 500
    profile.update({"slurm-status-command": "squeue", "slurm-init-seconds-before-status-checks": 2,
                    "slurm-no-account": True, "retries": 0, "latency-wait": 5})  # fmt: skip
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return directory


def run(command: list[str], cwd: Path) -> float:
    started = time.monotonic()
    proc = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return time.monotonic() - started


def results(workdir: Path) -> pd.DataFrame:
    files = sorted((workdir / "results/bench/resets").rglob("seed*.json"))
    rows = [{**json.loads(f.read_text()), "file": str(f.relative_to(workdir))} for f in files]
    return pd.DataFrame(rows).assign(t=lambda d: pd.to_datetime(d["created"]))


def slurm_job(job_id: str) -> dict:
    out = subprocess.run(["scontrol", "show", "job", "-o", str(job_id)], capture_output=True, text=True, check=True).stdout
    fields = dict(token.partition("=")[::2] for token in out.split() if "=" in token)
    start, end = (datetime.fromisoformat(fields[k]) for k in ("StartTime", "EndTime"))
    return {"name": fields["JobName"], "elapsed_s": (end - start).total_seconds(), "start": fields["StartTime"]}


def overheads(df: pd.DataFrame, by: str | None) -> dict:
    """Per-job overhead within each process / Slurm job: gap to the previous result − forward."""
    gaps = []
    for _, group in (df.groupby(by) if by else [(None, df)]):
        group = group.sort_values("t")
        gap = group["t"].diff().dt.total_seconds() - group["forward_s"]
        gaps += gap.dropna().tolist()
    return {
        "per_job_overhead_s_median": round(statistics.median(gaps), 4),
        "per_job_overhead_s_mean": round(statistics.mean(gaps), 4),
        "per_job_overhead_s_p90": round(float(pd.Series(gaps).quantile(0.9)), 4),
        "jobs_measured": len(gaps),
        "forward_s_median": round(float(df["forward_s"].median()), 4),
        "forward_s_total": round(float(df["forward_s"].sum()), 2),
    }


def allocation_cost(df: pd.DataFrame) -> dict:
    jobs = {j: slurm_job(j) for j in sorted(df["slurm_job_id"].astype(str).unique())}
    total = sum(j["elapsed_s"] for j in jobs.values())
    return {
        "slurm_jobs_with_reset_jobs": len(jobs),
        "allocation_s_total": total,
        "allocation_s_per_reset_job": round(total / len(df), 3),
        "allocation_s_not_forward_per_reset_job": round((total - df["forward_s"].sum()) / len(df), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--partition", default="layercrit", help="partition of the test cluster")
    parser.add_argument("--models", nargs="+", default=["demo_baseline", "demo_linf_4"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--allocations", type=int, default=2)
    parser.add_argument("--workdir", type=Path, help="keep the runs here (default: a temporary folder)")
    args, record = harness.start(parser, "slurm_overhead", not_settings=("workdir",))
    cores = str(os.cpu_count() or 1)
    base = args.workdir or Path(tempfile.mkdtemp(prefix="layercrit-slurm-bench-"))
    prepared = base / "prepared"
    prepared.mkdir(parents=True, exist_ok=True)
    config = study(prepared, args.models, args.seeds)
    run([*SNAKEMAKE, "--configfile", str(config), "--cores", cores, "--until", "baseline"], prepared)

    def fresh(name: str) -> Path:
        workdir = base / name
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.copytree(prepared, workdir, ignore=shutil.ignore_patterns(".snakemake"))
        return workdir

    record["study"] = {"models": args.models, "seeds": args.seeds, "device": "cpu (the cluster's GPUs are fake)"}
    local = fresh("local")
    wall = run([*SNAKEMAKE, "--configfile", "config.yaml", "--cores", cores, "--until", "reset"], local)
    local_results = results(local)
    record["local"] = {"command": f"snakemake --cores {cores} --until reset", "wall_s": round(wall, 1),
                       "reset_jobs": len(local_results), **overheads(local_results, None)}  # fmt: skip

    per_job = fresh("profile")
    profile = slurm_profile(base / "profile-config", args.partition)
    wall = run([*SNAKEMAKE, "--configfile", "config.yaml", "--profile", str(profile), "--until", "reset"], per_job)
    per_job_results = results(per_job)
    record["profile"] = {"command": "snakemake --profile profiles/slurm --until reset (test-cluster settings)",
                         "wall_s": round(wall, 1), "reset_jobs": len(per_job_results),
                         **overheads(per_job_results, "slurm_job_id"), **allocation_cost(per_job_results)}  # fmt: skip

    allocations = fresh("allocations")
    launcher = [str(Path(sys.executable).parent / "layercrit-slurm"), "--allocations", str(args.allocations), "--gpus", "1",
                "--cpus", "1", "--mem", "500M", "--partition", args.partition, "--wait", "--",
                "-s", str(REPO / "Snakefile"), "--configfile", "config.yaml"]  # fmt: skip
    wall = run(launcher, allocations)
    alloc_results = results(allocations)
    steps = {}
    for log in sorted((allocations / "logs/slurm").glob("*.out")):
        job_id = log.stem.split("-", 1)[1]  # <id> or <array id>_<task>
        steps[log.stem] = slurm_job(job_id)["elapsed_s"]
    record["allocations"] = {"command": f"layercrit-slurm --allocations {args.allocations} --gpus 1 --cpus 1 --wait",
                             "wall_s": round(wall, 1), "reset_jobs": len(alloc_results),
                             "steps_elapsed_s": steps, **overheads(alloc_results, "slurm_job_id"),
                             **allocation_cost(alloc_results)}  # fmt: skip

    ours = local_results.set_index("file")[METRICS]
    record["results_identical"] = {
        name: bool(ours.equals(df.set_index("file")[METRICS].loc[ours.index]))
        for name, df in (("profile", per_job_results), ("allocations", alloc_results))
    }
    local_median = record["local"]["per_job_overhead_s_median"]
    for name in ("profile", "allocations"):
        record[name]["overhead_ratio_to_local"] = round(record[name]["per_job_overhead_s_median"] / local_median, 2)
    record["slurm"] = subprocess.run(["sinfo", "--version"], capture_output=True, text=True).stdout.strip()
    harness.finish(args, record)


if __name__ == "__main__":
    main()
