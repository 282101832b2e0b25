"""What Slurm says of the jobs layercrit-slurm submitted: wait until every allocation has ended
(``wait_for``), then say which did not complete and the command that finishes the study
(``report``).

Why not ``sbatch --wait``: it reads only the job it submitted, and a job cancelled because a step
before it failed still "ends" with status 0. So the wait asks slurmctld (``scontrol``) about
every step and array task, and Slurm's accounting (``sacct``, where the machine has it) about
the jobs slurmctld has forgotten, and the command's exit status is 0 only if every allocation
completed. Every wait ends with a report: a job that can never start (its request exceeds a
limit of its partition, QOS or account) is cancelled and named, and a controller that does not
answer for ``UNREACHABLE_LIMIT_S`` ends the wait with what was seen last.
"""

from __future__ import annotations

import re
import shlex
import sys
import time
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from layercrit.slurm.cluster import ask_slurm, scontrol_records, slurm_time

if TYPE_CHECKING:
    from layercrit.slurm.steps import Step

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
# Pending reasons that Slurm keeps until the job is changed (slurm.schedmd.com/job_reason_codes):
# the job's own request exceeds a per-job or per-node limit of its partition, QOS or account, or
# is not allowed there. Slurm accepts such a job and leaves it pending for good; the wait cancels
# it and the report says what to change. (Limits on a user's or group's running jobs lift by
# themselves: a job waits on them.)
NEVER_STARTS = re.compile(
    r"PartitionTimeLimit|PartitionConfig|MaxMemPerLimit|BadConstraints|ReservationDeleted"
    r"|AccountNotAllowed|QOSNotAllowed|InvalidAccount|InvalidQOS"
    r"|(QOS|Assoc)Max\w*Per(Job|Node)(Limit)?|QOSMin\w+"
)
# ... once it has been pending for such reasons this long: Slurm gives the catch-all
# PartitionConfig at submission, and the precise reason (PartitionTimeLimit) when its scheduler
# has looked at the job (at once on the test cluster; at most sched_interval, 60 s by default).
NEVER_STARTS_AFTER_S = 90.0
# Polling: soon after submitting (a step that fails at once), then at most this often; each look is
# one scontrol call per step, and a finished job stays visible to it for MinJobAge (default 300 s).
FIRST_POLL_S, MAX_POLL_S = 2.0, 15.0
# A controller that does not answer is asked again at every look, for at most this long; then the
# wait ends with a report of what it saw last (the jobs may go on: they do not need the launcher).
UNREACHABLE_LIMIT_S = 600.0
# The launcher's options for each step's time limit and partition (named in what to do).
TIME_OPTION = {"prepare": "--prepare-time", "shards": "--time", "finish": "--finish-time"}
PARTITION_OPTION = {"prepare": "--partition", "shards": "--partition", "finish": "--finish-partition"}


class StoppedWaiting(Exception):
    """The wait ended before every allocation did (the message says why); its report says what was seen."""


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


def _slurmctld_records(job_id: str) -> list[dict[str, str]] | str:
    """What slurmctld says of a job (``scontrol show job``), one record per allocation (an
    array's pending tasks may share one): it has pending reasons, and keeps an ended job for
    MinJobAge. [] where it does not know the job (any more); why not, where it gave no answer."""
    answer = ask_slurm("scontrol", "--oneliner", "show", "job", job_id)
    if not answer.ok:
        return [] if "Invalid job id" in answer.stderr else answer.stderr or f"scontrol exited with {answer.returncode}"
    keys = {"ArrayTaskId": "task", "JobState": "state", "Reason": "reason", "ExitCode": "exit_code"}
    return [{ours: r.get(theirs, "") for theirs, ours in keys.items()} for r in scontrol_records(answer.stdout) if "JobState" in r]


def _accounting_records(job_id: str) -> tuple[list[dict[str, str]], str]:
    """What Slurm's accounting (``sacct``) says of a job, as ``_slurmctld_records``, and where it
    has nothing, why: no sacct on this machine, or no accounting on the cluster (sacct then fails:
    "accounting storage is disabled")."""
    answer = ask_slurm("sacct", "--noheader", "--parsable2", "--allocations", f"--jobs={job_id}", "--format=JobID,State,ExitCode")
    if not answer.ok:
        return [], f"no accounting to ask ({answer.stderr.splitlines()[-1] if answer.stderr else 'sacct failed'})"
    rows = [line.split("|") for line in answer.stdout.splitlines() if line.count("|") == 2]
    # sacct writes "CANCELLED by <uid>", and an array task as <job>_<task>
    records = [{"task": jid.partition("_")[2], "state": state.split()[0], "reason": "", "exit_code": code} for jid, state, code in rows]
    return records, "no record in accounting (sacct)"


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


def expected_jobs(submitted: Sequence[tuple[Step, str]]) -> dict[str, tuple[Step, str]]:
    """Every allocation the submitted steps make, by job name ("12", "12_3"), in order: its step and job id."""
    return {
        job: (step, job_id)
        for step, job_id in submitted
        for job in ([job_id] if not step.array else [f"{job_id}_{i}" for i in range(1, step.array + 1)])
    }


def last_seen(submitted: Sequence[tuple[Step, str]], seen: MutableMapping[str, Allocation]) -> list[Allocation]:
    """Each allocation's state at the wait's last look (``wait_for``'s ``seen``), in order;
    SUBMITTED for one it had not looked at yet."""
    return [seen.get(job) or Allocation(step.name, job, "SUBMITTED") for job, (step, _) in expected_jobs(submitted).items()]


def wait_for(submitted: Sequence[tuple[Step, str]], seen: MutableMapping[str, Allocation] | None = None) -> list[Allocation]:
    """Wait until every allocation of the submitted steps has ended; their last states, in order.

    ``seen`` holds each allocation's last state as the wait goes, so that a caller whose wait is
    interrupted can say what is still queued or running. A job that waits on a dependency that
    can never be satisfied (Slurm should have cancelled it, --kill-on-invalid-dep), or that can
    never start (``NEVER_STARTS``), is cancelled, so that the wait ends and the report says so.
    StoppedWaiting when slurmctld has not answered for UNREACHABLE_LIMIT_S."""
    jobs = expected_jobs(submitted)
    last = seen if seen is not None else {}
    cancelled: dict[str, str] = {}  # job -> the pending reason it was cancelled for
    never_starting: dict[str, float] = {}  # job -> since when it has been pending for a reason in NEVER_STARTS
    delay = FIRST_POLL_S
    answered = time.monotonic()
    unreachable = ""
    while True:
        for step, job_id in submitted:
            records = _slurmctld_records(job_id)
            if isinstance(records, str):  # asked again at the next look
                if not unreachable:
                    print(f"layercrit-slurm: slurmctld does not answer ({records}); asking again for up to "
                          f"{slurm_time(int(UNREACHABLE_LIMIT_S))}", file=sys.stderr, flush=True)  # fmt: skip
                unreachable = records
                continue
            answered, unreachable = time.monotonic(), ""
            now = _allocations(step, job_id, records)
            mine = [job for job, (_, owner) in jobs.items() if owner == job_id]
            why_gone = ""
            if any(job not in now and not _ended(last.get(job)) for job in mine):
                # slurmctld forgot it (ended longer than MinJobAge ago): accounting knows, if there is any
                accounted, why_gone = _accounting_records(job_id)
                now = {**_allocations(step, job_id, accounted), **now}
            for job in mine:
                previous = last.get(job)
                # (slurmctld forgets an array task cancelled while pending at once)
                gone = (
                    Allocation(step.name, job, "CANCELLED", cancelled[job]) if job in cancelled
                    else Allocation(step.name, job, UNKNOWN, f"gone from slurmctld, and {why_gone}")
                )  # fmt: skip
                allocation = now.get(job) or (previous if _ended(previous) else gone)
                if previous is None or (previous.state, previous.reason) != (allocation.state, allocation.reason):
                    reason = f" ({allocation.reason})" if allocation.reason not in ("", "None") else ""
                    print(f"{allocation.step} (Slurm job {allocation.job}): {allocation.state}{reason}", flush=True)
                last[job] = allocation
        for allocation in list(last.values()):
            pending = allocation.state == "PENDING" and allocation.job not in cancelled
            if pending and NEVER_STARTS.fullmatch(allocation.reason):
                never_starting.setdefault(allocation.job, time.monotonic())
            else:
                never_starting.pop(allocation.job, None)
            never = allocation.job in never_starting and time.monotonic() - never_starting[allocation.job] >= NEVER_STARTS_AFTER_S
            if pending and (allocation.reason == NEVER_SATISFIED or never):
                ask_slurm("scancel", allocation.job)
                cancelled[allocation.job] = allocation.reason
                if never:
                    print(f"{allocation.step} (Slurm job {allocation.job}): can never start as asked "
                          f"({allocation.reason}); cancelled it", flush=True)  # fmt: skip
        if all(_ended(last.get(job)) for job in jobs):
            return [last[job] for job in jobs]
        if unreachable and time.monotonic() - answered > UNREACHABLE_LIMIT_S:
            raise StoppedWaiting(f"slurmctld has not answered for {slurm_time(int(UNREACHABLE_LIMIT_S))}: {unreachable}")
        time.sleep(delay)
        delay = min(delay * 1.5, MAX_POLL_S)


def what_to_do(allocation: Allocation) -> str:
    """What to change for a job that can never start as asked (``NEVER_STARTS``); "" for others."""
    reason, step = allocation.reason, allocation.step
    if reason == "PartitionTimeLimit":
        return (f"its time limit exceeds its partition's MaxTime (scontrol show partition): give a shorter "
                f"{TIME_OPTION.get(step, '--time')} or another partition ({PARTITION_OPTION.get(step, '--partition')})")  # fmt: skip
    if reason in ("AccountNotAllowed", "QOSNotAllowed", "InvalidAccount", "InvalidQOS"):
        return "its account or QOS is not allowed there: check --account and any --sbatch-arg=--qos=... (sacctmgr show assoc user=$USER)"
    if NEVER_STARTS.fullmatch(reason):
        return ("it asks for more than its partition, QOS or account allows one job (scontrol show partition; sacctmgr show qos): "
                "ask for less (--cpus, --mem, --gpus, the time limits) or another partition or QOS")  # fmt: skip
    return ""


def _failed_job_logs(step_log: Path, workdir: Path) -> list[Path]:
    """The logs of the Snakemake jobs that failed in a step, as Snakemake names them in its output."""
    found = []
    for match in re.finditer(r"^\s*log: (.+) \(check log file\(s\) for error details\)$", step_log.read_text(errors="replace"), re.M):
        found += [workdir / path for path in match[1].split(", ")]
    return [path for path in found if path.is_file()]


def forcerun_advice(step_logs: Sequence[Path], workdir: Path) -> list[str]:
    """The targets of every ``snakemake --forcerun <target>`` that the workflow advised in these
    steps' logs or in the logs of their failed jobs: a damaged (e.g. truncated) result is newer
    than what it was made from, so running the same command again would not make it again."""
    targets: list[str] = []
    for step_log in step_logs:
        for log in [step_log, *_failed_job_logs(step_log, workdir)]:
            for target in re.findall(r"snakemake --forcerun ([\w./@+=-]+\w)", log.read_text(errors="replace")):
                targets += [target] if target not in targets else []
    return targets


def resume_command(argv: Sequence[str], forcerun: Sequence[str]) -> str:
    """The command that finishes the study: the launcher's own ``argv``, and the targets the
    workflow said must be made again as Snakemake's ``--forcerun`` (the launcher gives each to the
    step that makes it)."""
    args = list(argv)
    if forcerun:
        args += ([] if "--" in args else ["--"]) + ["--forcerun", *forcerun]
    return shlex.join(args)


def report(
    allocations: Sequence[Allocation], log_dir: Path, resume: Sequence[str], *, workdir: Path = Path("."), stopped: str = ""
) -> int:
    """Say what did not complete (step, Slurm state, log), or with ``stopped`` (why the wait ended
    early) what has not ended and how to follow it, then the command that finishes the study; the
    exit status."""
    incomplete = [a for a in allocations if a.state != "COMPLETED"]
    if not incomplete and not stopped:
        print(f"layercrit-slurm: every step completed ({len(allocations)} allocations); results under results/<study>/")
        return 0
    running = [a for a in incomplete if not _ended(a)]
    if stopped:
        lines = [f"layercrit-slurm: stopped waiting: {stopped}. The jobs do not need this command; "
                 f"{len(running)} of {len(allocations)} allocations had not ended at the last look:"]  # fmt: skip
    else:
        lines = [f"layercrit-slurm: the study is not complete; {len(incomplete)} of {len(allocations)} allocations did not complete:"]
    for a in incomplete:
        why = [a.reason] if a.reason not in ("", "None") else []
        why += [f"exit code {a.exit_code}"] if a.exit_code not in ("", "0:0") else []
        why += ["a step before it did not complete"] if a.reason == NEVER_SATISFIED else []
        why += [f"cancelled, it could never start: {what_to_do(a)}"] if what_to_do(a) else []
        state = f"{a.state} ({', '.join(why)})" if why else a.state
        log = a.log(log_dir)
        lines.append(f"  {a.step} (Slurm job {a.job}): {state}; " + (f"log {log}" if log.exists() else "no log yet" if a in running else "it never started (no log)"))
    if running:
        ids = sorted({a.job.split("_")[0] for a in running}, key=int)
        lines += [
            f"Watch them with: squeue --jobs={','.join(ids)}   (stop them with: scancel {' '.join(ids)})",
            "Once they have ended, the same command computes only what is still missing:",
        ]
    else:
        lines += [
            "A step's log names the Snakemake jobs that failed and their logs under results/<study>/logs/.",
            "Every result is its own file: once the cause is fixed, this command computes only what is missing:",
        ]
    forcerun = forcerun_advice([a.log(log_dir) for a in incomplete if a.log(log_dir).is_file()], workdir)
    if forcerun:
        lines.insert(-1, f"The workflow found files to make again ({', '.join(forcerun)}): the command forces them (--forcerun).")
    lines.append(f"  {resume_command(resume, forcerun)}")
    print("\n".join(lines), file=sys.stderr, flush=True)
    return 1
