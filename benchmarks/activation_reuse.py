"""Benchmark: a reset job's forward pass in full vs from the clean model's recorded activations.

For each architecture whose forward ``layercrit.evaluation.graph.graph_segments`` splits (timm ResNet,
VisionTransformer, ConvNeXt), this times the reset evaluation of layers the way a reset job runs
it: ``CleanActivations.record`` once on the clean model (checked bit for bit against the
baseline logits), then for each layer, inside ``reset_layer(..., "randomize")``, one
``ForwardPass`` from the images and one from the recorded input of the layer's segment. The two
passes' logits must be identical (``torch.equal``); the record says whether they were.

Reported per architecture: mean forward seconds per reset job (full, reused), the saving, the
share of the forward pass's FLOPs a reused pass skips (counted, so not subject to the machine's
load: over the timed layers and over all layers), the recording pass's cost, and the memory the
activations take (every segment input kept). The
models are random initializations (timing only) on random uint8 images at the model's input size.
Small models are timed on every Conv2d/Linear layer; the 224×224 ones on an evenly spaced sample
of them (``--max-layers``), in module order so that the sample spans the depth. Usage:

    python -m benchmarks.activation_reuse --out docs/activation_reuse_cpu.json --runs 2
    python -m benchmarks.activation_reuse --only demo_resnet vit_tiny --images-small 200
    python -m benchmarks.activation_reuse --markdown docs/activation_reuse_cpu.json   # table only

Prints a table and writes a JSON record (provenance, machine, load averages, per-layer timings).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from benchmarks import harness
from layercrit.data import ImageSet
from layercrit.evaluation.forward import (
    CleanActivations,
    EvalSettings,
    ForwardPass,
    free_memory,
    predict_logits,
)
from layercrit.evaluation.graph import graph_segments
from layercrit.evaluation.reset import reset_layer
from layercrit.study import Architecture
from layercrit.models.zoo import build_architecture

IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


@dataclass(frozen=True)
class Case:
    timm: str
    kwargs: dict
    size: int  # input height = width
    small: bool  # every layer, --images-small images; else a sample of layers, --images-large images

    def architecture(self, name: str) -> Architecture:
        return Architecture(name, self.timm, self.kwargs, ())


TINY_VIT = {"img_size": 32, "patch_size": 4, "embed_dim": 48, "depth": 3, "num_heads": 2, "num_classes": 10}
TINY_CONVNEXT = {"depths": (1, 1, 2, 1), "dims": (16, 32, 48, 64), "num_classes": 10}
CASES = {
    "demo_resnet": Case("resnet50", {"layers": [1, 1, 1, 1], "channels": [16, 32, 64, 128], "num_classes": 10}, 32, True),
    "vit_tiny": Case("vit_tiny_patch16_224", TINY_VIT, 32, True),
    "convnext_atto_small": Case("convnext_atto", TINY_CONVNEXT, 32, True),
    "resnet50": Case("resnet50", {}, 224, False),
    "vit_small_patch16_224": Case("vit_small_patch16_224", {}, 224, False),
    "convnext_tiny": Case("convnext_tiny", {}, 224, False),
}


def layers_to_time(model: torch.nn.Module, max_layers: int | None) -> list[str]:
    """The model's Conv2d/Linear layers (the study's layer types), or an evenly spaced sample."""
    layers = [n for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    if max_layers is None or len(layers) <= max_layers:
        return layers
    return [layers[round(i * (len(layers) - 1) / max(max_layers - 1, 1))] for i in range(max_layers)]  # 1: the first


def segment_flops(segments, size: int) -> list[int]:
    """FLOPs of each segment on one image (``torch.utils.flop_counter``: matmuls and convolutions
    only): what a resumed pass skips, independent of the machine's load."""
    from torch.utils.flop_counter import FlopCounterMode

    x, flops = torch.randn(1, 3, size, size), []
    with torch.inference_mode():
        for segment in segments:
            with FlopCounterMode(display=False) as counter:
                x = segment.run(x)
            flops.append(counter.get_total_flops())
    return flops


def load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


@dataclass
class Timings:
    full_s: list[float] = field(default_factory=list)
    reused_s: list[float] = field(default_factory=list)


def time_layer(model, layer: str, fresh: dict, full: ForwardPass, reused: ForwardPass, repeats: int) -> tuple[Timings, bool, str]:
    """Forward seconds of the reset job of ``layer`` (full, reused); whether both gave the same logits."""
    t, equal = Timings(), True
    with reset_layer(model, layer, "randomize", fresh):
        for _ in range(repeats):
            a = full()
            t.full_s.append(full.seconds)
            b = reused()
            t.reused_s.append(reused.seconds)
            equal = equal and torch.equal(a, b)
    return t, equal, reused.starts_at


def measure(name: str, case: Case, args: argparse.Namespace) -> dict:
    """One architecture: record the activations, then time every chosen layer's reset job."""
    n = args.images_small if case.small else args.images_large
    settings = EvalSettings(device="cpu", batch_size=min(n, args.batch_size), activation_cache_mb=args.activation_cache_mb)
    g = torch.Generator().manual_seed(0)
    data = ImageSet(torch.randint(0, 256, (n, 3, case.size, case.size), dtype=torch.uint8, generator=g), torch.zeros(n, dtype=torch.long))
    arch = case.architecture(name)
    model = build_architecture(arch, seed=0)
    fresh = build_architecture(arch, seed=1).state_dict()
    segments = graph_segments(model)
    if segments is None:
        return {"architecture": name, "error": "graph_segments returned None"}
    predict_logits(model, data, IMAGENET, settings, "cpu")  # warm-up: first calls allocate and pick kernels
    load_before = load()
    started = time.perf_counter()
    clean = predict_logits(model, data, IMAGENET, settings, "cpu")
    baseline_s = time.perf_counter() - started
    activations = CleanActivations(segments, min(args.activation_cache_mb * 2**20, free_memory("cpu") // 2))
    started = time.perf_counter()
    activations.record(data, IMAGENET, settings, "cpu", clean)
    record_s = time.perf_counter() - started
    flops = segment_flops(segments, case.size)

    def recomputed(layer: str) -> float:  # the fraction of a full forward's FLOPs a reused pass runs
        start = activations.start_for(layer) or 0
        return sum(flops[start:]) / sum(flops)

    per_layer = {}
    for layer in layers_to_time(model, None if case.small else args.max_layers):
        full = ForwardPass(model, data, IMAGENET, settings, "cpu")
        reused = ForwardPass(model, data, IMAGENET, settings, "cpu", activations, activations.start_for(layer))
        t, equal, starts_at = time_layer(model, layer, fresh, full, reused, args.repeats_small if case.small else args.repeats_large)
        per_layer[layer] = {"full_s": statistics.median(t.full_s), "reused_s": statistics.median(t.reused_s),
                            "starts_at": starts_at, "bitwise_equal": equal, "flops_recomputed": recomputed(layer)}  # fmt: skip
    mean_full = statistics.mean(v["full_s"] for v in per_layer.values())
    mean_reused = statistics.mean(v["reused_s"] for v in per_layer.values())
    return {
        "architecture": name, "timm": case.timm, "kwargs": case.kwargs, "input": case.size,
        "images": n, "batch_size": settings.batch_size, "segments": len(segments), "exact": activations.exact,
        "layers_timed": len(per_layer), "layers_total": len(layers_to_time(model, None)),
        "baseline_forward_s": baseline_s, "record_s": record_s, "activation_bytes": activations.nbytes,
        "mean_full_s": mean_full, "mean_reused_s": mean_reused, "saving_pct": 100 * (1 - mean_reused / mean_full),
        "flops_per_image": sum(flops),
        "flop_saving_pct": 100 * (1 - statistics.mean(v["flops_recomputed"] for v in per_layer.values())),
        "flop_saving_all_layers_pct": 100 * (1 - statistics.mean(recomputed(n) for n in layers_to_time(model, None))),
        "all_bitwise_equal": all(v["bitwise_equal"] for v in per_layer.values()),
        "load_before": load_before, "load_after": load(), "per_layer": per_layer,
    }  # fmt: skip


def markdown(record: dict) -> str:
    """The record's table, for docs/benchmarks.md (so that no number there is typed by hand)."""
    header = ("| run | architecture | input | images | layers timed | full s/job | reused s/job | saving | "
              "FLOPs saved (timed layers; all layers) | recording (× baseline forward) | activations | bitwise | load (1 min) |")
    rows = [header, "|---" * header.count(" | ") + "|---|"]
    for k, run in enumerate(record["runs"], 1):
        for r in run["architectures"]:
            if "error" in r:
                rows.append(f"| {k} | {r['architecture']} | – | – | – | – | – | {r['error']} | – | – | – | – | – |")
                continue
            mb = r["activation_bytes"] / 2**20
            rows.append(
                f"| {k} | {r['architecture']} | {r['input']}² | {r['images']} | {r['layers_timed']}/{r['layers_total']} "
                f"| {r['mean_full_s']:.3g} | {r['mean_reused_s']:.3g} | {r['saving_pct']:.0f} % "
                f"| {r['flop_saving_pct']:.0f} %; {r['flop_saving_all_layers_pct']:.0f} % "
                f"| {r['record_s']:.3g} s ({r['record_s'] / r['baseline_forward_s']:.2f}×) "
                f"| {mb:.1f} MiB ({1024 * mb / r['images']:.0f} KiB/image) | {'yes' if r['all_bitwise_equal'] and r['exact'] else 'NO'} "
                f"| {r['load_before'][0]}–{r['load_after'][0]} |"
            )
    return "\n".join(rows)


def start(parser: argparse.ArgumentParser, benchmark: str, table: Callable[[dict], str]) -> tuple[argparse.Namespace, dict] | None:
    """The command line of a CPU reuse benchmark (benchmarks.harness, plus --threads: torch's
    threads, set here); the record says the device and precision."""
    started = harness.start(parser, benchmark, table)
    if started is None:
        return None
    args, record = started
    torch.set_num_threads(args.threads)
    record.update(device="cpu", precision="fp32")
    return args, record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--images-small", type=int, default=1000, help="images for the 32×32 models (the demo's evaluation set)")
    parser.add_argument("--images-large", type=int, default=32, help="images for the 224×224 models")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--max-layers", type=int, default=6, help="layers timed per 224×224 model (evenly spaced)")
    parser.add_argument("--repeats-small", type=int, default=3, help="timings per layer and pass, 32×32 models (median)")
    parser.add_argument("--repeats-large", type=int, default=1, help="timings per layer and pass, 224×224 models (median)")
    parser.add_argument("--runs", type=int, default=1, help="measure everything this many times (a shared machine is noisy)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (the workflow's CPU jobs use every core)")
    parser.add_argument("--activation-cache-mb", type=int, default=8192)
    started = start(parser, "activation_reuse", markdown)
    if started is None:
        return
    args, record = started
    record["runs"] = []
    for k in range(args.runs):
        run = {"load_before": load(), "architectures": []}
        for name in args.only:
            result = measure(name, CASES[name], args)
            run["architectures"].append(result)
            print(f"run {k + 1} {name}: " + json.dumps({key: v for key, v in result.items() if key != "per_layer"}), flush=True)
        run["load_after"] = load()
        record["runs"].append(run)
    loaded = [v for run in record["runs"] for r in run["architectures"] for v in r.get("load_before", [])[:1] + r.get("load_after", [])[:1]]
    record["note"] = (
        f"timed with other work running on the machine (1-minute load average up to {max(loaded)} on {os.cpu_count()} cores)"
        if loaded and max(loaded) > 1 else "machine otherwise idle (1-minute load average ≤ 1)"
    )  # fmt: skip
    harness.finish(args, record, markdown)
    print(record["note"])


if __name__ == "__main__":
    main()
