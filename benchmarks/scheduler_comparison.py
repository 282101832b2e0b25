"""Two Snakemake schedulers on the paper rehearsal's resumed case, taking turns.

    python -m benchmarks.paper_scale --layers conv1 --seeds 0 --workdir /tmp/rehearsal   # the models and baselines
    pip install --no-deps --target /tmp/firstfit snakemake-scheduler-plugin-firstfit==0.1.4
    PYTHONPATH=/tmp/firstfit python -m benchmarks.scheduler_comparison /tmp/rehearsal \\
        --scheduler by-priority "firstfit --scheduler-firstfit-omit-prioritize-by-temp-and-input" \\
        --rounds 2 --out docs/benchmark_scheduler_firstfit.json
    python -m benchmarks.scheduler_comparison --markdown docs/benchmark_scheduler_firstfit.json

In a finished rehearsal's workdir (benchmarks.paper_scale --workdir: 51 fetched models and their
baselines), the configuration's reset section is set to the paper's (config/config.yaml: 54 layers
× 3 seeds, 8,262 reset jobs), whatever layers and seeds the rehearsal ran. Then, for each round,
each scheduler in turn runs benchmarks.paper_scale's resumed case: every reset result deleted,
all 8,262 reset jobs ready at once, stopped after ``--stop-after`` results; per-job overhead = the
time from one result to the next minus its forward passes (benchmarks.job_overhead's measure), and
outside the evaluation = that time minus the whole evaluation call: Snakemake's own share (the
scheduling round, bookkeeping, output checks), where a scheduler's cost shows. A scheduler is
given as Snakemake's ``--scheduler`` value followed by the options that go with it. Taking turns (A, B, A, B) spreads
the load of other work on a shared machine over both; each run records the load average around it.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
from pathlib import Path

import yaml

from benchmarks import harness
from benchmarks.harness import quantiles
from benchmarks.paper_scale import REPO, resume_sweep


def paper_resets(workdir: Path) -> int:
    """Set the workdir's reset section to the paper's; returns the number of reset jobs."""
    path = workdir / "config.yaml"
    config = yaml.safe_load(path.read_text())
    config["reset"] = yaml.safe_load((REPO / "config/config.yaml").read_text())["reset"]
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    zoo = yaml.safe_load(Path(config["zoo"]).read_text())
    table = Path(zoo["architectures"]["resnet50"]["layers"]).read_text().splitlines()
    layers = [row for row in table if not row.startswith("#") and row.split("\t")[1:2] in ([t] for t in config["reset"]["layers"]["types"])]
    return len(zoo["models"]) * len(layers) * len(config["reset"]["seeds"])


def scheduler_plugins() -> dict[str, str]:
    """The Snakemake scheduler plugins this interpreter has, with their versions (this
    repository's by-priority is part of the layercrit distribution)."""
    from importlib import metadata

    return {d.metadata["Name"]: d.version for d in metadata.distributions() if d.metadata["Name"].startswith("snakemake-scheduler-plugin")}


def compare(workdir: Path, schedulers: list[str], rounds: int, stop_after: int, cores: int) -> dict:
    runs = []
    for k in range(rounds):
        for spec in schedulers:
            name, *options = shlex.split(spec)
            load_before = os.getloadavg()
            result = resume_sweep(workdir, name, stop_after, cores, tuple(options))
            result.update(spec=spec, round=k + 1, load_before=[round(v, 2) for v in load_before],
                          load_after=[round(v, 2) for v in os.getloadavg()])  # fmt: skip
            print(f"round {k + 1} {spec}: overhead {result['overhead_s']['all']}, load {result['load_before'][0]}"
                  f"–{result['load_after'][0]}", flush=True)  # fmt: skip
            runs.append(result)
    summary = {}
    for spec in schedulers:
        mine = [r for r in runs if r["spec"] == spec]
        summary[spec] = {
            "overhead_s": quantiles([g for r in mine for g in r["gaps_s"]]),
            "outside_evaluation_s": quantiles([g for r in mine for g in r["outside_gaps_s"]]),
            "forward_s_median": statistics.median(r["forward_s"]["median"] for r in mine),
        }
    for r in runs:
        r["outside_evaluation_s"] = quantiles(r.pop("outside_gaps_s"))
        r.pop("gaps_s")
    return {"runs": runs, "summary": summary}


def markdown(record: dict) -> str:
    """The record as docs/benchmarks.md shows it."""
    s, m = record["settings"], record["machine"]
    lines = [
        f"{record['ready_reset_jobs']:,} reset jobs ready, {s['rounds']} rounds taking turns, each run stopped after "
        f"{s['stop_after']:,} results; `--cores {s['cores']}`; {m['cpu']} ({m['cores']} cores), {record['created'][:10]}.",
        "",
        "| round | scheduler | reset jobs | per-job overhead, median (p90) | outside the evaluation, median (p90) "
        "| forward pass, median | first result after | load (1 min) before–after |",
        "|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for r in record["runs"]:
        q, o = r["overhead_s"]["all"], r["outside_evaluation_s"]
        lines.append(f"| {r['round']} | `{r['spec']}` | {r['reset_jobs']:,} | {q['median']} s ({q['p90']} s) | {o['median']} s ({o['p90']} s) "
                     f"| {r['forward_s']['median']} s | {r['first_result_after_s']} s | {r['load_before'][0]}–{r['load_after'][0]} |")  # fmt: skip
    lines += ["", "| scheduler, all its runs | gaps measured | per-job overhead, median (p90) | outside the evaluation, median (p90) |",
              "|---|---|---|---|"]  # fmt: skip
    for spec, v in record["summary"].items():
        q, o = v["overhead_s"], v["outside_evaluation_s"]
        lines.append(f"| `{spec}` | {q['n']:,} | {q['median']} s ({q['p90']} s) | {o['median']} s ({o['p90']} s) |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workdir", type=Path, nargs="?", help="a finished rehearsal's --workdir (benchmarks.paper_scale)")
    parser.add_argument("--scheduler", nargs="+", default=["by-priority", "greedy"],
                        help="Snakemake's --scheduler value, then the options that go with it (one quoted word each)")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=2, help="every scheduler once per round, in the order given")
    parser.add_argument("--stop-after", type=int, default=1200, help="reset results after which a run stops")
    parser.add_argument("--cores", type=int, default=os.cpu_count())
    started = harness.start(parser, "scheduler_comparison", markdown, not_settings=("workdir",))
    if started is None:
        return
    args, record = started
    if args.workdir is None:
        parser.error("the workdir of a finished rehearsal is needed")
    record["ready_reset_jobs"] = paper_resets(args.workdir)
    record["scheduler_plugins"] = scheduler_plugins()
    record.update(compare(args.workdir, args.scheduler, args.rounds, args.stop_after, args.cores))
    harness.finish(args, record, markdown)


if __name__ == "__main__":
    main()
