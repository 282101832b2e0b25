"""Which devices evaluations run on, and leases so that concurrent jobs never share one.

Reset jobs run as threads of one long-lived Snakemake process (see workflow/rules/evaluation.smk).
Each job leases a device for the duration of its forward passes: one per GPU that Snakemake
granted the run (``--resources gpu=N``, at most the visible ones), or a single CPU slot. A
thread that finds every device taken waits for the next one to be returned, so no two jobs
compete for one GPU and no GPU idles while jobs wait. The device returned last is handed out
first: jobs in a row (one at a time, or fewer than the devices) stay on the devices that already
hold their model and images. On the CPU one slot is right: one evaluation already uses every
core through torch's intra-op threads, and two at once would only thrash the caches.

**Emulated GPUs** (``LAYERCRIT_EMULATED_GPUS=N``): the machine counts as one with N GPUs,
which are CPU devices ``cpu:0`` … ``cpu:N-1`` of one thread each. The multi-GPU path (a pool of
N devices, N evaluations side by side as threads, a cache per device, ``--resources gpu=N``)
then runs, and is tested, on a machine without a GPU. Results are the CPU's.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path


EMULATED_GPUS = "LAYERCRIT_EMULATED_GPUS"


def emulated_gpus() -> int | None:
    """N where ``LAYERCRIT_EMULATED_GPUS=N`` makes this machine count as one with N GPUs."""
    value = os.environ.get(EMULATED_GPUS)
    if value is None or value == "":
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{EMULATED_GPUS}={value!r}: give the number of GPUs to emulate (1, 2, ...), or unset it")
    return int(value)


def gpu_device(index: int) -> str:
    """The name of GPU ``index``: ``cuda:i``, or ``cpu:i`` for an emulated one."""
    return f"{'cpu' if emulated_gpus() else 'cuda'}:{index}"


def gpus_visible(driver_dir: str | Path = "/proc/driver/nvidia/gpus") -> int:
    """How many NVIDIA GPUs this process may use, found without importing torch (the workflow's
    parse step must stay fast): GPUs the driver lists, limited by ``CUDA_VISIBLE_DEVICES``; the
    emulated ones where ``LAYERCRIT_EMULATED_GPUS`` is set."""
    if emulated := emulated_gpus():
        return emulated
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

    if emulated_gpus():
        return "cuda" if setting == "auto" else setting
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if setting.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(
            f"device: {setting!r} was asked for but torch sees no GPU "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}); set device: auto or cpu"
        )
    return setting


class DevicePool:
    """A fixed set of device names handed out one job at a time, the last returned first."""

    def __init__(self, devices: list[str]):
        if not devices:
            raise ValueError("a device pool needs at least one device")
        self._free = list(devices)[::-1]  # handed out from the end: the first device first
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
            device = self._free.pop()
        try:
            yield device
        finally:
            with self._cond:
                self._free.append(device)
                self._cond.notify()


def pool_for(setting: str, granted: int | None = None) -> DevicePool:
    """The pool for a study's ``device`` setting: for ``cuda``/``auto`` with GPUs, the first
    ``granted`` visible GPUs (Snakemake's ``--resources gpu=N``; None: every visible one)."""
    kind = resolve_device_kind(setting)
    if kind == "cuda":
        import torch

        visible = emulated_gpus() or torch.cuda.device_count()
        count = visible if granted is None else max(1, min(granted, visible))
        return DevicePool([gpu_device(i) for i in range(count)])
    if kind.startswith("cuda:"):
        return DevicePool([gpu_device(int(kind.partition(":")[2]))])
    return DevicePool([kind])


_pools: dict[tuple[str, int | None], DevicePool] = {}
_pools_lock = threading.Lock()


def shared_pool(setting: str, granted: int | None = None) -> DevicePool:
    """One pool per setting (and grant) per process, shared by every job thread of that process."""
    with _pools_lock:
        if (setting, granted) not in _pools:
            _pools[setting, granted] = pool_for(setting, granted)
        return _pools[setting, granted]
