"""Benchmark: reset jobs side by side on emulated GPUs, as threads of one process.

What one process does when Snakemake runs N evaluations at once (``--resources gpu=N``): here N
CPU devices (``LAYERCRIT_EMULATED_GPUS``, layercrit.evaluation.devices) and N worker threads taking the
study's reset jobs in the study's order (model by model, seed by seed), each through
``evaluate_reset`` with the process's one ``EvaluationCache``. Counted per job: reads of the
image file, model builds (checkpoint loads), fresh-model builds, by wrapping the functions the
cache calls (so the same script measures an older version of the package too). Every result is
compared with the serial one (one thread, a fresh cache, the full forward pass): "bitwise" says
whether all metrics are equal.

    LAYERCRIT_EMULATED_GPUS=4 python -m benchmarks.side_by_side --out side_by_side.json
    python -m benchmarks.side_by_side --images 2000    # on the GPUs of this machine (the GPU check)

The serial reference runs on the first device, so on GPUs too "bitwise" compares like with like.
The activation budget each device gave each model is reported (``budgets``, from the log): from
the second model on a GPU it must not shrink by what PyTorch keeps reserved. Models: perturbed random initializations of the demo ResNet (``--models``), random uint8 images.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import threading
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import torch

import layercrit.evaluation.cache as evaluation_cache
from benchmarks import harness
from layercrit.data import ImageSet, save_image_set
from layercrit.evaluation import EvaluationCache, ResetInputs, evaluate_baseline, evaluate_reset
from layercrit.evaluation.forward import EvalSettings
from layercrit.study import Architecture
from layercrit.models.zoo import build_architecture, save_checkpoint

DEMO_RESNET = Architecture("demo_resnet", "resnet50", {"layers": [1, 1, 1, 1], "channels": [16, 32, 64, 128], "num_classes": 10}, ())
LAYERS = ("conv1", "layer1.0.conv2", "layer2.0.conv1", "layer3.0.conv3", "fc")
NORM = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
METRICS = ("cosine", "criticality", "top1", "top5", "kl", "n_nonfinite")


class Counted:
    """Wraps a module-level function of layercrit.evaluation.cache and counts its calls."""

    def __init__(self, name: str):
        self.name, self.calls, self.lock = name, 0, threading.Lock()
        self.wrapped = getattr(evaluation_cache, name)
        setattr(evaluation_cache, name, self)

    def __call__(self, *args, **kwargs):
        with self.lock:
            self.calls += 1
        return self.wrapped(*args, **kwargs)


class BudgetLines(logging.Handler):
    """The activation budget lines the evaluation logs, one per model and device."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "activation budget" in record.getMessage():
            self.lines.append(record.getMessage())


def make_study(tmp: Path, models: int, images: int) -> dict[str, ResetInputs]:
    g = torch.Generator().manual_seed(0)
    save_image_set(ImageSet(torch.randint(0, 256, (images, 3, 32, 32), dtype=torch.uint8, generator=g), torch.randint(0, 10, (images,), generator=g)), tmp / "eval.safetensors")
    files = {}
    for k in range(models):
        model = build_architecture(DEMO_RESNET, seed=k)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.2 * torch.randn(p.shape, generator=g))
        name = f"m{k}"
        save_checkpoint(tmp / f"{name}.safetensors", model.state_dict(), NORM, {"model": name})
        evaluate_baseline(model_id=name, arch=DEMO_RESNET, weights=tmp / f"{name}.safetensors", eval_data=tmp / "eval.safetensors",
                          settings=EvalSettings(device="cpu", batch_size=500, cpu_threads=1), logits_out=tmp / f"{name}.logits.safetensors",
                          summary_out=tmp / f"{name}.json", cache=EvaluationCache())  # fmt: skip
        files[name] = ResetInputs(tmp / f"{name}.safetensors", tmp / "eval.safetensors", tmp / f"{name}.logits.safetensors", tmp / f"{name}.json")
    return files


def run_jobs(jobs, files, settings, cache, threads: int, out: Path) -> dict:
    todo: queue.Queue = queue.Queue()
    for job in jobs:
        todo.put(job)
    results, errors = {}, []

    def worker():
        while True:
            try:
                model, layer, seed = todo.get_nowait()
            except queue.Empty:
                return
            try:
                results[model, layer, seed] = evaluate_reset(
                    model_id=model, arch=DEMO_RESNET, files=files[model], layer=layer, seed=seed, mode="randomize",
                    settings=settings, out=out / f"{model}-{layer}-{seed}.json", cache=cache,
                )  # fmt: skip
            except Exception as e:  # noqa: BLE001 - counted and reported
                errors.append(f"{model} {layer} {seed}: {type(e).__name__}: {e}")

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return {"results": results, "errors": errors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--activation-cache-mb", type=int, default=64)
    args, record = harness.start(parser, "side_by_side", out="optional")
    devices = int(os.environ.get("LAYERCRIT_EMULATED_GPUS") or 0) or torch.cuda.device_count()
    if devices < 1:
        raise SystemExit("no GPU here: set LAYERCRIT_EMULATED_GPUS=N to run N emulated ones side by side")
    torch.set_num_threads(1)
    budgets = BudgetLines()
    logging.getLogger("layercrit.evaluation").addHandler(budgets)
    logging.getLogger("layercrit.evaluation").setLevel(logging.INFO)
    with TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        files = make_study(tmp, args.models, args.images)
        jobs = [(m, layer, s) for m in files for s in range(args.seeds) for layer in LAYERS]
        counters = [Counted(name) for name in ("load_image_set", "load_model", "fresh_model")]
        settings = EvalSettings(device="auto", batch_size=500, activation_cache_mb=args.activation_cache_mb, cpu_threads=1)
        started = time.perf_counter()
        side = run_jobs(jobs, files, settings, EvaluationCache(), devices, tmp)
        wall = time.perf_counter() - started
        counts = {c.name: c.calls for c in counters}
        for c in counters:
            setattr(evaluation_cache, c.name, c.wrapped)
        serial_settings = EvalSettings(device="cuda:0", batch_size=500, cpu_threads=1)  # emulated: cpu:0
        serial = run_jobs(jobs, files, serial_settings, EvaluationCache(), 1, tmp)
    ok = [k for k in jobs if k in side["results"]]
    differ = [k for k in ok if any(side["results"][k][m] != serial["results"][k][m] for m in METRICS)]
    zeros = [k for k in ok if side["results"][k]["criticality"] == 0]
    record.update({
        "devices": devices, "jobs": len(jobs), "models": args.models, "seeds": args.seeds, "images": args.images,
        "per_job": {name: n / len(jobs) for name, n in counts.items()}, "counts": counts,
        "failed": len(side["errors"]), "first_errors": side["errors"][:3], "differ_from_serial": len(differ),
        "zero_criticality": len(zeros), "bitwise": not side["errors"] and not differ, "wall_s": wall,
        "budgets": budgets.lines, "device": side["results"][ok[0]]["device"] if ok else None,
    })  # fmt: skip
    harness.finish(args, record, lambda r: json.dumps({k: v for k, v in r.items() if k != "versions"}, indent=2))


if __name__ == "__main__":
    main()
