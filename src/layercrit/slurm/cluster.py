"""What Slurm's client commands say, read by layercrit-slurm before, during and after a submission.

Kept apart from the plan (``layercrit.slurm``) because it is the one place that talks to the
cluster: every command runs with a timeout and never raises for a missing command or a controller
that does not answer (``ask_slurm``); the callers decide what that means (a check skipped with a
note, a wait that ends with a report). It reads:

- the partitions' time limits (``scontrol show partition``): Slurm accepts a job whose ``--time``
  exceeds its partition's MaxTime and leaves it PENDING (PartitionTimeLimit) for good;
- the launcher's chains in the queue (``squeue``), by the comment each submitted step carries
  (``chain_comment``): the study and working directory it runs, and the launch it belongs to;
- Slurm's time format (``slurm_seconds``), as sbatch takes ``--time`` and scontrol shows MaxTime.
"""

from __future__ import annotations

import math
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

# One client command waits at most this long (Slurm's own retries included); a controller that
# does not answer in time counts as unreachable for this look.
SLURM_CALL_TIMEOUT_S = 60.0

# The start of the comment (sbatch --comment) of every step layercrit-slurm submits.
CHAIN_MARK = "layercrit-chain"


@dataclass(frozen=True)
class SlurmAnswer:
    """What one client command said. ``returncode`` None: it gave no answer (not installed here,
    or no answer within the timeout); ``stderr`` then says which."""

    returncode: int | None
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def ask_slurm(*command: str, timeout: float = SLURM_CALL_TIMEOUT_S) -> SlurmAnswer:
    """Run one Slurm client command; a missing command or a timeout is an answer, not an exception."""
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        return SlurmAnswer(None, "", f"{command[0]} is not installed here (not on PATH)")
    except subprocess.TimeoutExpired:
        return SlurmAnswer(None, "", f"{command[0]} gave no answer within {timeout:.0f} s")
    return SlurmAnswer(proc.returncode, proc.stdout, proc.stderr.strip())


def scontrol_records(text: str) -> list[dict[str, str]]:
    """``scontrol --oneliner show ...`` output as one dict per line (its ``Key=value`` words)."""
    return [dict(re.findall(r"(?:^|\s)(\w+)=(\S*)", line)) for line in text.splitlines() if "=" in line]


# sbatch --time and scontrol's MaxTime: [days-]hours:minutes:seconds and the shorter forms.
_SLURM_TIME = re.compile(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?")


def slurm_seconds(text: str) -> int | None:
    """Seconds of a Slurm time limit, as sbatch counts them (seconds round up to a whole minute);
    None for no limit (``0``, ``UNLIMITED``, ``INFINITE``). The forms are sbatch's: ``minutes``,
    ``minutes:seconds``, ``hours:minutes:seconds``, ``days-hours``, ``days-hours:minutes``,
    ``days-hours:minutes:seconds``. ValueError for anything else."""
    text = text.strip()
    if text.upper() in ("UNLIMITED", "INFINITE"):
        return None
    match = _SLURM_TIME.fullmatch(text)
    if not match:
        raise ValueError(f"{text!r} is not a Slurm time (e.g. 04:00:00, 90, 1-12)")
    days, *rest = match.groups()
    fields = [int(f) for f in rest if f is not None]
    if days is not None:  # days-hours[:minutes[:seconds]]
        units: tuple[int, ...] = (3600, 60, 1)
    else:  # minutes, minutes:seconds, hours:minutes:seconds
        units = {1: (60,), 2: (60, 1), 3: (3600, 60, 1)}[len(fields)]
    seconds = int(days or 0) * 86400 + sum(f * u for f, u in zip(fields, units))
    return math.ceil(seconds / 60) * 60 or None


def slurm_time(seconds: int) -> str:
    """``seconds`` as Slurm writes a time limit: ``[days-]hours:minutes:seconds``."""
    days, rest = divmod(seconds, 86400)
    text = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}-{text}" if days else text


@dataclass(frozen=True)
class Partition:
    """A partition as ``scontrol show partition`` shows it; ``max_time_s`` None: no limit."""

    name: str
    max_time_s: int | None
    default: bool


def partitions() -> dict[str, Partition] | str:
    """The cluster's partitions by name, or why they could not be read."""
    answer = ask_slurm("scontrol", "--oneliner", "show", "partition")
    if not answer.ok:
        return answer.stderr or f"scontrol exited with {answer.returncode}"
    found = {}
    for record in scontrol_records(answer.stdout):
        if "PartitionName" in record:
            name = record["PartitionName"]
            found[name] = Partition(name, slurm_seconds(record.get("MaxTime", "UNLIMITED")), record.get("Default") == "YES")
    return found


def chain_comment(study: str, workdir: Path, launch: str) -> str:
    """The comment of every step of one launch: the study and directory it runs (a second chain
    of them is refused), and the launch (an interrupted submission cancels its own). Quoted, so
    that it is one word without ':' in scontrol's and squeue's output."""
    return f"{CHAIN_MARK}:study={quote(study, safe='')}:dir={quote(str(workdir), safe='/')}:launch={launch}"


@dataclass(frozen=True)
class QueuedJob:
    """A step of a layercrit-slurm chain that squeue lists: queued, running or ending."""

    job: str  # as squeue names it: "12", "12_3", or "12_[2-4]" for an array's pending tasks
    array_job: str  # the job id a whole array goes by; a job's own id otherwise
    name: str  # layercrit-<step>
    state: str
    reason: str
    study: str
    workdir: str
    launch: str


def queued_chain_jobs(step_names: Sequence[str]) -> list[QueuedJob] | str:
    """The steps of layercrit-slurm chains in the queue (every user's that squeue shows), by the
    job names ``layercrit-<step>`` and their comment; or why squeue could not say."""
    names = ",".join(f"layercrit-{name}" for name in step_names)
    # the comment last: it is the one field that could hold the separator
    answer = ask_slurm("squeue", "--noheader", f"--name={names}", "--format=%F|%i|%j|%T|%r|%k")
    if not answer.ok:
        return answer.stderr or f"squeue exited with {answer.returncode}"
    found = []
    for line in answer.stdout.splitlines():
        array_job, job, name, state, reason, comment = (line.split("|", 5) + [""] * 6)[:6]
        fields = dict(part.partition("=")[::2] for part in comment.split(":")[1:])
        if comment.startswith(CHAIN_MARK + ":") and {"study", "dir", "launch"} <= fields.keys():
            found.append(QueuedJob(job, array_job, name, state, reason, unquote(fields["study"]), unquote(fields["dir"]), fields["launch"]))
    return found
