"""Benchmark: a language model's reset job in full vs from the clean hidden states (activation reuse).

A Llama-style causal LM (random weights: timing only; by default 8 decoder layers, d_model 128,
vocabulary 2,048) on random token windows (64 x 128 tokens), evaluated the way a reset job runs:
``layercrit.evaluation.language.evaluate_lm_reset`` (clean and reset pass per batch, metrics,
the clean check against the baseline), once with ``activation_cache_mb`` 0 (every pass in full)
and once with a budget that keeps every decoder layer's input (both passes start at the reset
layer's decoder layer). Layers: one in the first, the middle and the last decoder layer, and the
final norm (the first is the control: its passes start at the input either way). After a warm-up
(model loaded, fresh weights built) the recording pass (one clean full pass, once per model) is
timed on its own; then each job runs ``--repeats`` times, full and reused interleaved. Reported
are medians of the CPU seconds of the job's thread (with one torch thread every operation runs in
it; less affected than wall time by the other processes of a shared machine, not unaffected), of ``wall_s`` and
``forward_s`` of the jobs' results, and whether the two results' metrics are equal. What a job
spends outside its forward passes (wall - forward) is mostly the metrics over the vocabulary
(softmax, KL, cross-entropy per position, in float64), which reuse does not shorten. Usage:

    python -m benchmarks.lm_reuse --out docs/lm_reuse_cpu.json
    python -m benchmarks.lm_reuse --markdown docs/lm_reuse_cpu.json   # the table only
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from benchmarks import harness
from layercrit.evaluation import EvaluationCache, ResetInputs
from layercrit.evaluation.forward import EvalSettings
from layercrit.evaluation.language import evaluate_lm_baseline, evaluate_lm_reset
from layercrit.io import provenance
from layercrit.models.zoo import build_architecture, save_checkpoint
from layercrit.study import Architecture

TIMING_KEYS = {"forward_s", "wall_s", "tokens_per_s", "lease_wait_s", "forward_from"}


def llama(layers: int, d_model: int, vocab: int, window: int) -> Architecture:
    from transformers import LlamaConfig

    config = LlamaConfig(
        vocab_size=vocab, hidden_size=d_model, num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=4 * d_model, max_position_embeddings=window, architectures=["LlamaForCausalLM"],
    )  # fmt: skip
    return Architecture(id="llama", name="bench/llama", library="transformers", extra={"task": "causal-lm", "config": config.to_dict()})


def prepare(folder: Path, arch: Architecture, windows: int, window: int, vocab: int, settings: EvalSettings) -> ResetInputs:
    """Checkpoint, token file and baseline of the benchmark's model, in ``folder``."""
    save_checkpoint(folder / "model.safetensors", build_architecture(arch, seed=1).state_dict(), None)
    tokens = torch.randint(0, vocab, (windows, window), generator=torch.Generator().manual_seed(0))
    record = {"kind": "text", "tokenizer": {"repo": "bench/random-tokens"}, "windows": windows, "window_tokens": window}
    save_file({"tokens": tokens}, str(folder / "tokens.safetensors"), metadata={"text_windows": json.dumps(record)})
    evaluate_lm_baseline(
        model_id="llama", arch=arch, weights=folder / "model.safetensors", eval_data=folder / "tokens.safetensors", settings=settings,
        logits_out=folder / "record.safetensors", summary_out=folder / "baseline.json", cache=EvaluationCache(),
    )  # fmt: skip
    return ResetInputs(folder / "model.safetensors", folder / "tokens.safetensors", folder / "record.safetensors", folder / "baseline.json")


def timed_job(arch: Architecture, files: ResetInputs, layer: str, settings: EvalSettings, cache: EvaluationCache, out: Path) -> dict:
    """One reset job's result, with the CPU seconds its thread used (``cpu_s``: with one torch
    thread every operation runs in it)."""
    started = time.thread_time()
    result = evaluate_lm_reset(model_id="llama", arch=arch, files=files, layer=layer, seed=0, mode="randomize", settings=settings, cache=cache, out=out)
    return result | {"cpu_s": time.thread_time() - started}


def measure(args: argparse.Namespace) -> dict:
    from layercrit.evaluation.language import clean_hidden_states
    from layercrit.io import read_safetensors
    from layercrit.text_windows import read_token_windows

    arch = llama(args.layers, args.d_model, args.vocab, args.window)
    settings = {
        "full": EvalSettings(device="cpu", batch_size=args.batch_size, activation_cache_mb=0, cpu_threads=args.threads),
        "reused": EvalSettings(device="cpu", batch_size=args.batch_size, activation_cache_mb=args.activation_cache_mb, cpu_threads=args.threads),
    }
    layers = {
        "first": "model.layers.0.mlp.down_proj",
        "middle": f"model.layers.{args.layers // 2}.mlp.down_proj",
        "last": f"model.layers.{args.layers - 1}.mlp.down_proj",
        "final norm": "model.norm",
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = prepare(folder, arch, args.windows, args.window, args.vocab, settings["full"])
        caches = {name: EvaluationCache() for name in settings}
        for name in settings:  # warm: model loaded, fresh weights built
            timed_job(arch, files, layers["first"], settings[name], caches[name], folder / "warm.json")
        # the recording pass (one clean full pass, once per model), timed on its own
        model, _ = caches["reused"].model(arch, files.checkpoint, "cpu")
        tokens, _ = read_token_windows(files.eval)
        logprob = read_safetensors(files.logits, names=("target_logprob",))[0]["target_logprob"]
        caches["reused"].device("cpu").activations = None
        started = time.perf_counter()
        states = clean_hidden_states("llama", model, files, tokens, logprob, settings["reused"], "cpu", caches["reused"])
        record_s = time.perf_counter() - started
        timed: dict[tuple[str, str], list[dict]] = {}
        for _ in range(args.repeats):  # interleaved, so that the machine's load falls on both alike
            for where, layer in layers.items():
                for name in settings:
                    timed.setdefault((where, name), []).append(timed_job(arch, files, layer, settings[name], caches[name], folder / f"{name}.json"))
        varying = TIMING_KEYS | {"cpu_s"} | set(provenance())
        rows = []
        for where, layer in layers.items():
            full, reused = timed[(where, "full")], timed[(where, "reused")]
            same = all({k: v for k, v in a.items() if k not in varying} == {k: v for k, v in b.items() if k not in varying} for a, b in zip(full, reused))
            row = {"where": where, "layer": layer, "forward_from": reused[0]["forward_from"], "same_results": same}
            for name, results in (("full", full), ("reused", reused)):
                for key in ("wall_s", "forward_s", "cpu_s"):
                    row[f"{name}_{key}"] = statistics.median(r[key] for r in results)
            row["saving_pct"] = 100 * (1 - row["reused_cpu_s"] / row["full_cpu_s"])
            row["forward_saving_pct"] = 100 * (1 - row["reused_forward_s"] / row["full_forward_s"])
            rows.append(row)
    n_tokens = args.windows * args.window
    return {
        "model": f"Llama, {args.layers} decoder layers, d_model {args.d_model}, vocabulary {args.vocab}",
        "tokens": n_tokens,
        "record_s": record_s,
        "hidden_state_bytes": states.nbytes,
        "rows": rows,
        "load_after": os.getloadavg(),
    }


def markdown(record: dict) -> str:
    """The record's table, for docs/benchmarks.md (so that no number there is typed by hand)."""
    r = record["result"]
    s = record["settings"]
    lines = [
        f"{r['model']}; {s['windows']} windows x {s['window']} tokens ({r['tokens']:,} tokens), batch {s['batch_size']}, "
        f"{s['threads']} torch thread(s); median of {s['repeats']} jobs each, full and reused interleaved; load average "
        f"{record['load_before'][0]:.1f} before, {r['load_after'][0]:.1f} after. Hidden states kept: "
        f"{r['hidden_state_bytes'] / 2**20:.0f} MiB (d_model x 4 bytes x {s['layers']} layers per token); recording them "
        f"(once per model and device): {r['record_s']:.2f} s.",
        "",
        "| reset layer | reused passes start at | full: CPU s/job (wall; forward) | reused: CPU s/job (wall; forward) "
        "| saving (CPU s/job) | saving (forward) | same results |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        lines.append(
            f"| {row['where']}: `{row['layer']}` | `{row['forward_from']}` "
            f"| {row['full_cpu_s']:.2f} ({row['full_wall_s']:.2f}; {row['full_forward_s']:.2f}) "
            f"| {row['reused_cpu_s']:.2f} ({row['reused_wall_s']:.2f}; {row['reused_forward_s']:.2f}) "
            f"| {row['saving_pct']:.0f} % | {row['forward_saving_pct']:.0f} % | {'yes' if row['same_results'] else 'NO'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=2048)
    parser.add_argument("--windows", type=int, default=64)
    parser.add_argument("--window", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--activation-cache-mb", type=int, default=1024)
    started = harness.start(parser, "lm_reuse", markdown, argv=argv)
    if started is None:
        return
    args, record = started
    torch.set_num_threads(args.threads)
    record.update(device="cpu", precision="fp32", load_before=os.getloadavg())
    record["result"] = measure(args)
    harness.finish(args, record, markdown)


if __name__ == "__main__":
    main()
