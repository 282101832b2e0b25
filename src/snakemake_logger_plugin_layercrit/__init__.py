"""A Snakemake logger plugin: a console a person can follow through thousands of jobs.

``--logger layercrit`` (the default profile sets it). Snakemake's own console prints a block per
job (rule, input, output, wildcards, reason, resources), a line for its shell command and two
for its end: about 18 lines a job, 9,941 lines for the demo, and a block per job for the
paper's 8,378 even in a dry run. This one prints what a person acts on:

- the plan: the job table, and in a dry run the reasons by rule;
- progress every ``--logger-layercrit-every`` seconds (default 10) and at the end: jobs done of
  all, the share, jobs per minute since the first job started, and the time left at that rate;
- every warning and error as Snakemake formats them (a failed job with its log), and the last
  line naming Snakemake's complete log (``.snakemake/log/``), which keeps every job's block.

It prints through Snakemake's own formatter, filter and colouring (``snakemake.logging``), so
``--quiet``, ``--printshellcmds`` and ``--show-failed-logs`` keep their meaning; with
``--logger-layercrit-jobs`` it also prints every job's block, as Snakemake's console does.
"""

# No `from __future__ import annotations`: Snakemake reads the settings' field types as types.
import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Optional

from snakemake_interface_logger_plugins.base import LogHandlerBase
from snakemake_interface_logger_plugins.common import LogEvent
from snakemake_interface_logger_plugins.settings import LogHandlerSettingsBase

# Per-job events: in the complete log, on the console only with --logger-layercrit-jobs.
JOB_EVENTS = {LogEvent.JOB_INFO, LogEvent.GROUP_INFO, LogEvent.JOB_STARTED, LogEvent.JOB_FINISHED, LogEvent.SHELLCMD}
# Snakemake's scheduling chatter, said once per scheduling round or at every start.
ROUTINE = (
    "Select jobs to execute", "Execute ", "Building DAG of jobs", "Using shell:",
    "Rules claiming more threads", "Conda environments: ignored",
    "Assuming unrestricted shared filesystem usage", "host:",
)  # fmt: skip


@dataclass
class LogHandlerSettings(LogHandlerSettingsBase):
    every: float = field(default=10.0, metadata={"help": "seconds between two progress lines (and one at the end)"})
    jobs: bool = field(default=False, metadata={"help": "also print every job's block, as Snakemake's own console does"})


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def progress_line(done: int, total: int, started: Optional[float], now: float) -> str:
    """``done`` of ``total`` jobs, with the rate since ``started`` and the time left at that rate."""
    share = f"{100 * done / total:.0f}%" if total else "100%"
    line = f"{done} of {total} jobs ({share}) done"  # as Snakemake says it, "steps" aside
    if started is not None and done and now > started:
        rate = done / (now - started)
        line += f", {60 * rate:.1f} jobs/min"
        if done >= total:
            line += f" in {_duration(now - started)}"
        elif done >= max(5, total // 50):  # the first jobs (data, downloads, imports) say little of the rest
            line += f", about {_duration((total - done) / rate)} left"
    return line


class LogHandler(LogHandlerBase):
    def __post_init__(self) -> None:
        from snakemake.logging import ColorizingTextHandler, DefaultFilter, DefaultFormatter

        settings = self.common_settings
        self.every = self.settings.every if self.settings else 10.0
        self.show_jobs = bool(self.settings and self.settings.jobs)
        self.console = ColorizingTextHandler(
            nocolor=settings.nocolor,
            stream=sys.stdout if settings.stdout else sys.stderr,
            formatter=DefaultFormatter(settings.quiet, settings.show_failed_logs),
            filter=DefaultFilter(settings.quiet, settings.debug_dag, settings.verbose, settings.dryrun, settings.printshellcmds),
        )
        self.started: Optional[float] = None  # when the first job started
        self.last_progress = 0.0  # (emit runs under the handler's own lock: one record at a time)

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, "event", None)
        if self.started is None and event in (LogEvent.JOB_STARTED, LogEvent.JOB_INFO):
            self.started = time.monotonic()
        if event in JOB_EVENTS and not self.show_jobs:
            return
        routine = event in (None, LogEvent.RESOURCES_INFO) and record.levelno == logging.INFO
        if routine and str(record.msg or "").startswith(ROUTINE):
            return
        if event == LogEvent.WORKFLOW_STARTED and not self.show_jobs:
            return  # the run's provenance block: in the complete log
        if event == LogEvent.PROGRESS:
            record = self._progress(record)
            if record is None:
                return
        self.console.handle(record)

    def _progress(self, record: logging.LogRecord) -> Optional[logging.LogRecord]:
        done, total = getattr(record, "done", 0), getattr(record, "total", 0)
        now = time.monotonic()
        if done < total and now - self.last_progress < self.every:
            return None
        self.last_progress = now
        line = logging.makeLogRecord({**record.__dict__, "msg": progress_line(done, total, self.started, now), "args": None})
        line.event = None  # printed as it is (Snakemake's formatter would say "steps")
        return line

    @property
    def writes_to_stream(self) -> bool:
        return True

    @property
    def writes_to_file(self) -> bool:
        return False

    @property
    def has_filter(self) -> bool:
        return True  # Snakemake's own, in self.console

    @property
    def has_formatter(self) -> bool:
        return True

    @property
    def needs_rulegraph(self) -> bool:
        return False
