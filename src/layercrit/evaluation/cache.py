"""What a long-lived process keeps loaded between evaluation jobs: images, models, clean outputs,
fresh weights and clean activations, per device, keyed by the identity of the files they come
from so that a re-made file is never served stale.

Snakemake runs the evaluation jobs as threads of one process, so a job costs little more than its
forward passes when these are already loaded (``EvaluationCache``; ``DEFAULT_CACHE`` is the
process's).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from layercrit.data import ImageSet, load_image_set
from layercrit.evaluation.forward import CleanActivations, EvalSettings, free_memory
from layercrit.evaluation.graph import graph_segments
from layercrit.io import file_identity, file_sha256, read_safetensors
from layercrit.models.seed_schemes import fresh_model
from layercrit.models.zoo import load_checkpoint, load_model
from layercrit.study import Architecture

log = logging.getLogger(__name__)


class _LRU:
    """A small thread-safe LRU cache; ``get`` builds a missing entry once, even under contention."""

    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._key_locks: dict[Any, threading.Lock] = {}

    def get(self, key: Any, build: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._items:
                    return self._items[key]
            value = build()
            with self._lock:
                self._items[key] = value
                while len(self._items) > self.size:
                    self._items.popitem(last=False)
                self._key_locks.pop(key, None)
            return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


def file_key(path: str | Path, *rest: Any) -> tuple:
    # The file's identity is part of the key so that a re-made file is never served stale.
    return (*file_identity(path), *rest)



@dataclass
class HeldActivations:
    """One model's clean activations on a device, with the model object their segments call: a
    model evicted from the cache and built again is another object, and a reset of it would not
    reach segments made on the old one (they would compute the clean model's outputs)."""

    model: torch.nn.Module
    key: tuple
    activations: Any  # CleanActivations, or a language model's CleanHiddenStates


class DeviceCache:
    """What one device keeps between jobs: the images of its input pipelines, the models it ran
    last with their clean outputs, and one model's clean activations."""

    def __init__(self, max_models: int):
        self.images = _LRU(2)
        self.models = _LRU(max_models)
        self.logits = _LRU(max_models)
        self.activations: HeldActivations | None = None


class EvaluationCache:
    """What a long-lived process keeps loaded between jobs. Per device (``DeviceCache``): each
    job holds its device alone, so what a device holds is used by one job at a time, and the
    caches grow with the devices in use instead of evicting each other's entries. Shared: the
    image files read once on the host (copied to each device from there), fresh weights (on the
    CPU), file hashes. ``loads`` counts what was read or built (reported by the side-by-side
    benchmark and checked by the tests)."""

    def __init__(self, max_models: int = 2, max_fresh: int = 6):
        self.max_models = max_models
        self.host_images = _LRU(2)
        self.fresh = _LRU(max_fresh)
        self.hashes = _LRU(16)
        self.clean_accuracy = _LRU(16)  # a baseline's accuracy measured from its logits, per file versions
        self._devices: dict[str, DeviceCache] = {}
        self._lock = threading.Lock()
        self.loads: Counter[str] = Counter()

    def _count(self, what: str) -> None:
        with self._lock:
            self.loads[what] += 1

    def device(self, device: str) -> DeviceCache:
        with self._lock:
            if device not in self._devices:
                self._devices[device] = DeviceCache(self.max_models)
            return self._devices[device]

    def image_set(self, path: str | Path, device: str) -> ImageSet:
        def read() -> ImageSet:
            self._count("image_file_reads")
            return load_image_set(path)

        def build() -> ImageSet:
            data = self.host_images.get(file_key(path), read)
            self._count("image_copies")
            pin = device.startswith("cuda")
            return ImageSet(data.images.to(device, non_blocking=pin), data.labels.to(device))

        return self.device(device).images.get(file_key(path), build)

    def model(self, arch: Architecture, path: str | Path, device: str) -> tuple[torch.nn.Module, dict | None]:
        def build():
            self._count("model_builds")
            ckpt = load_checkpoint(path)
            model = load_model(arch, ckpt).to(device)
            if device.startswith("cuda"):
                model = model.to(memory_format=torch.channels_last)
            return model, ckpt.normalization

        return self.device(device).models.get(file_key(path), build)

    def fresh_state(self, arch: Architecture, seed: int, scheme: str = "independent") -> dict[str, torch.Tensor]:
        """State dict of the freshly initialized ``arch`` that ``seed`` stands for under seed
        scheme ``scheme`` (layercrit.models.seed_schemes; kept on the CPU)."""

        def build() -> dict[str, torch.Tensor]:
            self._count("fresh_builds")
            return fresh_model(arch, seed, scheme).state_dict()

        key = (arch.library, arch.name, repr(sorted(arch.kwargs.items())), repr(sorted(arch.extra.items())), seed, scheme)
        return self.fresh.get(key, build)

    def init_state(self, path: str | Path) -> dict[str, torch.Tensor]:
        return self.fresh.get(file_key(path), lambda: load_checkpoint(path).state_dict)

    def baseline_logits(self, path: str | Path, device: str) -> torch.Tensor:
        def build() -> torch.Tensor:
            return read_safetensors(path, device=device, names=("logits",))[0]["logits"]

        return self.device(device).logits.get(file_key(path), build)

    def sha256(self, path: str | Path) -> str:
        """sha256 of a file, computed once per version of the file (see ``file_key``)."""
        return self.hashes.get(file_key(path), lambda: file_sha256(path))

    def held_activations(self, device: str) -> CleanActivations | None:
        """The clean activations ``device`` holds now, if any."""
        held = self.device(device).activations
        return held.activations if held else None

    def held(self, device: str, model: torch.nn.Module, key: tuple, build: Callable[[], Any]) -> Any:
        """The clean activations ``device`` holds for ``model`` under ``key`` (the files and
        settings they derive from), built by ``build`` where it holds other ones, which are freed
        first. Call under the lease of ``device``."""
        cached = self.device(device)
        held = cached.activations
        if held is not None and held.model is model and held.key == key:
            return held.activations
        cached.activations = None
        activations = build()
        cached.activations = HeldActivations(model, key, activations)
        return activations

    def clean_activations(
        self,
        files: tuple[str | Path, ...],
        model: torch.nn.Module,
        data: ImageSet,
        normalization: dict | None,
        settings: EvalSettings,
        device: str,
        clean_logits: torch.Tensor,
        model_id: str = "?",
    ) -> CleanActivations:
        """The clean model's segment inputs on every batch (recorded on first use, checked against
        the baseline logits). Call with the clean model, under the lease of ``device``."""

        # the files they derive from (weights, images, baseline logits): a re-made one invalidates them
        key = (*(file_key(f) for f in files), settings)
        cached = self.device(device)
        held = cached.activations
        if held is not None and held.model is model and held.key == key:
            return held.activations
        cached.activations = None  # free the previous model's first
        free = free_memory(device)
        budget = min(settings.activation_cache_mb * 2**20, free // 2)
        activations = CleanActivations(graph_segments(model), budget)
        activations.record(data, normalization, settings, device, clean_logits)
        log.info(
            "%s on %s: activation budget %.0f MiB (activation_cache_mb %d, half of %.0f MiB free), %d of %d "
            "segment inputs kept (%.0f MiB)",
            model_id, device, budget / 2**20, settings.activation_cache_mb, free / 2**20, len(activations.kept),
            max(len(activations.segments) - 1, 0), activations.nbytes / 2**20,
        )  # fmt: skip
        cached.activations = HeldActivations(model, key, activations)
        return activations


DEFAULT_CACHE = EvaluationCache()
