"""Atomic output writing, reading outputs back, file identity and result provenance.

Every output is written to a temporary file beside its destination and renamed into place, so
a job killed mid-write leaves nothing that looks finished (rename is atomic on one filesystem);
the next write of the same output removes what such a killed write left behind. Reading an
output that is damaged anyway (truncated or edited by hand) raises :class:`DamagedFileError`,
which names the file and the command that makes it again, instead of a parser's message.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import platform
import re
import socket
import tempfile
from collections.abc import Iterator
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any


class DamagedFileError(ValueError):
    """An output of the workflow that cannot be read back; the message says how to re-make it."""

    def __init__(self, path: str | Path, problem: str):
        super().__init__(
            f"{path} is damaged or incomplete ({problem}). Make it again with: "
            f"snakemake --forcerun {path}  (this also re-runs every job that depends on it)"
        )
        self.path = Path(path)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[str]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_interrupted_writes(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        # mkstemp makes the file owner-only, and some writers (safetensors) replace the file with
        # one of their own: give the result, last, the permissions a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _remove_interrupted_writes(path: Path) -> None:
    """Remove temporary files that a killed earlier write of ``path`` left behind.

    Only one job writes a given output at a time, so every such file is a leftover. The pattern
    is exact (mkstemp's 8 random characters), never another output's temporary file."""
    leftover = re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}\.tmp")
    with contextlib.suppress(FileNotFoundError), os.scandir(path.parent) as entries:
        for entry in entries:
            if leftover.fullmatch(entry.name):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)


def _umask() -> int:
    # Read, not set-and-restore: os.umask(0) would briefly give every other job thread's new
    # files the mode 0666.
    with contextlib.suppress(OSError, ValueError, StopIteration), open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("Umask:")).split()[1], 8)
    return _umask_once()


@functools.lru_cache(maxsize=1)
def _umask_once() -> int:
    mask = os.umask(0o022)
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
    """A JSON output of the workflow; :class:`DamagedFileError` if it is not complete JSON."""
    with open(path) as f:
        text = f.read()
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DamagedFileError(path, f"not valid JSON: {e}") from None


def read_safetensors(
    path: str | Path, device: str = "cpu", names: tuple[str, ...] | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """Tensors and header metadata of a safetensors output: all its tensors, or only ``names``,
    each of which it must hold. :class:`DamagedFileError` if unreadable or one is missing."""
    from safetensors import SafetensorError, safe_open

    if device.startswith("cpu:"):  # an emulated GPU (layercrit.evaluation.devices), which safetensors does not know
        device = "cpu"
    try:  # one opening of the file for header and tensors
        with safe_open(str(path), framework="pt", device=device) as f:
            held = list(f.keys())
            missing = [n for n in names or () if n not in held]
            if missing:
                raise DamagedFileError(path, f"it lacks the tensor(s) {missing}; it holds {sorted(held)}")
            return {name: f.get_tensor(name) for name in names or held}, f.metadata() or {}
    except SafetensorError as e:
        raise DamagedFileError(path, f"not a readable safetensors file: {e}") from None


# The one safetensors header entry of a canonical checkpoint (JSON: normalization, metadata),
# written by layercrit.models.zoo.save_checkpoint and read while the workflow is parsed.
CHECKPOINT_HEADER = "layercrit"


def safetensors_metadata(path: str | Path) -> dict[str, str] | None:
    """The metadata of a safetensors file's header (string to string), read without torch (the
    numpy framework: Snakemake has imported numpy already): the workflow reads what its outputs
    record while it is parsed. None where there is no file, {} for one whose header cannot be read
    (its job then makes it again)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            return f.metadata() or {}
    except FileNotFoundError:
        return None
    except (SafetensorError, OSError, ValueError):
        return {}


def file_identity(path: str | Path) -> tuple:
    """What changes whenever the file's content may have changed: any rewrite changes the inode
    or ctime (which, unlike the mtime, no tool can set back), so a cache keyed by this is never
    served stale."""
    resolved = Path(path).resolve()
    st = resolved.stat()
    return (str(resolved), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, read in chunks (hashlib releases the GIL while hashing)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


_PACKAGES = ("layercrit", "torch", "torchvision", "timm", "transformers", "tokenizers", "datasets", "numpy", "snakemake")


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


def machine() -> dict[str, Any]:
    """What decides a CPU run's floating-point results besides the code: the CPU's model name, the
    instruction set torch's kernels use, the cores, the OS."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("model name")), cpu)
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cores": os.cpu_count() or 1,
        "os": f"{platform.system()} {platform.release()}",
    }


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
