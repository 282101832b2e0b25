"""The baseline evaluation and the reset evaluation.

``evaluate_reset`` is the whole reset experiment for one (model, layer, seed); the Snakemake rule
only passes paths to it. Data, models and freshly initialized weights come from an
``EvaluationCache``, so a long-lived process (Snakemake running jobs as threads) loads each
once and a job costs little more than its forward passes.

A reset is compared with the clean outputs the baseline computed, so the baseline records what
it evaluated (sha256 of the checkpoint, of the evaluation data and of the logits it wrote), and
every reset job verifies that it evaluates exactly those files: a checkpoint replaced after its
baseline fails the job (:class:`StaleBaselineError`) instead of being compared with the clean
outputs of another model.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from layercrit.data import ImageSet, load_image_set, to_model_input
from layercrit.devices import shared_pool
from layercrit.io import (
    atomic_path,
    file_identity,
    file_sha256,
    provenance,
    read_json,
    read_safetensors,
    require_tensors,
    write_json,
)
from layercrit.metrics import OutputChangeAccumulator, topk_correct
from layercrit.reset import reset_layer
from layercrit.segments import CleanActivations, resnet_segments
from layercrit.study import Architecture
from layercrit.zoo import build_architecture, load_checkpoint, load_model

log = logging.getLogger(__name__)

# fp32: strict float32 (no TF32 anywhere; the paper's arithmetic). torch_default: PyTorch's own
# defaults on NVIDIA GPUs, cuDNN convolutions in TF32 and matmuls in float32 (what the authors'
# runs used). tf32: TF32 for both. bf16: autocast to bfloat16. On the CPU all but bf16 are fp32.
PRECISIONS = ("fp32", "torch_default", "tf32", "bf16")
# A baseline more than this many points below the reported top-1 most likely means a loading error.
ACCURACY_GAP_WARNING = 2.0


@dataclass(frozen=True)
class EvalSettings:
    device: str = "auto"
    precision: str = "fp32"
    batch_size: int = 500
    # Memory (MiB per evaluation device, at most half of what is free there) for the clean
    # model's activations that reset evaluations start from (layercrit.segments); 0 recomputes
    # every forward pass in full.
    activation_cache_mb: int = 0
    # torch's threads for an evaluation on the CPU (the job's Snakemake threads): its default, every
    # core of the machine, oversubscribes an allocation or a machine shared with other jobs.
    cpu_threads: int | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision: {self.precision!r} is not one of {PRECISIONS}")


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


def _file_key(path: str | Path, *rest: Any) -> tuple:
    # The file's identity is part of the key so that a re-made file is never served stale.
    return (*file_identity(path), *rest)


class StaleBaselineError(RuntimeError):
    """A reset job's inputs are not the files its model's baseline was computed from."""


# What a baseline evaluates, recorded by sha256 in its summary and verified by every reset job.
BASELINE_INPUTS = ("checkpoint", "eval_data", "logits")


class EvaluationCache:
    """What a long-lived process keeps loaded between jobs: images, models, fresh weights, logits."""

    def __init__(self, max_models: int = 4, max_fresh: int = 6):
        self.images = _LRU(2)
        self.models = _LRU(max_models)
        self.fresh = _LRU(max_fresh)
        self.logits = _LRU(max_models)
        self.hashes = _LRU(4 * max_models)
        # one model's activations per device: reset jobs run model by model, and each device
        # (GPU) is held by one job at a time, which records or uses them under its lease
        self.activations: dict[str, tuple[tuple, CleanActivations]] = {}

    def image_set(self, path: str | Path, device: str) -> ImageSet:
        def build() -> ImageSet:
            data = load_image_set(path)
            pin = device.startswith("cuda")
            return ImageSet(data.images.to(device, non_blocking=pin), data.labels.to(device))

        return self.images.get(_file_key(path, device), build)

    def model(self, arch: Architecture, path: str | Path, device: str) -> tuple[torch.nn.Module, dict | None]:
        def build():
            ckpt = load_checkpoint(path)
            model = load_model(arch, ckpt).to(device)
            if device.startswith("cuda"):
                model = model.to(memory_format=torch.channels_last)
            return model, ckpt.normalization

        return self.models.get(_file_key(path, device), build)

    def fresh_state(self, arch: Architecture, seed: int) -> dict[str, torch.Tensor]:
        """State dict of a freshly initialized ``arch`` under ``seed`` (kept on the CPU)."""
        key = (arch.id, arch.timm_name, repr(sorted(arch.kwargs.items())), seed)
        return self.fresh.get(key, lambda: build_architecture(arch, seed=seed).state_dict())

    def init_state(self, path: str | Path) -> dict[str, torch.Tensor]:
        return self.fresh.get(_file_key(path), lambda: load_checkpoint(path).state_dict)

    def baseline_logits(self, path: str | Path, device: str) -> torch.Tensor:
        def build() -> torch.Tensor:
            tensors, _ = read_safetensors(path, device=device)
            require_tensors(path, tensors, ("logits",))
            return tensors["logits"]

        return self.logits.get(_file_key(path, device), build)

    def sha256(self, path: str | Path) -> str:
        """sha256 of a file, computed once per version of the file (see ``_file_key``)."""
        return self.hashes.get(_file_key(path), lambda: file_sha256(path))

    def clean_activations(
        self,
        files: tuple[str | Path, ...],
        model: torch.nn.Module,
        data: ImageSet,
        normalization: dict | None,
        settings: EvalSettings,
        device: str,
        clean_logits: torch.Tensor,
    ) -> CleanActivations:
        """The clean model's segment inputs on every batch (recorded on first use, checked against
        the baseline logits). Call with the clean model, under the lease of ``device``."""

        # the files they derive from (weights, images, baseline logits): a re-made one invalidates them
        key = (*(_file_key(f) for f in files), settings)
        held = self.activations.get(device)
        if held is not None and held[0] == key:
            return held[1]
        self.activations.pop(device, None)  # free the previous model's first
        budget = min(settings.activation_cache_mb * 2**20, _free_memory(device) // 2)
        activations = CleanActivations(resnet_segments(model), budget)
        with torch.inference_mode(), _precision(settings.precision, device):
            activations.record(lambda: _model_inputs(data, normalization, settings, device), clean_logits)
        self.activations[device] = (key, activations)
        return activations


def _free_memory(device: str) -> int:
    """Bytes free on the device (GPU memory, or the machine's available RAM)."""
    if device.startswith("cuda"):
        return torch.cuda.mem_get_info(torch.device(device))[0]
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


DEFAULT_CACHE = EvaluationCache()


@contextlib.contextmanager
def _precision(precision: str, device: str) -> Iterator[None]:
    if device.startswith("cuda"):
        # TF32 is a process-wide switch; every job of one study uses the same precision.
        torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
        torch.backends.cudnn.allow_tf32 = precision in ("tf32", "torch_default")
    if precision == "bf16":
        with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16):
            yield
    else:
        yield


def _use_cpu_threads(settings: EvalSettings, device: str) -> None:
    # A process-wide setting; safe under the lease: the CPU is one slot, one evaluation at a time.
    if device == "cpu" and settings.cpu_threads:
        torch.set_num_threads(settings.cpu_threads)


def predict_logits(
    model: torch.nn.Module, data: ImageSet, normalization: dict | None, settings: EvalSettings, device: str
) -> torch.Tensor:
    """Logits (float32, N×C) of ``model`` on every image, in batches, without gradients."""
    with torch.inference_mode(), _precision(settings.precision, device):
        return torch.cat([model(x).float() for x in _model_inputs(data, normalization, settings, device)])


def _model_inputs(data: ImageSet, normalization: dict | None, settings: EvalSettings, device: str) -> Iterator[torch.Tensor]:
    """The evaluation images as model input batches: normalized on the device, channels_last on a GPU."""
    mean = normalization.get("mean") if normalization else None
    std = normalization.get("std") if normalization else None
    for start in range(0, len(data), settings.batch_size):
        x = to_model_input(data.images[start : start + settings.batch_size].to(device, non_blocking=True), mean, std)
        if device.startswith("cuda"):
            x = x.contiguous(memory_format=torch.channels_last)
        yield x


def _device_description(device: str) -> str:
    if device.startswith("cuda"):
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return f"cpu ({torch.get_num_threads()} threads)"


def evaluate_baseline(
    *,
    model_id: str,
    arch: Architecture,
    weights: str | Path,
    eval_data: str | Path,
    settings: EvalSettings,
    logits_out: str | Path,
    summary_out: str | Path,
    reported_top1: float | None = None,
    cache: EvaluationCache = DEFAULT_CACHE,
) -> dict[str, Any]:
    """Clean logits of a model on the evaluation images, and its top-1/top-5 accuracy."""
    started = time.perf_counter()
    with shared_pool(settings.device).lease() as device:
        _use_cpu_threads(settings, device)
        data = cache.image_set(eval_data, device)
        model, normalization = cache.model(arch, weights, device)
        logits = predict_logits(model, data, normalization, settings, device)
        correct = topk_correct(logits, data.labels)
    n = len(data)
    n_nonfinite = int((~torch.isfinite(logits)).any(dim=1).sum())
    # An accuracy over outputs that are not numbers would look real (argmax of NaN is an index).
    top1, top5 = (100.0 * correct[1] / n, 100.0 * correct[5] / n) if not n_nonfinite else (math.nan, math.nan)
    gap = None if reported_top1 is None else reported_top1 - top1
    summary = {
        "model": model_id,
        "top1": top1,
        "top5": top5,
        "reported_top1": reported_top1,
        "top1_gap": gap,
        "suspect_loading": bool(n_nonfinite or (gap is not None and gap > ACCURACY_GAP_WARNING)),
        "n_images": n,
        "n_nonfinite": n_nonfinite,
        "nonfinite_outputs": bool(n_nonfinite),
        "checkpoint_sha256": cache.sha256(weights),
        "eval_data_sha256": cache.sha256(eval_data),
        **provenance(
            device=_device_description(device),
            precision=settings.precision,
            batch_size=settings.batch_size,
            wall_s=time.perf_counter() - started,
        ),
    }
    if n_nonfinite:
        log.warning(
            "%s: %d of %d images have non-finite clean outputs (NaN/inf): its accuracy and every reset "
            "metric of this model are NaN. Check the checkpoint %s",
            model_id, n_nonfinite, n, weights,
        )  # fmt: skip
    elif summary["suspect_loading"]:
        log.warning("%s: top-1 %.2f is %.2f points below the reported %.2f", model_id, top1, gap, reported_top1)
    with atomic_path(logits_out) as tmp:
        save_file({"logits": logits.cpu().contiguous()}, tmp)
        summary["logits_sha256"] = file_sha256(tmp)
    write_json(summary_out, summary)
    return summary


def verify_baseline_inputs(
    baseline: dict[str, Any], baseline_summary: str | Path, files: dict[str, tuple[str | Path, str]]
) -> None:
    """Raise :class:`StaleBaselineError` unless each file (name → (path, sha256)) is the one the
    baseline recorded; the message names the changed file and the command that recomputes."""
    model = baseline.get("model", "?")
    redo = f"snakemake --forcerun {baseline_summary}  (recomputes the baseline and every reset result of {model!r})"
    for name, (path, actual) in files.items():
        recorded = baseline.get(f"{name}_sha256")
        if recorded is None:
            raise StaleBaselineError(
                f"the baseline {baseline_summary} does not record which {name} it evaluated (made by an older "
                f"version of this workflow), so reset results cannot be checked against it. Recompute it: {redo}"
            )
        if recorded != actual:
            raise StaleBaselineError(
                f"{path} has changed since the baseline {baseline_summary} was computed (sha256 now {actual[:16]}…, "
                f"the baseline evaluated {recorded[:16]}…): its clean outputs no longer belong to these inputs. "
                f"Recompute it: {redo}"
            )


def evaluate_reset(
    *,
    model_id: str,
    arch: Architecture,
    weights: str | Path,
    baseline_logits: str | Path,
    baseline_summary: str | Path,
    eval_data: str | Path,
    layer: str,
    seed: int,
    mode: str,
    settings: EvalSettings,
    out: str | Path,
    init_weights: str | Path | None = None,
    cache: EvaluationCache = DEFAULT_CACHE,
) -> dict[str, Any]:
    """Reset ``layer`` of the model (``mode``, ``seed``), evaluate, compare with the clean outputs.

    Writes one JSON result (metrics + provenance) atomically to ``out`` and returns it. The
    model in the cache is restored bitwise afterwards, also when the evaluation fails.
    """
    started = time.perf_counter()
    if mode == "randomize":
        source = cache.fresh_state(arch, seed)
    elif mode == "reinit":
        if init_weights is None:
            raise ValueError(f"{model_id}: reset mode 'reinit' needs the model's initial weights")
        source = cache.init_state(init_weights)
    else:
        source = None
    baseline = read_json(baseline_summary)
    paths = dict(zip(BASELINE_INPUTS, (weights, eval_data, baseline_logits)))
    verified = {name: (path, cache.sha256(path)) for name, path in paths.items()}
    verify_baseline_inputs(baseline, baseline_summary, verified)
    original_top1 = baseline["top1"]
    waiting = time.perf_counter()
    with shared_pool(settings.device).lease() as device:
        lease_wait_s = time.perf_counter() - waiting
        _use_cpu_threads(settings, device)
        data = cache.image_set(eval_data, device)
        model, normalization = cache.model(arch, weights, device)
        clean = cache.baseline_logits(baseline_logits, device)
        if clean.shape[0] != len(data):
            raise ValueError(f"{model_id}: baseline has {clean.shape[0]} outputs for {len(data)} images; re-run its baseline")
        start = None
        if settings.activation_cache_mb > 0:
            files = (weights, eval_data, baseline_logits)
            activations = cache.clean_activations(files, model, data, normalization, settings, device, clean)
            start = activations.start_for(layer)
        forward_started = time.perf_counter()
        with reset_layer(model, layer, mode, source):
            if start is None:
                logits = predict_logits(model, data, normalization, settings, device)
            else:  # the blocks before the reset layer's are unchanged: start from their outputs
                with torch.inference_mode(), _precision(settings.precision, device):
                    logits = torch.cat([out.float() for out in activations.resume(start)])
        forward_s = time.perf_counter() - forward_started
        acc = OutputChangeAccumulator()
        acc.update(clean, logits, data.labels)
    result = {
        "model": model_id,
        "layer": layer,
        "seed": seed,
        "mode": mode,
        **acc.result(original_top1),
        "original_top1": original_top1,
        **{f"{name}_sha256": sha for name, (_, sha) in verified.items()},
        **provenance(
            device=_device_description(device),
            precision=settings.precision,
            batch_size=settings.batch_size,
            forward_s=forward_s,
            forward_from=activations.segments[start].name if start is not None else "input",
            lease_wait_s=lease_wait_s,
            wall_s=time.perf_counter() - started,
        ),
    }
    if result["n_nonfinite"]:
        log.warning(
            "%s %s seed %d: %d images with non-finite outputs (%d clean, %d after the reset): the metrics are NaN",
            model_id, layer, seed, result["n_nonfinite"], result["n_nonfinite_clean"], result["n_nonfinite_reset"],
        )  # fmt: skip
    write_json(out, result)
    return result
