"""Per-job log files for jobs that run as threads of one process.

Snakemake runs `run:` jobs as threads when they share its process; a plain file handler on the
package logger would then collect every concurrent job's messages. One handler, installed once
and never removed, sends each record to the file of the job thread that emitted it. (A handler
per job, added and removed as jobs start and end, would change the logger's list of handlers
while other threads iterate over it, and a record emitted at that moment can skip a handler: a
line lost from another job's log.)
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _JobFiles(logging.Handler):
    """Each record to the log file of the job thread that emitted it (none: dropped)."""

    def __init__(self) -> None:
        super().__init__()
        self._files: dict[int, logging.FileHandler] = {}
        self._files_lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self._files_lock:
            target = self._files.get(record.thread)
        if target is not None:
            target.handle(record)

    def open(self, path: str | Path) -> None:
        handler = logging.FileHandler(path, mode="w")
        handler.setFormatter(logging.Formatter(FORMAT))
        with self._files_lock:
            self._files[threading.get_ident()] = handler

    def close_this_thread(self) -> None:
        with self._files_lock:
            handler = self._files.pop(threading.get_ident(), None)
        if handler is not None:
            handler.close()


_job_files: dict[str, _JobFiles] = {}
_install_lock = threading.Lock()


def _job_files_of(logger_name: str) -> _JobFiles:
    with _install_lock:
        if logger_name not in _job_files:
            logger = logging.getLogger(logger_name)
            _job_files[logger_name] = _JobFiles()
            logger.addHandler(_job_files[logger_name])
            if logger.level == logging.NOTSET or logger.level > logging.INFO:
                logger.setLevel(logging.INFO)
        return _job_files[logger_name]


@contextlib.contextmanager
def job_log(path: str | Path, logger_name: str = "layercrit") -> Iterator[logging.Logger]:
    """Send this thread's ``layercrit`` log records to ``path`` for the duration of the block.

    An exception leaving the block is logged with its traceback before it propagates, so the
    job's log says why it failed.
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    files = _job_files_of(logger_name)
    logger = logging.getLogger(logger_name)
    files.open(path)
    try:
        yield logger
    except BaseException:
        logger.exception("job failed")
        raise
    finally:
        files.close_this_thread()


@contextlib.contextmanager
def script_log(path: str | Path) -> Iterator[None]:
    """For a job that is its own process: stdout, stderr and ``layercrit`` logging go to ``path``."""
    import sys

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        logging.basicConfig(stream=f, level=logging.INFO, format=FORMAT)
        try:
            yield
        except BaseException:
            logging.getLogger("layercrit").exception("job failed")
            sys.stderr.flush()
            raise
