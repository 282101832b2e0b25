"""Benchmark: one reset evaluation, authors'-style vs this project's, same model, images, machine.

(a) authors'-style: every evaluation decodes the JPEG files again through a torchvision
    ``ImageFolder`` + ``DataLoader`` (Resize 256, CenterCrop 224, ToTensor, Normalize), float32,
    batch 500, and runs the reset model;
(b) this project: ``layercrit.evaluation.evaluate_reset`` on the images decoded once into a uint8
    tensor (``layercrit.imagenet.prepare_validation_set``), with data and model kept loaded; full
    forward passes, and with the clean model's activations reused (``--activation-cache-mb``;
    ``--sweep`` times every layer once, since the saving depends on the layer's depth).

Both compare against clean outputs computed beforehand. The JPEGs are generated at ImageNet's
typical size (500×375). Usage:

    python -m benchmarks.reset_eval --images 200 --repeats 3            # CPU, reduced image count
    python -m benchmarks.reset_eval --images 10000 --device cuda --precision fp32 tf32 bf16 --sweep

Prints a JSON record (machine, versions, timings, ratio) and writes it to --out.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision import datasets, transforms

from benchmarks import harness
from layercrit.evaluation import EvaluationCache, ResetInputs, evaluate_baseline, evaluate_reset
from layercrit.evaluation.forward import EvalSettings
from layercrit.imagenet import prepare_validation_set
from layercrit.evaluation.reset import reset_layer
from layercrit.study import Architecture
from layercrit.models.zoo import build_architecture, save_checkpoint

IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
RESNET50 = Architecture("resnet50", "resnet50", {}, ())


def make_jpegs(root: Path, n: int, classes: int = 10) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / f"n{i % classes:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        # Smooth random images compress like photos (pure noise would be unrealistically large).
        small = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
        Image.fromarray(small).resize((500, 375), Image.BICUBIC).save(folder / f"img_{i:06d}.JPEG", quality=90)


def authors_style_evaluation(model, root: Path, clean_probs: torch.Tensor, device: str, workers: int, batch: int = 500) -> float:
    """Decode + forward, as a per-evaluation DataLoader pipeline does; returns the mean cosine."""
    tf = transforms.Compose(
        [transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(), transforms.Normalize(**IMAGENET)]
    )
    loader = torch.utils.data.DataLoader(
        # The authors shuffle with a seeded generator; order does not change the cost, and folder
        # order lines the images up with the clean outputs computed in that order.
        datasets.ImageFolder(root, tf), batch_size=batch, shuffle=False, num_workers=workers,
    )  # fmt: skip
    cosines = []
    with torch.no_grad():
        for start, (x, _) in zip(range(0, len(loader.dataset), batch), loader):
            q = model(x.to(device)).float().softmax(1)
            cosines.append(torch.nn.functional.cosine_similarity(clean_probs[start : start + len(q)], q, dim=1))
    return float(torch.cat(cosines).mean())


def reset_once(tmp: Path, settings: EvalSettings, cache: EvaluationCache, layer: str, seed: int) -> tuple[float, dict]:
    t = time.perf_counter()
    res = evaluate_reset(
        model_id="m", arch=RESNET50,
        files=ResetInputs(checkpoint=tmp / "m.safetensors", eval=tmp / "eval.safetensors", logits=tmp / "b.safetensors", baseline=tmp / "b.json"),
        layer=layer, seed=seed, mode="randomize", settings=settings, out=tmp / "reuse.json", cache=cache,
    )  # fmt: skip
    return time.perf_counter() - t, res


def reuse_timings(args: argparse.Namespace, tmp: Path, full: EvalSettings, full_cache: EvaluationCache) -> dict:
    """(b) with the clean activations reused: the benchmark's layer, and optionally every layer."""
    from dataclasses import replace

    settings = replace(full, activation_cache_mb=args.activation_cache_mb)
    cache = EvaluationCache()
    t = time.perf_counter()
    reset_once(tmp, settings, cache, args.layer, 0)  # loads data and model, records the activations
    out: dict = {"first_call_s": time.perf_counter() - t}
    times = []
    for seed in range(1, args.repeats + 1):
        seconds, res = reset_once(tmp, settings, cache, args.layer, seed)
        times.append(seconds)
    out |= {"per_eval_s": statistics.median(times), "forward_from": res["forward_from"],
            "activation_bytes": cache.held_activations(res["device"].split()[0]).nbytes}  # fmt: skip
    if args.sweep:
        per_layer = {}
        for layer in [n for n, m in build_architecture(RESNET50, seed=0).named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]:
            per_layer[layer], res = reset_once(tmp, settings, cache, layer, 0)
            per_layer_full, _ = reset_once(tmp, full, full_cache, layer, 0)
            per_layer[layer] = {"reuse_s": per_layer[layer], "full_s": per_layer_full, "forward_from": res["forward_from"]}
        out["sweep"] = {
            "layers": len(per_layer),
            "mean_reuse_s": statistics.mean(v["reuse_s"] for v in per_layer.values()),
            "mean_full_s": statistics.mean(v["full_s"] for v in per_layer.values()),
            "per_layer": per_layer,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", nargs="+", default=["fp32"])
    parser.add_argument("--layer", default="layer3.2.conv2")
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--activation-cache-mb", type=int, default=4096,
                        help="(b) also with the clean model's activations reused (0: full forward only)")
    parser.add_argument("--sweep", action="store_true",
                        help="(b) also once per layer of ResNet-50 (seed 0), for the mean cost of a reset job over layers")
    args, record = harness.start(parser, "reset_eval")
    record["machine"].update(torch_threads=torch.get_num_threads(),
                             gpu=torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None)  # fmt: skip
    record.update(images=args.images, layer=args.layer, repeats=args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        make_jpegs(tmp / "val", args.images)
        record["generate_jpegs_s"] = time.perf_counter() - t

        model = build_architecture(RESNET50, seed=1)
        save_checkpoint(tmp / "m.safetensors", model.state_dict(), IMAGENET)
        prep = prepare_validation_set(tmp / "val", tmp / "eval.safetensors", n_subset=None, workers=args.workers, progress=False, expected_classes=None)
        record["prepare_once_s"] = prep["seconds"]

        for precision in args.precision:
            settings = EvalSettings(device=args.device, precision=precision, batch_size=500)
            cache = EvaluationCache()
            evaluate_baseline(model_id="m", arch=RESNET50, weights=tmp / "m.safetensors", eval_data=tmp / "eval.safetensors",
                              settings=settings, logits_out=tmp / "b.safetensors", summary_out=tmp / "b.json", cache=cache)  # fmt: skip
            ours, crits = [], []
            for r in range(args.repeats + 1):
                t = time.perf_counter()
                res = evaluate_reset(
                    model_id="m", arch=RESNET50,
                    files=ResetInputs(checkpoint=tmp / "m.safetensors", eval=tmp / "eval.safetensors", logits=tmp / "b.safetensors", baseline=tmp / "b.json"),
                    layer=args.layer, seed=r, mode="randomize", settings=settings, out=tmp / f"r{r}.json", cache=cache,
                )  # fmt: skip
                if r:  # the first call loads data and model into the cache
                    ours.append(time.perf_counter() - t)
                crits.append(res["criticality"])
            record[f"ours_{precision}"] = {"per_eval_s": statistics.median(ours), "images_per_s": args.images / statistics.median(ours),
                                           "criticality_seeds": crits}  # fmt: skip
            if args.activation_cache_mb > 0:
                record[f"ours_{precision}_reuse"] = reuse_timings(args, tmp, settings, cache)

        # authors'-style, fp32 (their default); clean outputs once, then per evaluation decode + forward.
        device = args.device
        m = model.to(device).eval()
        clean_probs = None
        with torch.no_grad():
            from safetensors.torch import load_file

            clean_probs = load_file(str(tmp / "b.safetensors"))["logits"].to(device).softmax(1)
        times = []
        fresh = build_architecture(RESNET50, seed=1).state_dict()
        for r in range(args.repeats):
            t = time.perf_counter()
            with reset_layer(m, args.layer, "randomize", fresh):
                authors_style_evaluation(m, tmp / "val", clean_probs, device, args.workers)
            times.append(time.perf_counter() - t)
        record["authors_style_fp32"] = {"per_eval_s": statistics.median(times), "images_per_s": args.images / statistics.median(times)}
        record["speedup_fp32"] = record["authors_style_fp32"]["per_eval_s"] / record["ours_fp32"]["per_eval_s"] if "ours_fp32" in record else None
    harness.finish(args, record)


if __name__ == "__main__":
    main()
