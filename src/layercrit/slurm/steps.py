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
(``layercrit.slurm_checks``), among them a chain of the same study already queued or running in
the same directory: each step carries the study, the directory and its launch in its comment,
read back with squeue (``layercrit.slurm_cluster``). Stopped while submitting (Ctrl-C, SIGTERM),
it cancels what it had submitted.

With ``--wait`` the command stays until every allocation has ended and exits 0 only if all of
them completed; otherwise it names each step or array task that did not complete, with its Slurm
state and log, and the command that finishes the study, and exits 1 (``layercrit.slurm_jobs``).
Stopped while waiting, it says what is still queued or running and how to follow it.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from layercrit.slurm_checks import check_no_chain_queued, check_partition_limits, check_study, snakemake_workdir
from layercrit.slurm_cluster import ask_slurm, chain_comment, queued_chain_jobs, slurm_seconds, slurm_time
from layercrit.slurm_forcing import forcing_step, split_forcing
from layercrit.slurm_jobs import UNREACHABLE_LIMIT_S, Allocation, StoppedWaiting, last_seen, report, wait_for

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
    marks it as a step of this launch (``layercrit.slurm_cluster.chain_comment``)."""
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


class Interrupted(BaseException):
    """SIGTERM (e.g. the login session or a batch system ending the launcher), raised where the
    launcher is, like Ctrl-C's KeyboardInterrupt, so that it says what it leaves behind."""


def _raise_interrupted(signum: int, frame: object) -> None:
    raise Interrupted()


def _stop_name(stop: BaseException) -> tuple[str, int]:
    """How the launcher was stopped, and the exit status that says so (128 + the signal)."""
    return ("SIGTERM", 128 + signal.SIGTERM) if isinstance(stop, Interrupted) else ("Ctrl-C", 128 + signal.SIGINT)


def _cancel_launch(submitted: Sequence[tuple[Step, str]], launch: str, why: str) -> None:
    """Cancel the steps of one launch that did not submit all of its steps: those it knows, and
    any whose sbatch was interrupted after Slurm took it (found in the queue by the launch's
    mark); say exactly what was cancelled, or what is left and how to cancel it."""
    known = {job: f"{step.name} (Slurm job {job})" for step, job in submitted}
    found = queued_chain_jobs(STEP_NAMES)
    for job in [] if isinstance(found, str) else found:
        if job.launch == launch and job.array_job not in known:
            known[job.array_job] = f"{job.name.removeprefix('layercrit-')} (Slurm job {job.array_job}, its sbatch interrupted)"
    lines = [f"layercrit-slurm: {why}; half a chain would run without its later steps."]
    if known:
        cancel = ask_slurm("scancel", *known, timeout=15)
        steps = ", ".join(known.values())
        if cancel.ok:
            lines.append(f"Cancelled what was submitted: {steps}.")
        else:
            lines.append(f"Could not cancel {steps} ({cancel.stderr}): cancel them with: scancel {' '.join(known)}")
    if isinstance(found, str):
        lines.append(f"Could not look for a step whose sbatch was interrupted ({found}): look with squeue --me "
                     f"--format=%i,%k and cancel any whose comment ends in launch={launch}")  # fmt: skip
    elif not known:
        lines.append("Nothing of it was submitted.")
    print("\n".join(lines), file=sys.stderr, flush=True)


def _submit_steps(steps: Sequence[Step], settings: SlurmSettings, comment: str, launch: str) -> list[tuple[Step, str]] | int:
    """Submit the steps, each after the previous one; their job ids, or the exit status where
    the chain could not be submitted whole (what was submitted of it is then cancelled)."""
    submitted: list[tuple[Step, str]] = []
    try:
        for step in steps:
            command = sbatch_command(step, settings, submitted[-1][1] if submitted else None, comment)
            proc = subprocess.run(command, stdout=subprocess.PIPE, text=True)
            job_id = proc.stdout.strip().split(";")[0]
            if proc.returncode != 0 or not job_id:
                _cancel_launch(submitted, launch, f"sbatch failed for {step.name} (exit {proc.returncode})")
                return 1
            what = f"{step.array} allocations" if step.array else "1 allocation"
            log = settings.log_dir / f"{step.name}-{job_id}{'_<task>' if step.array else ''}.out"
            print(f"{step.name}: Slurm job {job_id} ({what}, {step.gpus} GPU(s) each); log {log}", flush=True)
            submitted.append((step, job_id))
    except (KeyboardInterrupt, Interrupted) as stop:
        name, status = _stop_name(stop)
        _cancel_launch(submitted, launch, f"stopped by {name} while submitting")
        return status
    return submitted


def submit(
    settings: SlurmSettings, snakemake_args: Sequence[str], *, wait: bool = False, dry_run: bool = False,
    resume: Sequence[str] = ("layercrit-slurm",),
) -> int:  # fmt: skip
    """Check the study and the cluster's limits, submit the steps, each after the previous one;
    with ``wait``, wait until every allocation has ended and return 0 only if all completed.
    ``resume``: the command line that called this, for the report's command that finishes the study."""
    steps = plan(settings, snakemake_args)
    options = snakemake_options(snakemake_args)
    config = check_study(settings, options, steps[0].gpus)
    workdir = snakemake_workdir(options)
    launch = uuid.uuid4().hex[:12]
    comment = chain_comment(config["study"], workdir, launch)
    if dry_run:
        for index, step in enumerate(steps):
            print(shlex.join(sbatch_command(step, settings, f"<{steps[index - 1].name}>" if index else None, comment)))
        return 0
    if wait and shutil.which("scontrol") is None:
        raise SystemExit("layercrit-slurm: --wait reads the jobs' states with scontrol, which is not installed here: "
                         "run it where Slurm's commands are, or without --wait (then follow the jobs with squeue)")  # fmt: skip
    check_partition_limits([(step, sbatch_command(step, settings, None, comment)) for step in steps])
    check_no_chain_queued(config["study"], workdir, STEP_NAMES)
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    previous_handler = signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        submitted = _submit_steps(steps, settings, comment, launch)
        if isinstance(submitted, int):
            return submitted
        if not wait:
            print("Submitted. Follow with: squeue --me; the results appear under results/<study>/ as before.")
            return 0
        seen: dict[str, Allocation] = {}
        try:
            allocations = wait_for(submitted, seen)
        except (KeyboardInterrupt, Interrupted) as stop:
            name, status = _stop_name(stop)
            report(last_seen(submitted, seen), settings.log_dir, resume, workdir=workdir, stopped=f"stopped by {name}")
            return status
        except StoppedWaiting as stop:
            return report(last_seen(submitted, seen), settings.log_dir, resume, workdir=workdir, stopped=str(stop))
        return report(allocations, settings.log_dir, resume, workdir=workdir)
    finally:
        signal.signal(signal.SIGTERM, previous_handler)


def _main(argv: Sequence[str] | None = None) -> int:
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


if __name__ == "__main__":
    raise SystemExit(_main())
