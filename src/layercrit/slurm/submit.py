"""Submitting a planned launch: the checks before anything is submitted, the chained sbatch
submissions (cancelled again where the chain cannot be submitted whole, also on Ctrl-C or
SIGTERM), and with ``--wait`` the wait for every allocation and the report on them.
"""

from __future__ import annotations

import shlex
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Sequence

from layercrit.slurm.checks import check_no_chain_queued, check_partition_limits, check_study, snakemake_workdir
from layercrit.slurm.cluster import ask_slurm, chain_comment, queued_chain_jobs
from layercrit.slurm.jobs import Allocation, StoppedWaiting, last_seen, report, wait_for
from layercrit.slurm.steps import STEP_NAMES, SlurmSettings, Step, plan, sbatch_command, snakemake_options


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
