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
command run again computes exactly what is missing (a deleted result, a new seed, what a failed,
cancelled or preempted allocation left undone). The parts run concurrently in one working
directory: their outputs are disjoint, and they run without Snakemake's lock (see ``plan``).

With ``--wait`` the command stays until every allocation has ended and exits 0 only if all of
them completed; otherwise it names each step or array task that did not complete, with its Slurm
state and log, and exits 1 (``layercrit.slurm_jobs``).
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
from typing import Any

from layercrit.slurm_forcing import forcing_step, split_forcing
from layercrit.slurm_jobs import report, wait_for

# Snakemake's own options that this module sets for every step; given by the user they would be
# overridden or contradict the plan (the executor must be the local one inside an allocation).
MANAGED_OPTIONS = ("cores", "jobs", "resources", "executor", "until", "profile", "batch")

# sbatch options this module sets itself. Given again through --*sbatch-arg they would contradict
# the plan: GPUs, because the evaluations are granted as many devices as the allocation asks for
# (and sbatch refuses --gres=gpu:... beside --gpus); the others would break the chain of steps,
# the job ids it reads or where the logs are that its report names.
OWN_SBATCH_OPTIONS = {
    **dict.fromkeys(("--gpus", "-G", "--gres", "--gpus-per-node", "--gpus-per-task", "--gpus-per-socket"), "--gpus, --gpu-model or --gres"),
    **dict.fromkeys(("--array", "-a"), "--allocations"),
    **dict.fromkeys(("--dependency", "-d", "--kill-on-invalid-dep", "--parsable", "--wrap"), "nothing: the launcher chains the steps"),
    **dict.fromkeys(("--wait", "-W"), "layercrit-slurm --wait"),
    **dict.fromkeys(("--output", "-o", "--error", "-e"), "--log-dir"),
}

# --requeue: Slurm signals the batch shell this long before the time limit, which then puts the
# step back in the queue (Slurm's own --requeue covers preemption and node failure). Results are
# written atomically and the step runs again only what is missing, so a requeue resumes the step.
REQUEUE_SIGNAL_S = 120
# ... at most this many times per step (SLURM_RESTART_COUNT counts them): a step with one job
# longer than its time limit would otherwise come back forever.
MAX_REQUEUES = 5

# The finish step's Snakemake runs with this in its environment: the evaluation jobs refuse to
# run there (the step has no GPU; a missing result is never made on another device).
FINISH_ENVIRONMENT = "LAYERCRIT_EVALUATIONS=none"


@dataclass(frozen=True)
class SlurmSettings:
    """What the cluster needs to know; ``gpus``, ``cpus`` and ``mem`` are per allocation.

    ``gpus`` None: one GPU, or as many as ``gres`` names. ``mem`` None: the cluster's default
    (sbatch without --mem)."""

    allocations: int = 1
    gpus: int | None = None
    gpu_model: str | None = None
    gres: str | None = None
    cpus: int = 8
    mem: str | None = None
    time: str = "04:00:00"
    prepare_time: str = "02:00:00"
    finish_time: str = "01:00:00"
    partition: str | None = None
    account: str | None = None
    finish_partition: str | None = None
    requeue: bool = False
    sbatch_args: tuple[str, ...] = ()
    prepare_sbatch_args: tuple[str, ...] = ()
    shards_sbatch_args: tuple[str, ...] = ()
    finish_sbatch_args: tuple[str, ...] = ()
    log_dir: Path = Path("logs/slurm")


@dataclass(frozen=True)
class Step:
    """One sbatch submission: its name, the Snakemake command line it runs, its resources.

    ``gpus`` is what its evaluations may use (Snakemake's ``--resources gpu=N``), ``gpu_request``
    the sbatch options that ask Slurm for those GPUs."""

    name: str
    command: str
    gpus: int
    time: str
    gpu_request: tuple[str, ...] = ()
    sbatch_args: tuple[str, ...] = ()
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


def gres_gpus(gres: str | None) -> int | None:
    """The GPUs a ``--gres`` request asks for (``gpu[:type][:count]`` among comma-separated
    resources; Slurm's count defaults to 1), None where it asks for none."""
    for resource in (gres or "").split(","):
        name, *rest = resource.strip().split(":")
        if name == "gpu":
            return int(rest[-1]) if rest and rest[-1].isdigit() else 1
    return None


def gpu_request(settings: SlurmSettings) -> tuple[int, tuple[str, ...]]:
    """GPUs per allocation and the sbatch options that ask for them, from whichever of --gpus,
    --gpu-model, --gres the user gave (the names of Snakemake's Slurm executor: ``gpu``,
    ``gpu_model``, ``gres``; like it, a GPU count is given once, in --gpus or in --gres)."""
    in_gres = gres_gpus(settings.gres)
    if in_gres is not None and (settings.gpus is not None or settings.gpu_model):
        raise SystemExit(
            f"layercrit-slurm: --gres {settings.gres} already asks for GPUs; give their number and type there "
            "(e.g. --gres gpu:a100:2), not also --gpus or --gpu-model"
        )
    gpus = in_gres if in_gres is not None else 1 if settings.gpus is None else settings.gpus
    if gpus < 0:
        raise SystemExit("layercrit-slurm: --gpus must be >= 0")
    if settings.gpu_model and not gpus:
        raise SystemExit(f"layercrit-slurm: --gpu-model {settings.gpu_model} with --gpus 0: ask for at least one GPU")
    request = [f"--gres={settings.gres}"] if settings.gres else []
    if gpus and in_gres is None:
        request.append(f"--gpus={settings.gpu_model}:{gpus}" if settings.gpu_model else f"--gpus={gpus}")
    return gpus, tuple(request)


def check_sbatch_args(args: Sequence[str], option: str) -> None:
    """Refuse sbatch options the launcher sets itself (OWN_SBATCH_OPTIONS says why and instead what)."""
    for arg in args:
        name = arg.split("=", 1)[0] if arg.startswith("--") else arg[:2]
        if name in OWN_SBATCH_OPTIONS:
            raise SystemExit(
                f"layercrit-slurm: {option}={arg}: layercrit-slurm sets {name} itself; use {OWN_SBATCH_OPTIONS[name]}"
            )


def _requeueing(command: str) -> str:
    """``command`` as a batch script that requeues its step when Slurm signals the time limit
    (--signal=B:USR1@REQUEUE_SIGNAL_S); Slurm then ends the step, and it later runs again."""
    requeue = f'[ "${{SLURM_RESTART_COUNT:-0}}" -lt {MAX_REQUEUES} ] && scontrol requeue "$SLURM_JOB_ID"'
    # Snakemake runs as a child: a shell waiting in `exec` could not run the trap. `wait` returns
    # when the trap has run; the loop waits on for Snakemake and returns its exit status.
    return (
        f"trap '{requeue}' USR1; {command} & pid=$!; wait $pid; status=$?; "
        "while kill -0 $pid 2>/dev/null; do wait $pid; status=$?; done; exit $status"
    )


def plan(settings: SlurmSettings, snakemake_args: Sequence[str], python: str = sys.executable) -> list[Step]:
    """The three steps for a study given by ``snakemake_args`` (Snakemake options, no targets)."""
    if settings.allocations < 1 or settings.cpus < 1:
        raise SystemExit("layercrit-slurm: --allocations and --cpus must be >= 1")
    for option in ("sbatch_args", "prepare_sbatch_args", "shards_sbatch_args", "finish_sbatch_args"):
        check_sbatch_args(getattr(settings, option), "--" + option.replace("_args", "_arg").replace("_", "-"))
    options = snakemake_options(snakemake_args)
    gpus, request = gpu_request(settings)
    rest, forced, force_all = split_forcing(snakemake_args)
    user = shlex.join(rest)
    # The last --config replaces earlier ones: repeat the user's entries beside the shard.
    config = [shlex.quote(entry) for entry in options.config or []]
    n = settings.allocations

    def snakemake(target: str, cores: int, gpus: int, *extra: str) -> str:
        # the local executor and the workflow profile (profiles/default), whatever the environment says
        step = {"": "prepare" if "--until" in extra else "finish", "shard": "shards"}[target]
        own = [t for t in forced if forcing_step(t) == step]
        forcing = (["--forceall"] if force_all and step == "prepare" else []) + (["--forcerun", *map(shlex.quote, own)] if own else [])
        parts = [shlex.quote(python), "-m", "snakemake", target, f"--cores {cores}", f"--resources gpu={gpus}", user, *forcing, *extra]
        run = " ".join(part for part in parts if part)
        environment = f"export {FINISH_ENVIRONMENT}; " if step == "finish" else ""
        return "unset SNAKEMAKE_PROFILE; " + environment + (_requeueing(run) if settings.requeue else "exec " + run)

    def args(step: tuple[str, ...]) -> tuple[str, ...]:
        return settings.sbatch_args + step

    return [
        Step("prepare", snakemake("", settings.cpus, gpus, "--until", "baseline"), gpus, settings.prepare_time, request,
             args(settings.prepare_sbatch_args)),  # fmt: skip
        # The shards run side by side in one directory, their outputs disjoint by construction
        # (contiguous parts of the study's jobs); Snakemake's lock folder would be shared, and a
        # shard that ends removes it under one that starts (FileNotFoundError: .snakemake/locks/
        # 0.input.lock). So they do not lock; prepare and finish run alone and do.
        Step(
            "shards",
            snakemake("shard", settings.cpus, gpus, "--nolock", "--config", *config, f'"shard=${{SLURM_ARRAY_TASK_ID}}/{n}"'),
            gpus,
            settings.time,
            request,
            args(settings.shards_sbatch_args),
            array=n,
        ),
        # no GPU request: tables and figures need none, and the finish step must not evaluate
        Step("finish", snakemake("", settings.cpus, 0), 0, settings.finish_time, (), args(settings.finish_sbatch_args),
             partition=settings.finish_partition),  # fmt: skip
    ]


def sbatch_command(step: Step, settings: SlurmSettings, dependency: str | None) -> list[str]:
    """The sbatch command line of one step (``--parsable``: it prints the job id)."""
    log = settings.log_dir / (f"{step.name}-%A_%a.out" if step.array else f"{step.name}-%j.out")  # Allocation.log
    command = ["sbatch", "--parsable", f"--job-name=layercrit-{step.name}", "--nodes=1", "--ntasks=1"]
    command += [f"--cpus-per-task={settings.cpus}", f"--time={step.time}", f"--output={log}"]
    # Without --mem the cluster's default memory applies, which its nodes can give; a fixed
    # default here (64G once) is refused by partitions of smaller nodes.
    command += [f"--mem={settings.mem}"] if settings.mem else []
    partition = step.partition or settings.partition
    command += [f"--partition={partition}"] if partition else []
    command += [f"--account={settings.account}"] if settings.account else []
    command += list(step.gpu_request)
    command += ["--requeue", f"--signal=B:USR1@{REQUEUE_SIGNAL_S}"] if settings.requeue else []
    command += [f"--array=1-{step.array}"] if step.array else []
    # a step whose predecessor failed is cancelled, not left pending forever
    command += [f"--dependency=afterok:{dependency}", "--kill-on-invalid-dep=yes"] if dependency else []
    return command + list(step.sbatch_args) + [f"--wrap={step.command}"]


def study_config(options: argparse.Namespace) -> dict[str, Any]:
    """The config the steps' Snakemake will have: the user's --configfile and --config merged by
    Snakemake's own code, over the default study where they name none (the Snakefile's
    ``configfile:``), with the schema's defaults filled in as the Snakefile's validation does."""
    from snakemake.cli import parse_config
    from snakemake.common.configfile import load_configfile
    from snakemake.settings.types import ConfigSettings
    from snakemake.utils import update_config

    from layercrit.study import SCHEMA_DIR, check_config_files, validated, workflow_file

    workdir = Path(options.directory or ".")
    root = Path(options.snakefile).resolve().parent if options.snakefile else SCHEMA_DIR.parents[1]
    # the steps' own checks (common.smk): a key given twice, then the schema (an integer is an int)
    check_config_files(p for p in options.configfile or [] if Path(p).is_file())
    given = ConfigSettings(config=parse_config(options.config), configfiles=options.configfile).overwrite_config
    config = {} if "study" in given else load_configfile(workflow_file("config/demo.yaml", root, workdir))
    update_config(config, given)
    validated(config, "config", "config")
    config["zoo"] = workflow_file(config["zoo"], root, workdir)
    return config


def check_study(settings: SlurmSettings, snakemake_args: Sequence[str], gpus: int) -> None:
    """Before anything is submitted: refuse what the shards would only find out in their
    allocations. More allocations than reset jobs leaves a shard without any (it fails); GPUs
    that the study's evaluations need but the allocations lack make every evaluation refuse."""
    from layercrit.study import ConfigError, load_study

    try:
        config = study_config(snakemake_options(snakemake_args))
    except ConfigError as error:  # the steps would fail on it in their allocations, after queueing
        raise SystemExit(f"layercrit-slurm: nothing submitted: {error}") from None
    try:
        jobs = len(load_study(config).reset_jobs())
    except Exception as error:  # noqa: BLE001 - any reason: the steps check the config on the nodes
        # e.g. data only the compute nodes see (imagenet_val): not a reason to refuse here
        print(f"layercrit-slurm: note: could not read the study here to check it ({type(error).__name__}: {error}); "
              "submitting anyway, the steps check it on the nodes", file=sys.stderr)  # fmt: skip
        return
    if settings.allocations > jobs:
        raise SystemExit(
            f"layercrit-slurm: --allocations {settings.allocations} is more than the study's {jobs} reset jobs; "
            f"each allocation runs a part of them, at least one: use --allocations {jobs} or fewer"
        )
    if config["device"] != "cpu" and not gpus:
        raise SystemExit(
            f"layercrit-slurm: the study's evaluations need a GPU each (device: {config['device']}), but the allocations "
            "have none (--gpus 0): ask for GPUs (--gpus, --gres), or set device: cpu for a study on CPUs "
            "(e.g. -- --config device=cpu)"
        )


def submit(
    settings: SlurmSettings, snakemake_args: Sequence[str], *, wait: bool = False, dry_run: bool = False, resume: str = ""
) -> int:
    """Check the study, submit the steps, each after the previous one; with ``wait``, wait until
    every allocation has ended and return 0 only if all completed. ``resume``: the command to run
    again (the one that called this), for the report."""
    steps = plan(settings, snakemake_args)
    check_study(settings, snakemake_args, steps[0].gpus)
    if not dry_run:
        settings.log_dir.mkdir(parents=True, exist_ok=True)
    submitted: list[tuple[Step, str]] = []
    for step in steps:
        command = sbatch_command(step, settings, submitted[-1][1] if submitted else None)
        if dry_run:
            print(shlex.join(command))
            submitted.append((step, f"<{step.name}>"))
            continue
        proc = subprocess.run(command, stdout=subprocess.PIPE, text=True)
        job_id = proc.stdout.strip().split(";")[0]
        if proc.returncode != 0 or not job_id:
            print(f"layercrit-slurm: sbatch failed for {step.name} (exit {proc.returncode})", file=sys.stderr)
            if submitted:  # half a chain would run without its later steps, and hold the lock a rerun needs
                subprocess.run(["scancel", *(job for _, job in submitted)], capture_output=True)
                print(f"layercrit-slurm: cancelled the steps submitted before it ({', '.join(job for _, job in submitted)})", file=sys.stderr)
            return 1
        what = f"{step.array} allocations" if step.array else "1 allocation"
        log = settings.log_dir / f"{step.name}-{job_id}{'_<task>' if step.array else ''}.out"
        print(f"{step.name}: Slurm job {job_id} ({what}, {step.gpus} GPU(s) each); log {log}", flush=True)
        submitted.append((step, job_id))
    if dry_run:
        return 0
    if not wait:
        print("Submitted. Follow with: squeue --me; the results appear under results/<study>/ as before.")
        return 0
    try:
        allocations = wait_for(submitted)
    except KeyboardInterrupt:
        print(f"\nlayercrit-slurm: stopped waiting; the jobs go on ({', '.join(job for _, job in submitted)}): "
              "squeue --me follows them, scancel stops them", file=sys.stderr)  # fmt: skip
        return 130
    return report(allocations, settings.log_dir, resume or "the same layercrit-slurm command")


def _main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ours, snakemake_args = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(
        prog="layercrit-slurm",
        description=__doc__.split("\n\n")[0],
        epilog="Snakemake options for every step go after '--' (e.g. -- --configfile config/config.yaml). "
        "Exit status with --wait: 0 every allocation completed, 1 one did not (the last lines say which, "
        "and the command that resumes), 2 a usage error.",
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
    parser.add_argument("--wait", action="store_true", help="return when every allocation has ended: 0 if all completed, else 1 and what did not")
    parser.add_argument("--dry-run", action="store_true", help="print the sbatch commands instead of submitting them")
    args = parser.parse_args(ours)
    settings = SlurmSettings(
        allocations=args.allocations, gpus=args.gpus, gpu_model=args.gpu_model, gres=args.gres, cpus=args.cpus, mem=args.mem,
        time=args.time, prepare_time=args.prepare_time, finish_time=args.finish_time, partition=args.partition,
        account=args.account, finish_partition=args.finish_partition, requeue=args.requeue,
        sbatch_args=tuple(args.sbatch_arg), prepare_sbatch_args=tuple(args.prepare_sbatch_arg),
        shards_sbatch_args=tuple(args.shards_sbatch_arg), finish_sbatch_args=tuple(args.finish_sbatch_arg), log_dir=args.log_dir,
    )  # fmt: skip
    return submit(settings, snakemake_args, wait=args.wait, dry_run=args.dry_run, resume=shlex.join(["layercrit-slurm", *argv]))


if __name__ == "__main__":
    raise SystemExit(_main())
