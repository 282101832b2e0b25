"""Which device an evaluation runs on, and leases so that concurrent jobs never share one.

Reset jobs run as threads of one long-lived Snakemake process (see workflow/rules/reset.smk).
Each job leases a device slot for the duration of its forward passes: one slot per visible GPU,
or a single CPU slot. A thread that finds every slot taken waits for the next one to be
returned, so no two jobs compete for one GPU and no GPU idles while jobs wait. On the CPU one
slot is right: one evaluation already uses every core through torch's intra-op threads, and two
at once would only thrash the caches.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path


def gpus_visible(driver_dir: str | Path = "/proc/driver/nvidia/gpus") -> int:
    """How many NVIDIA GPUs this process may use, found without importing torch (the workflow's
    parse step must stay fast): GPUs the driver lists, limited by ``CUDA_VISIBLE_DEVICES``."""
    driver_dir = Path(driver_dir)
    present = len(list(driver_dir.iterdir())) if driver_dir.is_dir() else 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return present
    ids = []
    for entry in visible.split(","):
        if not entry.strip() or entry.strip().startswith("-"):
            break  # CUDA ignores everything from the first invalid id on
        ids.append(entry)
    return min(present, len(ids))


def missing_device(setting: str, gpus: int) -> str | None:
    """Why the ``device`` setting cannot run on a machine with ``gpus`` visible GPUs, or None."""
    if not setting.startswith("cuda"):
        return None
    index = int(setting.partition(":")[2] or 0)
    if index < gpus:
        return None
    seen = f"{gpus} GPU(s) visible" + (
        f" (CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']!r})" if "CUDA_VISIBLE_DEVICES" in os.environ else ""
    )
    return (
        f"device: {setting!r} needs GPU {index}, but this machine has {seen}. Set device: auto (every visible "
        "GPU, else the CPU) or cpu, e.g. --config device=auto; or run on a machine or cluster node with a GPU"
    )


def resolve_device_kind(setting: str) -> str:
    """``auto`` → ``cuda`` when a GPU is visible, else ``cpu``; ``cuda:N`` pins one GPU."""
    import torch

    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if setting.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(
            f"device: {setting!r} was asked for but torch sees no GPU "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}); set device: auto or cpu"
        )
    return setting


class DevicePool:
    """A fixed set of device names handed out one job at a time."""

    def __init__(self, devices: list[str]):
        if not devices:
            raise ValueError("a device pool needs at least one device")
        self._free = list(devices)
        self._all = tuple(devices)
        self._cond = threading.Condition()

    @property
    def devices(self) -> tuple[str, ...]:
        return self._all

    @contextlib.contextmanager
    def lease(self, timeout: float | None = None) -> Iterator[str]:
        """Hold one device for the block; it is returned even if the block raises."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._free, timeout=timeout):
                raise TimeoutError(f"no free device among {self._all} within {timeout} s")
            device = self._free.pop(0)
        try:
            yield device
        finally:
            with self._cond:
                self._free.append(device)
                self._cond.notify()


def pool_for(setting: str) -> DevicePool:
    """The pool for a study's ``device`` setting: every visible GPU for ``cuda``/``auto``."""
    kind = resolve_device_kind(setting)
    if kind == "cuda":
        import torch

        return DevicePool([f"cuda:{i}" for i in range(torch.cuda.device_count())])
    return DevicePool([kind])


_pools: dict[str, DevicePool] = {}
_pools_lock = threading.Lock()


def shared_pool(setting: str) -> DevicePool:
    """One pool per setting per process, shared by every job thread of that process."""
    with _pools_lock:
        if setting not in _pools:
            _pools[setting] = pool_for(setting)
        return _pools[setting]
