"""Atomic output writing and result provenance.

Every output is written to a temporary file beside its destination and renamed into place, so
a job killed mid-write leaves nothing that looks finished (rename is atomic on one filesystem).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import socket
import tempfile
from collections.abc import Iterator
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[str]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    # mkstemp makes the file owner-only; give the result the permissions a plain open() would.
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | Path, data: Any) -> None:
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(data, f, indent=2, allow_nan=True, default=str)
        f.write("\n")


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(text)


def write_csv(table: Any, path: str | Path) -> None:
    """Write a pandas DataFrame as CSV (atomically), without its index."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)


def read_json(path: str | Path) -> Any:
    with open(path) as f:
        return json.load(f)


_PACKAGES = ("layercrit", "torch", "torchvision", "timm", "numpy", "snakemake")


@functools.lru_cache(maxsize=1)
def _package_versions() -> tuple[tuple[str, str], ...]:
    # Looked up once per process: scanning installed distributions costs tens of milliseconds.
    return tuple(package_versions_uncached().items())


def package_versions() -> dict[str, str]:
    return dict(_package_versions())


def package_versions_uncached() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def provenance(**extra: Any) -> dict[str, Any]:
    """Who made a result, where and when: host, versions, Slurm job id when under Slurm, plus ``extra``."""
    record: dict[str, Any] = {
        "created": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        "host": socket.gethostname(),
        "versions": package_versions(),
    }
    if "SLURM_JOB_ID" in os.environ:
        record["slurm_job_id"] = os.environ["SLURM_JOB_ID"]
    if "CUDA_VISIBLE_DEVICES" in os.environ:  # which GPU(s) the job was given (Slurm, --gpus)
        record["cuda_visible_devices"] = os.environ["CUDA_VISIBLE_DEVICES"]
    record.update(extra)
    return record
