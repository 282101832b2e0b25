"""The baseline evaluation and the reset evaluation.

``measure_reset`` is the paper's method for one (model, layer, seed): reset the layer, run the
model on the evaluation images, compare its outputs with the clean model's. ``evaluate_reset``
is the job around it: it checks the inputs, takes a device, gets what it needs from an
``EvaluationCache`` (a long-lived process, Snakemake running jobs as threads, loads images,
models and fresh initializations once, so a job costs little more than its forward passes), and
writes the result with its provenance. How the forward pass runs is ``layercrit.forward``'s.

A reset is compared with the clean outputs the baseline computed, so the baseline records what
it evaluated (sha256 of the checkpoint, of the evaluation data and of the logits it wrote), and
every reset job verifies that it evaluates exactly those files: a checkpoint replaced after its
baseline fails the job (:class:`StaleBaselineError`) instead of being compared with the clean
outputs of another model.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from layercrit.data import ImageSet, check_labels, image_set_pipeline, load_image_set
from layercrit.devices import DevicePool, shared_pool
from layercrit.forward import (
    CleanActivations,
    EvalSettings,
    ForwardPass,
    device_description,
    free_memory,
    predict_logits,
    use_cpu_threads,
)
from layercrit.graph import graph_segments
from layercrit.io import (
    atomic_path,
    file_identity,
    file_sha256,
    provenance,
    read_json,
    read_safetensors,
    write_json,
)
from layercrit.metrics import OutputChangeAccumulator, clean_accuracy
from layercrit.reset import replacement_source, reset_layer
from layercrit.study import Architecture
from layercrit.seed_schemes import fresh_model, unverified_versions
from layercrit.zoo import load_checkpoint, load_model

log = logging.getLogger(__name__)

# A baseline more than this many points below the reported top-1 most likely means a loading error.
ACCURACY_GAP_WARNING = 2.0


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


@dataclass
class HeldActivations:
    """One model's clean activations on a device, with the model object their segments call: a
    model evicted from the cache and built again is another object, and a reset of it would not
    reach segments made on the old one (they would compute the clean model's outputs)."""

    model: torch.nn.Module
    key: tuple
    activations: CleanActivations


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
            data = self.host_images.get(_file_key(path), read)
            self._count("image_copies")
            pin = device.startswith("cuda")
            return ImageSet(data.images.to(device, non_blocking=pin), data.labels.to(device))

        return self.device(device).images.get(_file_key(path), build)

    def model(self, arch: Architecture, path: str | Path, device: str) -> tuple[torch.nn.Module, dict | None]:
        def build():
            self._count("model_builds")
            ckpt = load_checkpoint(path)
            model = load_model(arch, ckpt).to(device)
            if device.startswith("cuda"):
                model = model.to(memory_format=torch.channels_last)
            return model, ckpt.normalization

        return self.device(device).models.get(_file_key(path), build)

    def fresh_state(self, arch: Architecture, seed: int, scheme: str = "independent") -> dict[str, torch.Tensor]:
        """State dict of the freshly initialized ``arch`` that ``seed`` stands for under seed
        scheme ``scheme`` (layercrit.seed_schemes; kept on the CPU)."""

        def build() -> dict[str, torch.Tensor]:
            self._count("fresh_builds")
            return fresh_model(arch, seed, scheme).state_dict()

        key = (arch.library, arch.name, repr(sorted(arch.kwargs.items())), seed, scheme)
        return self.fresh.get(key, build)

    def init_state(self, path: str | Path) -> dict[str, torch.Tensor]:
        return self.fresh.get(_file_key(path), lambda: load_checkpoint(path).state_dict)

    def baseline_logits(self, path: str | Path, device: str) -> torch.Tensor:
        def build() -> torch.Tensor:
            return read_safetensors(path, device=device, names=("logits",))[0]["logits"]

        return self.device(device).logits.get(_file_key(path), build)

    def sha256(self, path: str | Path) -> str:
        """sha256 of a file, computed once per version of the file (see ``_file_key``)."""
        return self.hashes.get(_file_key(path), lambda: file_sha256(path))

    def held_activations(self, device: str) -> CleanActivations | None:
        """The clean activations ``device`` holds now, if any."""
        held = self.device(device).activations
        return held.activations if held else None

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
        key = (*(_file_key(f) for f in files), settings)
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
    devices: DevicePool | None = None,
) -> dict[str, Any]:
    """Clean logits of a model on the evaluation images, and its top-1/top-5 accuracy. It runs
    on a device of ``devices`` (default: every one the ``device`` setting names)."""
    started = time.perf_counter()
    with (devices or shared_pool(settings.device)).lease() as device:
        use_cpu_threads(settings, device)
        data = cache.image_set(eval_data, device)
        model, normalization = cache.model(arch, weights, device)
        logits = predict_logits(model, data, normalization, settings, device)
        check_labels(data.labels, logits.shape[1], eval_data)
        accuracy = clean_accuracy(logits, data.labels)
    n = len(data)
    top1, top5, n_nonfinite = accuracy["top1"], accuracy["top5"], accuracy["n_nonfinite"]
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
        "eval_pipeline": image_set_pipeline(eval_data),
        **provenance(
            device=device_description(device),
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
    log.info("baseline of %s on %s: top-1 %.2f on %d images (%.1f s)", model_id, summary["device"], top1, n, summary["wall_s"])
    with atomic_path(logits_out) as tmp:
        save_file({"logits": logits.cpu().contiguous()}, tmp)
        summary["logits_sha256"] = file_sha256(tmp)
    write_json(summary_out, summary)
    return summary


def recompute_command(name: str, baseline_summary: str | Path, model: str) -> str:
    """The command that brings a baseline and its model's reset results back in line with its
    input ``name`` (of BASELINE_INPUTS): the evaluation data is shared between models (every
    model's, or with per-model pipelines those of one pipeline), so every baseline."""
    if name == "eval_data":
        return "snakemake --forcerun baseline  (the evaluation data is shared between models: recomputes every baseline and reset result)"
    return f"snakemake --forcerun {baseline_summary}  (recomputes the baseline and every reset result of {model!r})"


def verify_baseline_inputs(
    baseline: dict[str, Any], baseline_summary: str | Path, files: dict[str, tuple[str | Path, str]]
) -> None:
    """Raise :class:`StaleBaselineError` unless each file (name → (path, sha256)) is the one the
    baseline recorded; the message names the changed file and the command that recomputes."""
    model = baseline.get("model", "?")
    for name, (path, actual) in files.items():
        redo = recompute_command(name, baseline_summary, model)
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


def summary_contradictions(baseline: Mapping[str, Any], accuracy: Mapping[str, float | int]) -> dict[str, tuple[Any, Any]]:
    """The entries of a baseline summary other than its clean logits give (``accuracy``, of
    ``metrics.clean_accuracy``: top1, top5, n_nonfinite), as {key: (recorded, measured)}; NaN
    equals NaN (non-finite logits). Every reset job checks this (it copies the top-1 into its
    result), and so do the tables (``readback.check_baseline_files``)."""

    def same(recorded: Any, measured: float | int) -> bool:
        if not isinstance(recorded, (int, float)):
            return False
        return recorded == measured or (math.isnan(recorded) and math.isnan(measured))

    return {key: (baseline.get(key), value) for key, value in accuracy.items() if not same(baseline.get(key), value)}


def check_baseline_summary(
    baseline: dict[str, Any], baseline_summary: str | Path, accuracy: Mapping[str, float | int], n_images: int
) -> None:
    """Raise :class:`StaleBaselineError` unless the summary's accuracy and image count are those
    ``accuracy`` measures on the clean logits beside it: every reset result copies the top-1
    (``original_top1``, and ``recovered_acc`` from it), so a summary edited by hand would spread
    into all of them."""
    wrong = summary_contradictions(baseline, accuracy)
    if wrong or baseline.get("n_images") != n_images:
        others = [key for key in wrong if key != "top1"]
        recorded = "".join(f", {key} {wrong[key][0]!r}" for key in others)
        measured = "".join(f", {key} {wrong[key][1]!r}" for key in others)
        model = baseline.get("model", "?")
        raise StaleBaselineError(
            f"{baseline_summary} says top-1 {baseline.get('top1')} on {baseline.get('n_images')} images{recorded}, but "
            f"the clean logits it records give top-1 {accuracy['top1']} on {n_images} images{measured}: the summary "
            f"was edited or does not belong to them. Recompute it: {recompute_command('logits', baseline_summary, model)}"
        )


@dataclass(frozen=True)
class ResetInputs:
    """The files one reset evaluation reads (named as the rule's inputs)."""

    checkpoint: str | Path  # the trained model
    eval: str | Path  # the evaluation images
    logits: str | Path  # the baseline's clean outputs
    baseline: str | Path  # the baseline's summary, with the sha256 of what it evaluated
    init: str | Path | None = None  # the model's initial weights (mode reinit)


def measure_reset(
    model: torch.nn.Module,
    layer: str,
    mode: str,
    source: Mapping[str, torch.Tensor] | None,
    clean_logits: torch.Tensor,
    labels: torch.Tensor,
    forward: Callable[[], torch.Tensor],
) -> OutputChangeAccumulator:
    """The paper's method for one layer: reset ``layer`` (``mode``, new values from ``source``),
    run the model on the evaluation images (``forward``), and compare its outputs with the clean
    model's. The model is restored bitwise afterwards."""
    with reset_layer(model, layer, mode, source):
        reset_logits = forward()
    change = OutputChangeAccumulator()
    change.update(clean_logits, reset_logits, labels)
    return change


def evaluate_reset(
    *,
    model_id: str,
    arch: Architecture,
    files: ResetInputs,
    layer: str,
    seed: int,
    mode: str,
    settings: EvalSettings,
    out: str | Path,
    seed_scheme: str = "independent",
    fresh_arch: Architecture | None = None,
    cache: EvaluationCache = DEFAULT_CACHE,
    devices: DevicePool | None = None,
) -> dict[str, Any]:
    """One reset job: ``measure_reset`` of ``layer`` (``mode``, ``seed``) on verified inputs, on
    a device of ``devices`` (default: every one the ``device`` setting names).

    In mode randomize the layer's new values come from the fresh model ``seed`` stands for
    under ``seed_scheme``, built as ``fresh_arch`` (default ``arch``; layercrit.seed_schemes).
    Writes one JSON result (metrics + provenance) atomically to ``out`` and returns it. The
    model in the cache is restored bitwise afterwards, also when the evaluation fails.
    """
    started = time.perf_counter()
    draws = mode == "randomize"
    if draws and seed_scheme == "authors" and (differ := unverified_versions()):
        log.warning(
            "seed scheme authors: %s differ from the versions its draws were checked against the authors' code with; "
            "the fresh models may not be the authors' trials (the per-trial replication shows it)",
            ", ".join(f"{p} {have} (checked: {want})" for p, (have, want) in differ.items()),
        )
    source = replacement_source(
        mode,
        fresh_state=lambda: cache.fresh_state(fresh_arch or arch, seed, seed_scheme),
        initial_state=(lambda: cache.init_state(files.init)) if files.init is not None else None,
    )
    baseline = read_json(files.baseline)
    paths = dict(zip(BASELINE_INPUTS, (files.checkpoint, files.eval, files.logits)))
    verified = {name: (path, cache.sha256(path)) for name, path in paths.items()}
    verify_baseline_inputs(baseline, files.baseline, verified)
    waiting = time.perf_counter()
    with (devices or shared_pool(settings.device)).lease() as device:
        lease_wait_s = time.perf_counter() - waiting
        use_cpu_threads(settings, device)
        data = cache.image_set(files.eval, device)
        model, normalization = cache.model(arch, files.checkpoint, device)
        clean = cache.baseline_logits(files.logits, device)
        if clean.shape[0] != len(data):
            raise ValueError(f"{model_id}: baseline has {clean.shape[0]} outputs for {len(data)} images; re-run its baseline")
        # measured once per version of the logits and images, not per job
        accuracy = cache.clean_accuracy.get(
            _file_key(files.logits, _file_key(files.eval)), lambda: clean_accuracy(clean, data.labels)
        )
        check_baseline_summary(baseline, files.baseline, accuracy, len(data))
        forward = ForwardPass(model, data, normalization, settings, device)
        if settings.activation_cache_mb > 0:
            activations = cache.clean_activations(
                tuple(paths.values()), model, data, normalization, settings, device, clean, model_id
            )
            forward.activations, forward.start = activations, activations.start_for(layer)
        change = measure_reset(model, layer, mode, source, clean, data.labels, forward)
    result = {
        "model": model_id,
        "layer": layer,
        "seed": seed,
        "mode": mode,
        **({"seed_scheme": seed_scheme} if draws else {}),
        **change.result(baseline["top1"]),
        "original_top1": baseline["top1"],
        **{f"{name}_sha256": sha for name, (_, sha) in verified.items()},
        **provenance(
            device=device_description(device),
            precision=settings.precision,
            batch_size=settings.batch_size,
            forward_s=forward.seconds,
            forward_from=forward.starts_at,
            lease_wait_s=lease_wait_s,
            wall_s=time.perf_counter() - started,
        ),
    }
    if result["n_nonfinite"]:
        log.warning(
            "%s %s seed %d: %d images with non-finite outputs (%d clean, %d after the reset): the metrics are NaN",
            model_id, layer, seed, result["n_nonfinite"], result["n_nonfinite_clean"], result["n_nonfinite_reset"],
        )  # fmt: skip
    log.info(
        "%s %s seed %d (%s) on %s: criticality %.4f; forward from %s in %.2f s, %.2f s waiting for a device",
        model_id, layer, seed, mode, result["device"], result["criticality"], forward.starts_at, forward.seconds,
        lease_wait_s,
    )  # fmt: skip
    write_json(out, result)
    return result
