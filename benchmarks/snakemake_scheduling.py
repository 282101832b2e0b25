"""Snakemake's own cost per job at the paper's scale, with a minimal Snakefile of trivial jobs.

    python -m benchmarks.snakemake_scheduling --out docs/benchmark_snakemake_scheduling.json
    python -m benchmarks.snakemake_scheduling --markdown docs/benchmark_snakemake_scheduling.json

The Snakefile below has what the workflow's reset jobs have and nothing else: ``groups`` × ``per_group``
jobs (default 51 × 162 = 8,262, the paper's reset jobs), all ready at once, each with ``inputs``
input files (shared within its group, as a reset job's are within its model), a priority per
group, ``threads: workflow.cores`` (one job at a time, as evaluations on the CPU) and a body that
only writes the time. The time from one output to the next is then Snakemake's per-job cost
alone: the scheduling round (in which a scheduler looks at every ready job), the job's
bookkeeping and output checks. Each case runs ``snakemake --cores 2 --force-use-threads`` until
``--stop-after`` outputs exist (then it is stopped) and reports the median and p90 of those gaps
for the first and the last 1,000 jobs it ran (fewer where it stopped earlier: ``ilp`` after 400),
and the time to the first output (DAG building).
``dry-run`` cases time ``snakemake -n`` of the whole DAG (CPU seconds of the process).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import harness
from benchmarks.harness import quantiles

SNAKEFILE = '''
import time
N_GROUPS = config["groups"]
GROUPS = [f"g{i}" for i in range(N_GROUPS)]
INPUTS = (["in/common"] + [f"in/{{g}}.{s}" for s in "abcd"])[: config["inputs"]]

rule all:
    input: expand("out/{g}/{j}.txt", g=GROUPS, j=range(config["per_group"]))

rule prepare:
    output: [f"in/{{g}}.{s}" for s in "abcd"]
    run:
        for path in output:
            open(path, "w").write("x")

rule common:
    output: "in/common"
    run: open(output[0], "w").write("x")

rule job:
    input: INPUTS
    output: "out/{g}/{j}.txt"
    priority: lambda wc: N_GROUPS - GROUPS.index(wc.g)
    threads: workflow.cores
    run:
        open(output[0], "w").write(repr(time.time()))
'''

CASES = {  # name -> (snakemake arguments, inputs per job)
    "ilp": (["--scheduler", "ilp"], 5),
    "greedy": (["--scheduler", "greedy"], 5),
    "by-priority, 5 inputs": (["--scheduler", "by-priority"], 5),
    "by-priority, 3 inputs": (["--scheduler", "by-priority"], 3),
    "by-priority, 1 input": (["--scheduler", "by-priority"], 1),
}


def gaps_summary(times: list[float], window: int = 1000) -> dict:
    gaps = [b - a for a, b in zip(times, times[1:])]
    return {"first": quantiles(gaps[:window]), "last": quantiles(gaps[-window:]), "all": quantiles(gaps)}


def run_case(workdir: Path, args: list[str], inputs: int, groups: int, per_group: int, stop_after: int) -> dict:
    for leftover in ("out", "in", ".snakemake"):
        shutil.rmtree(workdir / leftover, ignore_errors=True)
    command = [sys.executable, "-m", "snakemake", "--cores", "2", "--force-use-threads", "-q", *args,
               "--config", f"groups={groups}", f"per_group={per_group}", f"inputs={inputs}"]  # fmt: skip
    started = time.time()
    with open(workdir / "snakemake.log", "w") as log:
        proc = subprocess.Popen(command, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        while proc.poll() is None:
            time.sleep(1)
            if sum(1 for _ in (workdir / "out").glob("*/*.txt")) >= stop_after:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                break
    times = sorted(float(p.read_text()) for p in (workdir / "out").glob("*/*.txt") if p.read_text())
    return {"jobs_run": len(times), "first_output_after_s": round(times[0] - started, 1) if times else None, **gaps_summary(times)}


def dry_run(workdir: Path, inputs: int, groups: int, per_group: int) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.time()
    subprocess.run([sys.executable, "-m", "snakemake", "-n", "-q", "rules", "--config", f"groups={groups}",
                    f"per_group={per_group}", f"inputs={inputs}"], cwd=workdir, check=True, capture_output=True)  # fmt: skip
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"wall_s": round(time.time() - started, 1), "cpu_s": round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 1)}


def markdown(record: dict) -> str:
    s = record["settings"]
    rows = [f"{s['groups']} × {s['per_group']} = {s['groups'] * s['per_group']:,} trivial jobs, all ready; "
            f"`snakemake --cores 2 --force-use-threads`; {record['machine']['cpu']}, {record['created'][:10]}.", "",
            "| scheduler, inputs per job | jobs run | per-job cost, first 1,000: median (p90) | last 1,000: median (p90) | first output after |",
            "|---|---|---|---|---|"]  # fmt: skip
    for name, r in record["cases"].items():
        first, last = r["first"], r["last"]
        rows.append(f"| {name} | {r['jobs_run']:,} | {first['median']} s ({first['p90']} s) | {last['median']} s ({last['p90']} s) "
                    f"| {r['first_output_after_s']} s |")  # fmt: skip
    rows += ["", "| dry run (`snakemake -n`), inputs per job | CPU s | wall s |", "|---|---|---|"]
    rows += [f"| {k} | {v['cpu_s']} | {v['wall_s']} |" for k, v in record["dry_runs"].items()]
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--groups", type=int, default=51)
    parser.add_argument("--per-group", type=int, default=162)
    parser.add_argument("--stop-after", type=int, default=1100, help="outputs after which a case is stopped")
    parser.add_argument("--stop-after-ilp", type=int, default=400)
    parser.add_argument("--full", nargs="*", default=["by-priority, 1 input"], help="cases run to the end (every job)")
    parser.add_argument("--only", nargs="+", choices=list(CASES), default=list(CASES))
    started = harness.start(parser, "snakemake_scheduling", markdown)
    if started is None:
        return
    args, record = started
    record.update(cases={}, dry_runs={})
    with tempfile.TemporaryDirectory(prefix="snakemake_scheduling.") as tmp:
        workdir = Path(tmp)
        (workdir / "Snakefile").write_text(SNAKEFILE)
        for inputs in (1, 5):
            record["dry_runs"][f"{inputs} input(s)"] = dry_run(workdir, inputs, args.groups, args.per_group)
            print(inputs, record["dry_runs"][f"{inputs} input(s)"], flush=True)
        for name in args.only:
            options, inputs = CASES[name]
            stop = args.groups * args.per_group if name in args.full else args.stop_after
            if name == "ilp":
                stop = min(stop, args.stop_after_ilp)  # ~0.6 s per job: its first few hundred say enough
            record["cases"][name] = run_case(workdir, options, inputs, args.groups, args.per_group, stop)
            print(name, json.dumps(record["cases"][name]), flush=True)
    harness.finish(args, record, markdown)


if __name__ == "__main__":
    main()
