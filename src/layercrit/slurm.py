"""Run a study on Slurm as a few allocations, each running the local, in-process Snakemake.

    layercrit-slurm --partition gpu --account my_project --allocations 4 --gpus 4 --cpus 16 \\
        -- --configfile config/config.yaml --config imagenet_val=/data/imagenet/val

Why not Snakemake's Slurm executor for the reset jobs: under it every job, grouped or not, is its
own ``python -m snakemake`` process started by ``srun`` (~4 s), which imports torch and timm (~4 s),
loads the images and the model and initializes CUDA, all around a second or two of forward
passes (measured: docs/benchmarks.md, "Slurm"). Inside one allocation the local Snakemake runs the
reset jobs as threads of one process (profiles/default: force-use-threads), where all of that
happens once per allocation: a job then costs what it costs on a workstation.

So Slurm schedules allocations and Snakemake the jobs inside each; this module only writes the
three submissions, chained by ``afterok`` dependencies (a failed step cancels what waits for it):

1. ``prepare``: one allocation, ``snakemake --until baseline``: data, models, baselines;
2. ``shards``: a job array of N allocations; task i runs ``snakemake shard --config shard=i/N``,
   the i-th of N contiguous parts of the reset jobs (``layercrit.study.Study.reset_jobs_shard``);
3. ``finish``: one allocation without GPUs, ``snakemake --resources gpu=0``: tables and figures. A
   reset result still missing there fails the step (it needs a GPU): it is never computed on
   another device than the others.

Every (model, layer, seed) stays its own Snakemake job with its own result file, so the same
command run again computes exactly what is missing (a deleted result, a new seed). The parts run
concurrently in one working directory: their outputs are disjoint, which is all Snakemake's
directory lock requires.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# Snakemake's own options that this module sets for every step; given by the user they would be
# overridden or contradict the plan (the executor must be the local one inside an allocation).
MANAGED_OPTIONS = ("cores", "jobs", "resources", "executor", "until", "profile", "batch")


@dataclass(frozen=True)
class SlurmSettings:
    """What the cluster needs to know; ``gpus`` and ``cpus`` are per allocation."""

    allocations: int = 1
    gpus: int = 1
    cpus: int = 8
    mem: str = "64G"
    time: str = "04:00:00"
    prepare_time: str = "02:00:00"
    finish_time: str = "01:00:00"
    partition: str | None = None
    account: str | None = None
    finish_partition: str | None = None
    sbatch_args: tuple[str, ...] = ()
    log_dir: Path = Path("logs/slurm")


@dataclass(frozen=True)
class Step:
    """One sbatch submission: its name, the Snakemake command line it runs, its resources."""

    name: str
    command: str
    gpus: int
    time: str
    array: int | None = None
    partition: str | None = None


def snakemake_options(args: Sequence[str]) -> argparse.Namespace:
    """The user's Snakemake options, parsed by Snakemake's own parser (so they are valid)."""
    from snakemake.cli import get_argument_parser

    parsed = get_argument_parser().parse_args(list(args))
    given = [name for name in MANAGED_OPTIONS if getattr(parsed, name) not in (None, {}, set())]
    if given:
        raise SystemExit(
            f"layercrit-slurm: do not pass --{', --'.join(given)} to Snakemake; they are set per step "
            "(cores and gpu resources from --cpus/--gpus)"
        )
    if parsed.targets:
        raise SystemExit(
            f"layercrit-slurm: no targets please ({sorted(parsed.targets)}); each step has its own. "
            "Put Snakemake options after '--', e.g. -- --configfile config/config.yaml"
        )
    return parsed


def plan(settings: SlurmSettings, snakemake_args: Sequence[str], python: str = sys.executable) -> list[Step]:
    """The three steps for a study given by ``snakemake_args`` (Snakemake options, no targets)."""
    if settings.allocations < 1 or settings.cpus < 1 or settings.gpus < 0:
        raise SystemExit("layercrit-slurm: --allocations and --cpus must be >= 1, --gpus >= 0")
    options = snakemake_options(snakemake_args)
    user = shlex.join(snakemake_args)
    # The last --config replaces earlier ones: repeat the user's entries beside the shard.
    config = [shlex.quote(entry) for entry in options.config or []]
    n = settings.allocations

    def snakemake(target: str, cores: int, gpus: int, *extra: str) -> str:
        # the local executor and the workflow profile (profiles/default), whatever the environment says
        parts = [shlex.quote(python), "-m", "snakemake", target, f"--cores {cores}", f"--resources gpu={gpus}", user, *extra]
        return "unset SNAKEMAKE_PROFILE; exec " + " ".join(part for part in parts if part)

    gpus = settings.gpus
    return [
        Step("prepare", snakemake("", settings.cpus, gpus, "--until", "baseline"), gpus, settings.prepare_time),
        # The shards run side by side in one directory, their outputs disjoint by construction
        # (contiguous parts of the study's jobs); Snakemake's lock folder would be shared, and a
        # shard that ends removes it under one that starts (FileNotFoundError: .snakemake/locks/
        # 0.input.lock). So they do not lock; prepare and finish run alone and do.
        Step(
            "shards",
            snakemake("shard", settings.cpus, gpus, "--nolock", "--config", *config, f'"shard=${{SLURM_ARRAY_TASK_ID}}/{n}"'),
            gpus,
            settings.time,
            array=n,
        ),
        Step("finish", snakemake("", settings.cpus, 0), 0, settings.finish_time, partition=settings.finish_partition),
    ]


def sbatch_command(step: Step, settings: SlurmSettings, dependency: str | None, wait: bool = False) -> list[str]:
    """The sbatch command line of one step (``--parsable``: it prints the job id)."""
    log = settings.log_dir / (f"{step.name}-%A_%a.out" if step.array else f"{step.name}-%j.out")
    command = ["sbatch", "--parsable", f"--job-name=layercrit-{step.name}", "--nodes=1", "--ntasks=1"]
    command += [f"--cpus-per-task={settings.cpus}", f"--mem={settings.mem}", f"--time={step.time}", f"--output={log}"]
    partition = step.partition or settings.partition
    command += [f"--partition={partition}"] if partition else []
    command += [f"--account={settings.account}"] if settings.account else []
    command += [f"--gpus={step.gpus}"] if step.gpus else []
    command += [f"--array=1-{step.array}"] if step.array else []
    # a step whose predecessor failed is cancelled, not left pending forever
    command += [f"--dependency=afterok:{dependency}", "--kill-on-invalid-dep=yes"] if dependency else []
    command += ["--wait"] if wait else []
    return command + list(settings.sbatch_args) + [f"--wrap={step.command}"]


def submit(settings: SlurmSettings, snakemake_args: Sequence[str], *, wait: bool = False, dry_run: bool = False) -> int:
    """Submit the steps, each after the previous one; with ``wait``, return when the last ends."""
    steps = plan(settings, snakemake_args)
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    previous = None
    for i, step in enumerate(steps):
        last = i == len(steps) - 1
        command = sbatch_command(step, settings, previous, wait=wait and last)
        if dry_run:
            print(shlex.join(command))
            previous = f"<{step.name}>"
            continue
        proc = subprocess.run(command, stdout=subprocess.PIPE, text=True)
        job_id = proc.stdout.strip().split(";")[0]
        if job_id:
            what = f"{step.array} allocations" if step.array else "1 allocation"
            print(f"{step.name}: Slurm job {job_id} ({what}, {step.gpus} GPU(s) each); log {settings.log_dir}/", flush=True)
        if proc.returncode != 0:
            if last and wait and job_id:
                print(f"{step.name} (job {job_id}) did not succeed: see {settings.log_dir}/ and the logs under results/", file=sys.stderr)
            else:
                print(f"layercrit-slurm: sbatch failed for {step.name} (exit {proc.returncode})", file=sys.stderr)
            return proc.returncode or 1
        previous = job_id
    if not wait and not dry_run:
        print("Submitted. Follow with: squeue --me; the results appear under results/<study>/ as before.")
    return 0


def _main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ours, snakemake_args = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(
        prog="layercrit-slurm",
        description=__doc__.split("\n\n")[0],
        epilog="Snakemake options for every step go after '--' (e.g. -- --configfile config/config.yaml).",
    )
    env = os.environ.get
    parser.add_argument("--allocations", type=int, default=1, help="allocations (nodes) the reset jobs are spread over (default 1)")
    parser.add_argument("--gpus", type=int, default=1, help="GPUs per allocation (default 1; 0 for device: cpu studies)")
    parser.add_argument("--cpus", type=int, default=8, help="CPUs per allocation (default 8)")
    parser.add_argument("--mem", default="64G", help="memory per allocation, as sbatch --mem (default 64G)")
    parser.add_argument("--time", default="04:00:00", help="time limit of each reset allocation (default 04:00:00)")
    parser.add_argument("--prepare-time", default="02:00:00", help="time limit of the prepare step (default 02:00:00)")
    parser.add_argument("--finish-time", default="01:00:00", help="time limit of the finish step (default 01:00:00)")
    parser.add_argument("--partition", default=env("LAYERCRIT_SLURM_PARTITION"), help="partition (or $LAYERCRIT_SLURM_PARTITION)")
    parser.add_argument("--account", default=env("LAYERCRIT_SLURM_ACCOUNT"), help="account (or $LAYERCRIT_SLURM_ACCOUNT)")
    parser.add_argument("--finish-partition", help="partition of the finish step, which needs no GPU (default: --partition)")
    parser.add_argument("--sbatch-arg", action="append", default=[], help="extra sbatch option for every step, e.g. --sbatch-arg=--qos=high (repeatable)")
    parser.add_argument("--log-dir", type=Path, default=Path("logs/slurm"), help="where each allocation's output goes (default logs/slurm)")
    parser.add_argument("--wait", action="store_true", help="return when the finish step has ended, with its exit status")
    parser.add_argument("--dry-run", action="store_true", help="print the sbatch commands instead of submitting them")
    args = parser.parse_args(ours)
    settings = SlurmSettings(
        allocations=args.allocations, gpus=args.gpus, cpus=args.cpus, mem=args.mem, time=args.time,
        prepare_time=args.prepare_time, finish_time=args.finish_time, partition=args.partition,
        account=args.account, finish_partition=args.finish_partition, sbatch_args=tuple(args.sbatch_arg),
        log_dir=args.log_dir,
    )  # fmt: skip
    return submit(settings, snakemake_args, wait=args.wait, dry_run=args.dry_run)


if __name__ == "__main__":
    raise SystemExit(_main())
