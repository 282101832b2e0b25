"""The launcher's plan: the three chained steps of a study on Slurm (prepare, shards, finish), each
an sbatch command that runs the local Snakemake in one allocation, with the GPUs, time limits and
requeueing it asks for. ``layercrit.slurm`` says why a study runs this way.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from layercrit.slurm.cluster import slurm_seconds, slurm_time
from layercrit.slurm.forcing import forcing_step, split_forcing

# Snakemake's own options that this module sets for every step; given by the user they would be
# overridden or contradict the plan (the executor must be the local one inside an allocation).
MANAGED_OPTIONS = ("cores", "jobs", "resources", "executor", "until", "profile", "batch")

# sbatch options this module sets itself. Given again through --*sbatch-arg they would contradict
# the plan: GPUs, because the evaluations are granted as many devices as the allocation asks for
# (and sbatch refuses --gres=gpu:... beside --gpus); the others would break the chain of steps,
# the job ids it reads or where the logs are that its report names; the time limits are checked
# against the partitions' (and --requeue's signal) before submitting, and the job names and comment
# are how a chain already in the queue is recognised.
OWN_SBATCH_OPTIONS = {
    **dict.fromkeys(("--gpus", "-G", "--gres", "--gpus-per-node", "--gpus-per-task", "--gpus-per-socket"), "--gpus, --gpu-model or --gres"),
    **dict.fromkeys(("--array", "-a"), "--allocations"),
    **dict.fromkeys(("--dependency", "-d", "--kill-on-invalid-dep", "--parsable", "--wrap"), "nothing: the launcher chains the steps"),
    **dict.fromkeys(("--wait", "-W"), "layercrit-slurm --wait"),
    **dict.fromkeys(("--output", "-o", "--error", "-e"), "--log-dir"),
    **dict.fromkeys(("--time", "-t"), "--time, --prepare-time or --finish-time"),
    **dict.fromkeys(("--job-name", "-J", "--comment"), "nothing: they mark the launcher's chain in the queue"),
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
STEP_NAMES = ("prepare", "shards", "finish")


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


def check_time_limits(settings: SlurmSettings) -> None:
    """Refuse a time limit sbatch would not take, and with --requeue one of REQUEUE_SIGNAL_S or
    less: Slurm would signal the step as it starts, and it would requeue itself at once, on every
    start, until MAX_REQUEUES (issue 30 saw 5 requeues, then TIMEOUT)."""
    for option, value in (("--time", settings.time), ("--prepare-time", settings.prepare_time), ("--finish-time", settings.finish_time)):
        try:
            seconds = slurm_seconds(value)
        except ValueError as error:
            raise SystemExit(f"layercrit-slurm: {option} {value}: {error}") from None
        if settings.requeue and seconds is not None and seconds <= REQUEUE_SIGNAL_S:
            raise SystemExit(
                f"layercrit-slurm: --requeue with {option} {value}: the step is signalled {REQUEUE_SIGNAL_S} s before its "
                f"time limit to requeue itself, so it would requeue as soon as it starts, every time. Give {option} "
                f"longer than {slurm_time(REQUEUE_SIGNAL_S)} (a step needs minutes), or leave out --requeue"
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
    check_time_limits(settings)
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
        # only the finish step refuses evaluations, whatever the submitting shell had set
        environment = f"export {FINISH_ENVIRONMENT}; " if step == "finish" else f"unset {FINISH_ENVIRONMENT.split('=')[0]}; "
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


def sbatch_command(step: Step, settings: SlurmSettings, dependency: str | None, comment: str) -> list[str]:
    """The sbatch command line of one step (``--parsable``: it prints the job id); ``comment``
    marks it as a step of this launch (``layercrit.slurm.cluster.chain_comment``)."""
    log = settings.log_dir / (f"{step.name}-%A_%a.out" if step.array else f"{step.name}-%j.out")  # Allocation.log
    command = ["sbatch", "--parsable", f"--job-name=layercrit-{step.name}", f"--comment={comment}", "--nodes=1", "--ntasks=1"]
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
