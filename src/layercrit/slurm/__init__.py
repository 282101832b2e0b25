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
3. ``finish``: one allocation without GPUs, ``snakemake --resources gpu=0`` with
   ``LAYERCRIT_EVALUATIONS=none``: tables and figures. A reset result still missing there stops
   the step before its first job: it is never computed on another device than the others.

Every (model, layer, seed) stays its own Snakemake job with its own result file, so the same
command run again computes exactly what is missing (a deleted result, a new seed, what a failed,
cancelled or preempted allocation left undone). The parts run concurrently in one working
directory: their outputs are disjoint, and they run without Snakemake's lock (see ``plan``).

Before it submits anything it refuses what the steps would only find out on the nodes, or never
(``layercrit.slurm.checks``), among them a chain of the same study already queued or running in
the same directory: each step carries the study, the directory and its launch in its comment,
read back with squeue (``layercrit.slurm.cluster``). Stopped while submitting (Ctrl-C, SIGTERM),
it cancels what it had submitted.

With ``--wait`` the command stays until every allocation has ended and exits 0 only if all of
them completed; otherwise it names each step or array task that did not complete, with its Slurm
state and log, and the command that finishes the study, and exits 1 (``layercrit.slurm.jobs``).
Stopped while waiting, it says what is still queued or running and how to follow it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from layercrit.slurm.jobs import UNREACHABLE_LIMIT_S
from layercrit.slurm.steps import (
    FINISH_ENVIRONMENT,
    MANAGED_OPTIONS,
    MAX_REQUEUES,
    OWN_SBATCH_OPTIONS,
    REQUEUE_SIGNAL_S,
    STEP_NAMES,
    SlurmSettings,
    Step,
    check_sbatch_args,
    check_time_limits,
    gpu_request,
    gres_gpus,
    plan,
    sbatch_command,
    snakemake_options,
)
from layercrit.slurm.submit import Interrupted, submit

# the names of the former module layercrit/slurm.py
__all__ = [
    "FINISH_ENVIRONMENT", "MANAGED_OPTIONS", "MAX_REQUEUES", "OWN_SBATCH_OPTIONS", "REQUEUE_SIGNAL_S", "STEP_NAMES",
    "Interrupted", "SlurmSettings", "Step", "check_sbatch_args", "check_time_limits", "gpu_request", "gres_gpus", "plan",
    "sbatch_command", "snakemake_options", "submit",
]  # fmt: skip


def _main(argv: Sequence[str] | None = None) -> int:
    """The ``layercrit-slurm`` command (pyproject's entry point): its options, then ``submit``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    ours, snakemake_args = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(
        prog="layercrit-slurm",
        description=__doc__.split("\n\n")[0],
        epilog="Snakemake options for every step go after '--' (e.g. -- --configfile config/config.yaml). "
        "Exit status with --wait: 0 every allocation completed, 1 one did not or the controller stopped answering "
        "(the last lines say which, and the command that finishes the study), 2 a usage error; 130 (Ctrl-C) or "
        "143 (SIGTERM) stopped it, after it said what is still queued or running.",
    )
    env = os.environ.get
    parser.add_argument("--allocations", type=int, default=1, help="allocations (nodes) the reset jobs are spread over, at most one per reset job (default 1)")
    parser.add_argument("--gpus", type=int, help="GPUs per allocation (default 1, or as many as --gres names); 0 for a study on CPUs (device: cpu)")
    parser.add_argument("--gpu-model", help="GPU type, e.g. a100: sbatch --gpus=<type>:<--gpus>")
    parser.add_argument("--gres", help="generic resources of the prepare and shard allocations, e.g. gpu:a100:2; its GPUs count as --gpus")
    parser.add_argument("--cpus", type=int, default=8, help="CPUs per allocation (default 8)")
    parser.add_argument("--mem", help="memory per allocation, as sbatch --mem (default: the cluster's default)")
    parser.add_argument("--time", default="04:00:00", help="time limit of each reset allocation (default 04:00:00)")
    parser.add_argument("--prepare-time", default="02:00:00", help="time limit of the prepare step (default 02:00:00)")
    parser.add_argument("--finish-time", default="01:00:00", help="time limit of the finish step (default 01:00:00)")
    parser.add_argument("--partition", default=env("LAYERCRIT_SLURM_PARTITION"), help="partition (or $LAYERCRIT_SLURM_PARTITION)")
    parser.add_argument("--account", default=env("LAYERCRIT_SLURM_ACCOUNT"), help="account (or $LAYERCRIT_SLURM_ACCOUNT)")
    parser.add_argument("--finish-partition", help="partition of the finish step, which needs no GPU (default: --partition)")
    parser.add_argument("--requeue", action="store_true", help=f"requeue a step that is preempted, loses its node or reaches its time limit (signalled {REQUEUE_SIGNAL_S} s before; at most {MAX_REQUEUES} times); it resumes")
    parser.add_argument("--sbatch-arg", action="append", default=[], help="extra sbatch option for every step, e.g. --sbatch-arg=--qos=high (repeatable)")
    for step in ("prepare", "shards", "finish"):
        parser.add_argument(f"--{step}-sbatch-arg", action="append", default=[], help=f"extra sbatch option for the {step} step only (repeatable)")
    parser.add_argument("--log-dir", type=Path, default=Path("logs/slurm"), help="where each allocation's output goes (default logs/slurm)")
    parser.add_argument("--wait", action="store_true", help="return when every allocation has ended: 0 if all completed, else 1 and what did not; "
                        f"a job that can never start is cancelled and named, and a controller that does not answer for {UNREACHABLE_LIMIT_S / 60:.0f} minutes ends the wait")  # fmt: skip
    parser.add_argument("--dry-run", action="store_true", help="print the sbatch commands instead of submitting them")
    args = parser.parse_args(ours)
    settings = SlurmSettings(
        allocations=args.allocations, gpus=args.gpus, gpu_model=args.gpu_model, gres=args.gres, cpus=args.cpus, mem=args.mem,
        time=args.time, prepare_time=args.prepare_time, finish_time=args.finish_time, partition=args.partition,
        account=args.account, finish_partition=args.finish_partition, requeue=args.requeue,
        sbatch_args=tuple(args.sbatch_arg), prepare_sbatch_args=tuple(args.prepare_sbatch_arg),
        shards_sbatch_args=tuple(args.shards_sbatch_arg), finish_sbatch_args=tuple(args.finish_sbatch_arg), log_dir=args.log_dir,
    )  # fmt: skip
    return submit(settings, snakemake_args, wait=args.wait, dry_run=args.dry_run, resume=["layercrit-slurm", *argv])
