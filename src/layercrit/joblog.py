"""Per-job log files for jobs that run as threads of one process.

Snakemake runs `run:` jobs as threads when they share its process; a plain file handler on the
package logger would then collect every concurrent job's messages. The handler here keeps only
records emitted by the thread that opened it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path


class _ThisThreadOnly(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.thread = threading.get_ident()

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread == self.thread


@contextlib.contextmanager
def job_log(path: str | Path, logger_name: str = "layercrit") -> Iterator[logging.Logger]:
    """Send this thread's ``layercrit`` log records to ``path`` for the duration of the block.

    An exception leaving the block is logged with its traceback before it propagates, so the
    job's log says why it failed.
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger(logger_name)
    handler = logging.FileHandler(path, mode="w")
    handler.addFilter(_ThisThreadOnly())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield logger
    except BaseException:
        logger.exception("job failed")
        raise
    finally:
        logger.removeHandler(handler)
        handler.close()


@contextlib.contextmanager
def script_log(path: str | Path) -> Iterator[None]:
    """For a job that is its own process: stdout, stderr and ``layercrit`` logging go to ``path``."""
    import sys

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        logging.basicConfig(stream=f, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        try:
            yield
        except BaseException:
            logging.getLogger("layercrit").exception("job failed")
            sys.stderr.flush()
            raise
