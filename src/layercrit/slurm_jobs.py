"""What Slurm says of the jobs layercrit-slurm submitted: wait until every allocation has ended
(``wait_for``), then say which did not complete and how to resume (``report``).

Why not ``sbatch --wait``: it reads only the job it submitted, and a job cancelled because a step
before it failed still "ends" with status 0. So the wait asks slurmctld (``scontrol``) about
every step and array task, and Slurm's accounting (``sacct``) about the jobs slurmctld has
forgotten, and the command's exit status is 0 only if every allocation completed.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from layercrit.slurm import Step

# Not a Slurm state: a job that neither slurmctld nor accounting knows (any more), its end unseen.
UNKNOWN = "UNKNOWN"
# Slurm job states after which a job no longer changes, unless Slurm requeues it (then it is
# PENDING again at the next look): the wait goes on until every allocation is in one of these.
ENDED = {
    "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED",
    "BOOT_FAIL", "DEADLINE", "REVOKED", "SPECIAL_EXIT", UNKNOWN,
}  # fmt: skip
# A job whose dependency failed waits forever with this reason unless it is cancelled; the steps
# ask Slurm to (--kill-on-invalid-dep=yes), and the wait cancels any that Slurm left waiting.
NEVER_SATISFIED = "DependencyNeverSatisfied"
# Polling: soon after submitting (a step that fails at once), then at most this often; each look is
# one scontrol call per step, and a finished job stays visible to it for MinJobAge (default 300 s).
FIRST_POLL_S, MAX_POLL_S = 2.0, 15.0


@dataclass(frozen=True)
class Allocation:
    """What Slurm says of one allocation: a step, or one task of the shards' job array."""

    step: str
    job: str  # as Slurm names it: "12", or "12_3" for task 3 of array job 12
    state: str  # Slurm's job state (COMPLETED, FAILED, CANCELLED, TIMEOUT, PENDING, ...)
    reason: str = ""
    exit_code: str = ""

    def log(self, log_dir: Path) -> Path:
        """Its output file: sbatch's --output pattern (``layercrit.slurm.sbatch_command``) for this job."""
        return log_dir / f"{self.step}-{self.job}.out"


def _task_ids(spec: str) -> list[int]:
    """Array task ids as Slurm writes a set of them: ``3``, ``1-4``, ``[2-3,5]``, ``1-8%2``."""
    ids: list[int] = []
    for part in spec.strip("[]").split("%")[0].split(","):
        first, _, last = part.partition("-")
        ids += range(int(first), int(last or first) + 1)
    return ids


def _slurmctld_records(job_id: str) -> list[dict[str, str]] | None:
    """What slurmctld says of a job (``scontrol show job``), one record per allocation (an
    array's pending tasks may share one): it has pending reasons, and keeps an ended job for
    MinJobAge. [] where it does not know the job (any more); None where it cannot say now."""
    proc = subprocess.run(["scontrol", "--oneliner", "show", "job", job_id], capture_output=True, text=True)
    if proc.returncode != 0:
        return [] if "Invalid job id" in proc.stderr else None
    keys = {"ArrayTaskId": "task", "JobState": "state", "Reason": "reason", "ExitCode": "exit_code"}
    records = [dict(re.findall(r"(?:^|\s)(\w+)=(\S*)", line)) for line in proc.stdout.splitlines()]
    return [{ours: r.get(theirs, "") for theirs, ours in keys.items()} for r in records if "JobState" in r]


def _accounting_records(job_id: str) -> list[dict[str, str]]:
    """What Slurm's accounting (``sacct``) says of a job, as ``_slurmctld_records``; [] where
    the cluster keeps no accounting (sacct then fails: "accounting storage is disabled")."""
    proc = subprocess.run(
        ["sacct", "--noheader", "--parsable2", "--allocations", f"--jobs={job_id}", "--format=JobID,State,ExitCode"],
        capture_output=True, text=True,
    )  # fmt: skip
    rows = [line.split("|") for line in proc.stdout.splitlines() if line.count("|") == 2] if proc.returncode == 0 else []
    # sacct writes "CANCELLED by <uid>", and an array task as <job>_<task>
    return [{"task": jid.partition("_")[2], "state": state.split()[0], "reason": "", "exit_code": code} for jid, state, code in rows]


def _allocations(step: Step, job_id: str, records: Sequence[dict[str, str]]) -> dict[str, Allocation]:
    """Slurm's records of one submitted step as its allocations, by job name ("12", "12_3")."""
    found = {}
    for record in records:
        for task in _task_ids(record["task"]) if step.array and record["task"] else [None]:
            job = job_id if task is None else f"{job_id}_{task}"
            found[job] = Allocation(step.name, job, record["state"], record["reason"], record["exit_code"])
    return found


def _ended(allocation: Allocation | None) -> bool:
    return allocation is not None and allocation.state in ENDED


def wait_for(submitted: Sequence[tuple[Step, str]]) -> list[Allocation]:
    """Wait until every allocation of the submitted steps has ended; their last states, in order.

    A job that waits on a dependency that can never be satisfied is cancelled (Slurm should have
    done it, --kill-on-invalid-dep), so that the wait ends and the report says so."""
    jobs = {job_id: [job_id] if not step.array else [f"{job_id}_{i}" for i in range(1, step.array + 1)] for step, job_id in submitted}
    last: dict[str, Allocation] = {}
    cancelled: set[str] = set()
    delay = FIRST_POLL_S
    while True:
        for step, job_id in submitted:
            records = _slurmctld_records(job_id)
            if records is None:
                continue  # asked again at the next look
            now = _allocations(step, job_id, records)
            if any(job not in now and not _ended(last.get(job)) for job in jobs[job_id]):
                # slurmctld forgot it (ended longer than MinJobAge ago): accounting knows, if there is any
                now = {**_allocations(step, job_id, _accounting_records(job_id)), **now}
            for job in jobs[job_id]:
                previous = last.get(job)
                # (slurmctld forgets an array task cancelled while pending at once)
                gone = Allocation(step.name, job, UNKNOWN, "gone from slurmctld, and no record in accounting (sacct)")
                allocation = now.get(job) or (previous if _ended(previous) else gone)
                if previous is None or (previous.state, previous.reason) != (allocation.state, allocation.reason):
                    reason = f" ({allocation.reason})" if allocation.reason not in ("", "None") else ""
                    print(f"{allocation.step} (Slurm job {allocation.job}): {allocation.state}{reason}", flush=True)
                last[job] = allocation
        for allocation in last.values():
            if allocation.state == "PENDING" and allocation.reason == NEVER_SATISFIED and allocation.job not in cancelled:
                subprocess.run(["scancel", allocation.job], capture_output=True)
                cancelled.add(allocation.job)
        if all(_ended(last.get(job)) for names in jobs.values() for job in names):
            return [last[job] for names in jobs.values() for job in names]
        time.sleep(delay)
        delay = min(delay * 1.5, MAX_POLL_S)


def report(allocations: Sequence[Allocation], log_dir: Path, resume: str) -> int:
    """Say what did not complete (step, Slurm state, log) and how to resume; the exit status."""
    incomplete = [a for a in allocations if a.state != "COMPLETED"]
    if not incomplete:
        print(f"layercrit-slurm: every step completed ({len(allocations)} allocations); results under results/<study>/")
        return 0
    lines = [f"layercrit-slurm: the study is not complete; {len(incomplete)} of {len(allocations)} allocations did not complete:"]
    for a in incomplete:
        why = [a.reason] if a.reason not in ("", "None") else []
        why += [f"exit code {a.exit_code}"] if a.exit_code not in ("", "0:0") else []
        why += ["a step before it did not complete"] if a.reason == NEVER_SATISFIED else []
        state = f"{a.state} ({', '.join(why)})" if why else a.state
        log = a.log(log_dir)
        lines.append(f"  {a.step} (Slurm job {a.job}): {state}; " + (f"log {log}" if log.exists() else "it never started (no log)"))
    lines += [
        "A step's log names the Snakemake jobs that failed and their logs under results/<study>/logs/.",
        "Every result is its own file: once the cause is fixed, the same command computes only what is missing:",
        f"  {resume}",
    ]
    print("\n".join(lines), file=sys.stderr, flush=True)
    return 1
