"""Benchmark: activation reuse from the traced graph's segments (``layercrit.evaluation.graph``), per family.

For each model, the way a reset job runs it: ``graph_segments`` (the model's torch.fx graph cut
between blocks), ``CleanActivations.record`` once on the clean model (checked bit for bit against
the baseline logits, every segment input kept), then for each timed layer, inside
``reset_layer(..., "randomize")``, one ``ForwardPass`` from the images and one from the recorded
input nearest before the layer (``--repeats`` times, interleaved; the median); their logits must
be identical (``torch.equal``).

Families: EfficientNet, MobileNetV3, RegNet and Swin from timm and from torchvision (no reuse at
all before: a full forward pass per reset job), and ResNet-50, ViT-S/16, ConvNeXt-T, whose
per-family splitters the graph's cuts replace: for these the splitters of ``--chains-rev`` (read
from git) are timed on the same layers in the same loop, to show that the graph's segments start
where the chains did or later, give the same logits, and are no slower.

Reported per model: its segments, mean forward seconds per reset job (full; reused), the saving,
the share of matmul/convolution FLOPs a reused pass skips (``torch.utils.flop_counter`` per
segment: over the timed layers and over all Conv2d/Linear layers; machine-independent), the
memory the kept inputs take, the time to trace and split, and whether every pass was bitwise
equal. Random initializations (timing only) on random uint8 images at 224×224, float32. Usage:

    python -m benchmarks.graph_reuse --out docs/graph_reuse_cpu.json
    python -m benchmarks.graph_reuse --only efficientnet_b0 tv_swin_t --images 8 --max-layers 3 --repeats 1
    python -m benchmarks.graph_reuse --markdown docs/graph_reuse_cpu.json   # table only
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch

from layercrit.data import ImageSet
from layercrit.evaluation.forward import CleanActivations, EvalSettings, ForwardPass, free_memory, predict_logits
from layercrit.evaluation.graph import graph_segments
from layercrit.evaluation.reset import reset_layer
from layercrit.study import Architecture
from layercrit.models.zoo import build_architecture

from benchmarks import harness
from benchmarks.activation_reuse import IMAGENET, layers_to_time, load, segment_flops, start

REPO = Path(__file__).resolve().parent.parent


class Case(NamedTuple):
    family: str
    library: str
    model: str
    chains: bool = False  # a family the per-family splitters covered: time them too

    def architecture(self, name: str) -> Architecture:
        return Architecture(name, self.model, {}, (), library=self.library)


CASES = {
    "efficientnet_b0": Case("EfficientNet", "timm", "efficientnet_b0"),
    "mobilenetv3_large_100": Case("MobileNetV3", "timm", "mobilenetv3_large_100"),
    "regnety_008": Case("RegNet", "timm", "regnety_008"),
    "swin_tiny": Case("Swin", "timm", "swin_tiny_patch4_window7_224"),
    "tv_efficientnet_b0": Case("EfficientNet", "torchvision", "efficientnet_b0"),
    "tv_mobilenet_v3_large": Case("MobileNetV3", "torchvision", "mobilenet_v3_large"),
    "tv_regnet_y_800mf": Case("RegNet", "torchvision", "regnet_y_800mf"),
    "tv_swin_t": Case("Swin", "torchvision", "swin_t"),
    "resnet50": Case("ResNet", "timm", "resnet50", chains=True),
    "vit_small": Case("ViT", "timm", "vit_small_patch16_224", chains=True),
    "convnext_tiny": Case("ConvNeXt", "timm", "convnext_tiny", chains=True),
}


def per_family_chains(rev: str) -> Callable:
    """``chain_segments`` of ``src/layercrit/forward.py`` at git revision ``rev`` (the per-family
    splitters before the graph's cuts replaced them), loaded as a module of its own."""
    source = subprocess.run(
        ["git", "show", f"{rev}:src/layercrit/forward.py"], cwd=REPO, check=True, capture_output=True, text=True
    )
    module = types.ModuleType(f"forward_at_{rev}")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source.stdout, f"{rev}:src/layercrit/forward.py", "exec"), module.__dict__)
    return module.chain_segments


def summary(activations: CleanActivations, flops: list[int], per_layer: dict, key: str, all_layers: list[str]) -> dict:
    """Mean seconds, savings and memory of one segmentation over the timed layers."""

    def recomputed(layer: str) -> float:  # the share of a full forward's FLOPs a reused pass runs
        return sum(flops[activations.start_for(layer) or 0 :]) / sum(flops)

    full = statistics.mean(v["full_s"] for v in per_layer.values())
    reused = statistics.mean(v[f"{key}_s"] for v in per_layer.values())
    return {
        "segments": len(activations.segments), "exact": activations.exact, "mean_reused_s": reused,
        "saving_pct": 100 * (1 - reused / full), "activation_bytes": activations.nbytes,
        "flop_saving_pct": 100 * (1 - statistics.mean(recomputed(n) for n in per_layer)),
        "flop_saving_all_layers_pct": 100 * (1 - statistics.mean(recomputed(n) for n in all_layers)),
        "all_bitwise_equal": activations.exact and all(v[f"{key}_equal"] for v in per_layer.values()),
    }  # fmt: skip


def recorded(
    segments, data: ImageSet, settings: EvalSettings, clean: torch.Tensor, budget: int
) -> tuple[CleanActivations, float]:
    activations = CleanActivations(segments, budget)
    started = time.perf_counter()
    activations.record(data, IMAGENET, settings, "cpu", clean)
    return activations, time.perf_counter() - started


def measure(name: str, case: Case, args: argparse.Namespace, chains: Callable | None) -> dict:
    """One model: record the activations, then time the chosen layers' reset jobs."""
    n, size = args.images, 224
    settings = EvalSettings(device="cpu", batch_size=min(n, args.batch_size), activation_cache_mb=args.activation_cache_mb)
    g = torch.Generator().manual_seed(0)
    data = ImageSet(torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g), torch.zeros(n, dtype=torch.long))
    arch = case.architecture(name)
    model = build_architecture(arch, seed=0)
    fresh = build_architecture(arch, seed=1).state_dict()
    started = time.perf_counter()
    segments = graph_segments(model)
    split_s = time.perf_counter() - started
    if segments is None:
        return {"architecture": name, "family": case.family, "library": case.library, "error": "no segments (see the log)"}
    predict_logits(model, data, IMAGENET, settings, "cpu")  # warm-up: first calls allocate and pick kernels
    load_before = load()
    started = time.perf_counter()
    clean = predict_logits(model, data, IMAGENET, settings, "cpu")
    baseline_s = time.perf_counter() - started
    budget = min(args.activation_cache_mb * 2**20, free_memory("cpu") // 2)
    graph, record_s = recorded(segments, data, settings, clean, budget)
    old = recorded(chains(model), data, settings, clean, budget)[0] if chains and case.chains else None
    all_layers = layers_to_time(model, None)
    per_layer = {}
    for layer in layers_to_time(model, args.max_layers):
        passes = {"full": ForwardPass(model, data, IMAGENET, settings, "cpu"),
                  "graph": ForwardPass(model, data, IMAGENET, settings, "cpu", graph, graph.start_for(layer))}  # fmt: skip
        if old is not None:
            passes["chain"] = ForwardPass(model, data, IMAGENET, settings, "cpu", old, old.start_for(layer))
        seconds: dict[str, list[float]] = {key: [] for key in passes}
        equal = {key: True for key in passes if key != "full"}
        with reset_layer(model, layer, "randomize", fresh):
            for _ in range(args.repeats):  # interleaved, so that the machine's load affects each alike
                logits = {key: forward() for key, forward in passes.items()}
                for key, forward in passes.items():
                    seconds[key].append(forward.seconds)
                equal = {key: same and torch.equal(logits[key], logits["full"]) for key, same in equal.items()}
        per_layer[layer] = {f"{key}_s": statistics.median(s) for key, s in seconds.items()}
        per_layer[layer] |= {f"{key}_equal": same for key, same in equal.items()}
        per_layer[layer] |= {f"{key}_starts_at": forward.starts_at for key, forward in passes.items() if key != "full"}
    result = {
        "architecture": name, "family": case.family, "library": case.library, "model": case.model, "input": size,
        "images": n, "batch_size": settings.batch_size, "layers_timed": len(per_layer), "layers_total": len(all_layers),
        "split_s": split_s, "baseline_forward_s": baseline_s, "record_s": record_s,
        "mean_full_s": statistics.mean(v["full_s"] for v in per_layer.values()),
        **summary(graph, segment_flops(graph.segments, size), per_layer, "graph", all_layers),
    }  # fmt: skip
    if old is not None:
        result["chain"] = summary(old, segment_flops(old.segments, size), per_layer, "chain", all_layers)
    return result | {"load_before": load_before, "load_after": load(), "per_layer": per_layer}


def markdown(record: dict) -> str:
    """The record's table, for docs/benchmarks.md (so that no number there is typed by hand)."""
    header = (
        "| run | model | library | segments | full s/job | reused s/job | saving | "
        "FLOPs saved (timed layers; all layers) | activations per image | trace + split | bitwise | load (1 min) |"
    )
    rows = [header, "|---" * header.count(" | ") + "|---|"]
    for k, run in enumerate(record["runs"], 1):
        for r in run["architectures"]:
            if "error" in r:
                cells = [k, r["architecture"], r["library"], "–", "–", "–", r["error"], "–", "–", "–", "–", "–"]
                rows.append("| " + " | ".join(map(str, cells)) + " |")
                continue
            graph = (r["architecture"], r, f"{r['split_s']:.2f} s")
            for label, s, split in [graph, (f"{r['architecture']}, per-family chain", r.get("chain"), "–")]:
                if s is None:
                    continue
                flops = f"{s['flop_saving_pct']:.0f} %; {s['flop_saving_all_layers_pct']:.0f} %"
                cells = [k, label, r["library"], s["segments"], f"{r['mean_full_s']:.3g}", f"{s['mean_reused_s']:.3g}",
                         f"{s['saving_pct']:.0f} %", flops, f"{s['activation_bytes'] / 1024 / r['images']:.0f} KiB", split,
                         "yes" if s["all_bitwise_equal"] else "NO", f"{r['load_before'][0]}–{r['load_after'][0]}"]  # fmt: skip
                rows.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--max-layers", type=int, default=6, help="Conv2d/Linear layers timed per model (evenly spaced)")
    parser.add_argument("--repeats", type=int, default=3, help="timings per layer and pass (median)")
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count(), help="torch threads (the workflow's CPU jobs use every core)"
    )
    parser.add_argument("--activation-cache-mb", type=int, default=8192)
    parser.add_argument("--chains-rev", default="327dfd8", help="git revision whose per-family splitters to time alongside")
    started = start(parser, "graph_reuse", markdown)
    if started is None:
        return
    args, record = started
    chains = per_family_chains(args.chains_rev) if args.chains_rev else None
    run = {"load_before": load(), "architectures": []}
    for name in args.only:
        run["architectures"].append(result := measure(name, CASES[name], args, chains))
        print(f"{name}: " + json.dumps({key: v for key, v in result.items() if key != "per_layer"}), flush=True)
    record["runs"] = [run | {"load_after": load()}]
    harness.finish(args, record, markdown)


if __name__ == "__main__":
    main()
