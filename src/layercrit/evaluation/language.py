"""The baseline and reset evaluations of a causal language model on token windows.

The paper's method, with next-token distributions in place of class probabilities: every
predicted position of every window (N x (L-1)) is one row of the output-change metrics
(``NextTokenAccumulator``). The clean outputs are recomputed by every reset job, batch by batch,
beside the reset model's: a store of the clean distributions would take V x 4 bytes per position,
200 GB per million positions at a vocabulary of 50k and 600 GB at 150k. The baseline keeps 6
bytes per position instead (``next_token_record``: the next token's log-probability, top-1 and
top-5 hits), which gives its accuracy and perplexity and against which each reset job checks
the clean outputs it recomputed. A job thus holds one batch's clean and reset logits at a time
(2 x batch x L x V x 4 bytes) and runs two forward passes per batch.

With ``activation_cache_mb`` above 0 both passes of a reset job start from the clean hidden
states at the input of the reset layer's decoder layer (``layercrit.evaluation.hidden_states``:
d_model x 4 bytes per token and decoder layer, the deepest kept first within the budget), bit
for bit the full pass.

Mode ``remove`` (block removal: ShortGPT's layer removal) makes the block, a decoder layer or
its attention or MLP, return its input (``layercrit.models.blocks.remove_block``); its passes
start at the block's decoder layer too.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from layercrit.evaluation.baseline_checks import StaleBaselineError, check_baseline_summary, recompute_command
from layercrit.evaluation.cache import DEFAULT_CACHE, EvaluationCache, file_key
from layercrit.evaluation.devices import DevicePool, shared_pool
from layercrit.evaluation.forward import EvalSettings, device_description, evaluating, free_memory, use_cpu_threads
from layercrit.evaluation.hidden_states import CleanHiddenStates
from layercrit.evaluation.jobs import ResetInputs, job_source, verified_inputs
from layercrit.evaluation.metrics import NextTokenAccumulator, next_token_accuracy, next_token_record, perplexity
from layercrit.evaluation.reset import reset_layer
from layercrit.io import atomic_path, file_sha256, provenance, read_safetensors, write_json
from layercrit.models.blocks import remove_block
from layercrit.study import Architecture
from layercrit.text_windows import read_token_windows, tokenizer_source

log = logging.getLogger(__name__)

RECORD_TENSORS = ("target_logprob", "top1_hit", "top5_hit")
# How far a reset job's recomputed clean log-probabilities may lie from the baseline's (same
# device, precision and batches: equal but for nondeterministic kernels).
CLEAN_TOLERANCE = 1e-4


def window_batches(tokens: torch.Tensor, settings: EvalSettings, device: str) -> list[torch.Tensor]:
    """The token windows in batches of ``settings.batch_size`` windows, on the device."""
    return [tokens[start : start + settings.batch_size].to(device) for start in range(0, len(tokens), settings.batch_size)]


def next_token_logits(model: torch.nn.Module, batch: torch.Tensor, settings: EvalSettings, device: str) -> torch.Tensor:
    """The model's next-token logits (float32, B x L x V) on one batch of windows."""
    with evaluating(settings, device):
        return model(batch).float()


def clean_hidden_states(
    model_id: str, model: torch.nn.Module, files: ResetInputs, tokens: torch.Tensor, baseline_logprob: torch.Tensor,
    settings: EvalSettings, device: str, cache: EvaluationCache,
) -> CleanHiddenStates:
    """The clean model's hidden states between decoder layers on every batch, within the budget
    (``activation_cache_mb``, at most half of what is free on the device), recorded once per
    model, files and settings, and held by the device for the next job. Under the device lease."""

    def build() -> CleanHiddenStates:
        budget = min(settings.activation_cache_mb * 2**20, free_memory(device) // 2)
        states = CleanHiddenStates(model, budget)
        states.record(window_batches(tokens, settings, device), settings, device, baseline_logprob)
        log.info(
            "%s on %s: hidden-state budget %.0f MiB (activation_cache_mb %d), %d of %d boundaries of %s kept (%.0f MiB)",
            model_id, device, budget / 2**20, settings.activation_cache_mb, len(states.kept), len(states.layers),
            states.stack_name or "(no decoder layer list)", states.nbytes / 2**20,
        )  # fmt: skip
        return states

    key = (*(file_key(f) for f in (files.checkpoint, files.eval, files.logits)), settings)
    return cache.held(device, model, key, build)


def clean_record(model: torch.nn.Module, tokens: torch.Tensor, settings: EvalSettings, device: str) -> dict[str, torch.Tensor]:
    """``next_token_record`` of the clean model on every window (on the CPU)."""
    parts = [next_token_record(next_token_logits(model, b, settings, device), b) for b in window_batches(tokens, settings, device)]
    return {name: torch.cat([p[name] for p in parts]).cpu() for name in RECORD_TENSORS}


def evaluate_lm_baseline(
    *,
    model_id: str,
    arch: Architecture,
    weights: str | Path,
    eval_data: str | Path,
    settings: EvalSettings,
    logits_out: str | Path,
    summary_out: str | Path,
    cache: EvaluationCache = DEFAULT_CACHE,
    devices: DevicePool | None = None,
) -> dict[str, Any]:
    """A language model's clean next-token accuracy (top-1/top-5, percent of positions) and
    perplexity on the token windows; writes its ``next_token_record`` to ``logits_out``."""
    started = time.perf_counter()
    tokens, windows = read_token_windows(eval_data)
    with (devices or shared_pool(settings.device)).lease() as device:
        use_cpu_threads(settings, device)
        model, _ = cache.model(arch, weights, device)
        check_vocabulary(model_id, model, tokens, eval_data)
        record = clean_record(model, tokens, settings, device)
    accuracy = next_token_accuracy(record)
    summary = {
        "model": model_id,
        "data_kind": "text",
        "top1": accuracy["top1"],
        "top5": accuracy["top5"],
        "perplexity": perplexity(record),
        "reported_top1": None,
        "top1_gap": None,
        "suspect_loading": bool(accuracy["n_nonfinite"]),
        "n_images": record["target_logprob"].numel(),  # predicted positions, the rows of every metric
        "n_windows": tokens.shape[0],
        "window_tokens": tokens.shape[1],
        "n_nonfinite": accuracy["n_nonfinite"],
        "nonfinite_outputs": bool(accuracy["n_nonfinite"]),
        "checkpoint_sha256": cache.sha256(weights),
        "eval_data_sha256": cache.sha256(eval_data),
        "eval_pipeline": None,
        "tokenizer": tokenizer_source(windows["tokenizer"]),
        **provenance(device=device_description(device), precision=settings.precision, batch_size=settings.batch_size, wall_s=time.perf_counter() - started),
    }
    log.info("baseline of %s: next-token top-1 %.2f, perplexity %.3f on %d positions (%.1f s)", model_id, summary["top1"], summary["perplexity"], summary["n_images"], summary["wall_s"])
    with atomic_path(logits_out) as tmp:
        save_file({name: t.contiguous() for name, t in record.items()}, tmp, metadata={"kind": "next_token_record"})
        summary["logits_sha256"] = file_sha256(tmp)
    write_json(summary_out, summary)
    return summary


def check_vocabulary(model_id: str, model: torch.nn.Module, tokens: torch.Tensor, eval_data: str | Path) -> None:
    """Every token id must be one of the model's embeddings (a tokenizer of another model)."""
    vocab = model.get_input_embeddings().num_embeddings
    if int(tokens.max()) >= vocab:
        raise ValueError(
            f"{model_id}: {eval_data} holds token id {int(tokens.max())}, but the model embeds {vocab} tokens: its "
            "repository's tokenizer does not belong to the model; rewrite its layer list from a repository whose tokenizer does"
        )


def evaluate_lm_reset(
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
    """One reset job of a language model: per batch of windows the clean and the reset model's
    next-token logits, compared position by position (``NextTokenAccumulator``); the clean ones
    checked against the baseline's record. Writes the JSON result to ``out`` and returns it."""
    started = time.perf_counter()
    source = job_source(mode, fresh_arch or arch, seed, seed_scheme, files, cache)
    baseline, verified = verified_inputs(files, cache)
    record = read_safetensors(files.logits, names=RECORD_TENSORS)[0]
    check_baseline_summary(baseline, files.baseline, next_token_accuracy(record), record["target_logprob"].numel())
    tokens, _ = read_token_windows(files.eval)
    change, forward_s, worst = NextTokenAccumulator(), 0.0, 0.0
    waiting = time.perf_counter()
    with (devices or shared_pool(settings.device)).lease() as device:
        lease_wait_s = time.perf_counter() - waiting
        use_cpu_threads(settings, device)
        model, _ = cache.model(arch, files.checkpoint, device)
        reuse = clean_hidden_states(model_id, model, files, tokens, record["target_logprob"], settings, device, cache) if settings.activation_cache_mb > 0 else None
        start = reuse.start_for(layer) if reuse is not None else None
        offset = 0
        for i, batch in enumerate(window_batches(tokens, settings, device)):
            t0 = time.perf_counter()
            with reuse.resumed(start, i) if start is not None else contextlib.nullcontext():
                clean = next_token_logits(model, batch, settings, device)
                with remove_block(model, layer) if mode == "remove" else reset_layer(model, layer, mode, source):
                    reset = next_token_logits(model, batch, settings, device)
            forward_s += time.perf_counter() - t0
            recorded = record["target_logprob"][offset : offset + len(batch)]
            worst = max(worst, float((next_token_record(clean, batch)["target_logprob"].cpu() - recorded).abs().max()))
            change.update(clean, reset, batch)
            offset += len(batch)
    if not worst <= CLEAN_TOLERANCE:
        raise StaleBaselineError(
            f"{model_id}: the clean outputs this job recomputed differ from its baseline's ({files.logits}) by up to "
            f"{worst:.3g} in log-probability (more than {CLEAN_TOLERANCE}): the baseline ran on another device or "
            f"precision. Recompute it: {recompute_command('logits', files.baseline, model_id)}"
        )
    n_tokens = tokens.numel()
    result = {
        "model": model_id,
        "layer": layer,
        "seed": seed,
        "mode": mode,
        **({"seed_scheme": seed_scheme} if mode == "randomize" else {}),
        **change.result(baseline["top1"]),
        "original_top1": baseline["top1"],
        **{f"{name}_sha256": sha for name, (_, sha) in verified.items()},
        "clean_max_logprob_diff": worst,
        **provenance(
            device=device_description(device),
            precision=settings.precision,
            batch_size=settings.batch_size,
            forward_s=forward_s,
            forward_from=reuse.boundary_name(start) if reuse is not None else "input",
            tokens_per_s=2 * n_tokens / forward_s if forward_s > 0 else math.nan,  # clean and reset passes
            lease_wait_s=lease_wait_s,
            wall_s=time.perf_counter() - started,
        ),
    }
    log.info(
        "%s %s seed %d (%s): criticality %.4f, perplexity %.3f (clean %.3f); %d tokens x 2 passes in %.2f s",
        model_id, layer, seed, mode, result["criticality"], result["perplexity"], result["clean_perplexity"], n_tokens, forward_s,
    )  # fmt: skip
    write_json(out, result)
    return result
