"""The baseline evaluation and the reset evaluation.

``measure_reset`` is the paper's method for one (model, layer, seed): reset the layer, run the
model on the evaluation images, compare its outputs with the clean model's. ``evaluate_reset``
is the job around it: it checks the inputs, takes a device, gets what it needs from an
``EvaluationCache`` (a long-lived process, Snakemake running jobs as threads, loads images,
models and fresh initializations once, so a job costs little more than its forward passes), and
writes the result with its provenance. How the forward pass runs is
``layercrit.evaluation.forward``'s; what a reset job checks of its baseline,
``layercrit.evaluation.baseline_checks``'s.

The baseline records what it evaluated (sha256 of the checkpoint, of the evaluation data and of
the logits it wrote), so that every reset job can verify that it evaluates exactly those files.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from layercrit.data import check_labels, image_set_pipeline
from layercrit.evaluation.baseline_checks import BASELINE_INPUTS, check_baseline_summary, verify_baseline_inputs
from layercrit.evaluation.cache import DEFAULT_CACHE, EvaluationCache, file_key
from layercrit.evaluation.devices import DevicePool, shared_pool
from layercrit.evaluation.forward import EvalSettings, ForwardPass, device_description, predict_logits, use_cpu_threads
from layercrit.evaluation.metrics import OutputChangeAccumulator, clean_accuracy
from layercrit.evaluation.reset import replacement_source, reset_layer
from layercrit.io import atomic_path, file_sha256, provenance, read_json, write_json
from layercrit.models.blocks import remove_block
from layercrit.models.seed_schemes import unverified_versions
from layercrit.study import Architecture

log = logging.getLogger(__name__)

# A baseline more than this many points below the reported top-1 most likely means a loading error.
ACCURACY_GAP_WARNING = 2.0


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
    model's. The model is restored bitwise afterwards. In mode remove ``layer`` is a block, which
    returns its input instead (``source`` is None: removal draws nothing)."""
    with remove_block(model, layer) if mode == "remove" else reset_layer(model, layer, mode, source):
        reset_logits = forward()
    change = OutputChangeAccumulator()
    change.update(clean_logits, reset_logits, labels)
    return change


def reset_result(
    *,
    model_id: str,
    layer: str,
    seed: int,
    mode: str,
    seed_scheme: str,
    change: OutputChangeAccumulator,
    original_top1: float,
    inputs_sha256: Mapping[str, str | None],
    **provenance_fields: Any,
) -> dict[str, Any]:
    """One reset result as a reset job writes it (and the notebook API returns it): what was reset,
    the metrics of ``change`` (``measure_reset``), the sha256 of the files it was computed from
    (``inputs_sha256``, by ``BASELINE_INPUTS`` name) and ``io.provenance(**provenance_fields)``."""
    return {
        "model": model_id,
        "layer": layer,
        "seed": seed,
        "mode": mode,
        **({"seed_scheme": seed_scheme} if mode == "randomize" else {}),
        **change.result(original_top1),
        "original_top1": original_top1,
        **{f"{name}_sha256": sha for name, sha in inputs_sha256.items()},
        **provenance(**provenance_fields),
    }


def job_source(
    mode: str, fresh_arch: Architecture, seed: int, seed_scheme: str, files: ResetInputs, cache: EvaluationCache
) -> Mapping[str, torch.Tensor] | None:
    """What a reset job takes the layer's new values from (``replacement_source``): the fresh
    ``fresh_arch`` that ``seed`` stands for, or the model's initial weights, through ``cache``."""
    return replacement_source(
        mode,
        fresh_state=lambda: cache.fresh_state(fresh_arch, seed, seed_scheme),
        initial_state=(lambda: cache.init_state(files.init)) if files.init is not None else None,
    )


def verified_inputs(files: ResetInputs, cache: EvaluationCache) -> tuple[dict[str, Any], dict[str, tuple[str | Path, str]]]:
    """A reset job's baseline summary and its input files with their sha256 ({name: (path,
    sha256)}), checked to be the files that baseline evaluated (checkpoint, data, clean outputs)."""
    baseline = read_json(files.baseline)
    paths = dict(zip(BASELINE_INPUTS, (files.checkpoint, files.eval, files.logits)))
    verified = {name: (path, cache.sha256(path)) for name, path in paths.items()}
    verify_baseline_inputs(baseline, files.baseline, verified)
    return baseline, verified


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
    under ``seed_scheme``, built as ``fresh_arch`` (default ``arch``; layercrit.models.seed_schemes).
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
    source = job_source(mode, fresh_arch or arch, seed, seed_scheme, files, cache)
    baseline, verified = verified_inputs(files, cache)
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
            file_key(files.logits, file_key(files.eval)), lambda: clean_accuracy(clean, data.labels)
        )
        check_baseline_summary(baseline, files.baseline, accuracy, len(data))
        forward = ForwardPass(model, data, normalization, settings, device)
        # Not for removal: the recorded segments are traced graphs (evaluation.graph) that inline a
        # block's submodules, so the hook that removes it would not run in them.
        if settings.activation_cache_mb > 0 and mode != "remove":
            activations = cache.clean_activations(
                tuple(path for path, _ in verified.values()), model, data, normalization, settings, device, clean, model_id
            )
            forward.activations, forward.start = activations, activations.start_for(layer)
        change = measure_reset(model, layer, mode, source, clean, data.labels, forward)
    result = reset_result(
        model_id=model_id,
        layer=layer,
        seed=seed,
        mode=mode,
        seed_scheme=seed_scheme,
        change=change,
        original_top1=baseline["top1"],
        inputs_sha256={name: sha for name, (_, sha) in verified.items()},
        device=device_description(device),
        precision=settings.precision,
        batch_size=settings.batch_size,
        forward_s=forward.seconds,
        forward_from=forward.starts_at,
        lease_wait_s=lease_wait_s,
        wall_s=time.perf_counter() - started,
    )
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
