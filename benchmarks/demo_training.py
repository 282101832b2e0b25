"""Why does the demo's adversarial training lower criticality? Train variants, measure both.

The demo (config/demo.yaml) trains every model for the same number of epochs. Adversarially
trained models then reach lower clean accuracy than the baseline, so "AT lowers criticality"
could be undertraining rather than a property of adversarial training. This script trains
chosen variants of the demo's recipes with more or fewer epochs, and reports for each the
clean top-1 and the mean criticality over the demo's 17 layers × reset seeds, computed with the
package's own reset and metric code on the demo's evaluation images. Compare criticality at
matched accuracy, not at matched epochs.

    python -m benchmarks.demo_training --out docs/demo_training.json            # all variants
    python -m benchmarks.demo_training --only baseline_e5 linf4_e10 --out /tmp/x.json
    python -m benchmarks.demo_training --only baseline_e40_s1001 --add --out docs/demo_training.json

Variants run two at a time (one torch thread each, as the demo's trainings do). Each result
records the variant's recipe, history summary and wall time; nothing is cached between runs.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from benchmarks import harness
from layercrit.evaluation.forward import EvalSettings, predict_logits
from layercrit.evaluation.metrics import criticality, output_change
from layercrit.evaluation.reset import reset_layer
from layercrit.study import load_study
from layercrit.synthetic import make_synthetic_images
from layercrit.models.training import evaluate_accuracy, recipe_of, train_classifier
from layercrit.models.zoo import build_architecture

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config" / "demo.yaml"
RESET_SEEDS = (0, 1, 2)


def _demo() -> tuple[Any, dict[str, Any]]:
    config = yaml.safe_load(CONFIG.read_text())
    config["zoo"] = str(ROOT / config["zoo"])
    return load_study(config), config


def variants(study: Any) -> dict[str, dict[str, Any]]:
    """Named (model id, recipe overrides, architecture kwargs overrides, training seed) to train."""
    v: dict[str, dict[str, Any]] = {}
    # Criticality along the training length, standard and adversarial (L∞ 4/255, the demo's largest budget).
    for epochs in (5, 10, 20):
        v[f"baseline_e{epochs}"] = {"model": "demo_baseline", "recipe": {"epochs": epochs}}
        v[f"linf4_e{epochs}"] = {"model": "demo_linf_4", "recipe": {"epochs": epochs}}
    # The smaller budgets trained long enough to reach the baseline's accuracy range.
    v["linf1_e20"] = {"model": "demo_linf_1", "recipe": {"epochs": 20}}
    v["l2_0.25_e20"] = {"model": "demo_l2_0.25", "recipe": {"epochs": 20}}
    # A stronger attack at 10 epochs.
    v["linf4_pgd3_e10"] = {"model": "demo_linf_4", "recipe": {"adversarial_steps": 3, "epochs": 10}}
    # The frozen-random control at 10 epochs, and on timm's default initialization (the old control).
    v["control"] = {"model": "demo_control", "recipe": {"epochs": 10}}
    v["control_zero_init_last"] = {"model": "demo_control", "recipe": {"epochs": 10}, "kwargs": {"zero_init_last": True}}
    # The zoo's recipes (40 epochs) under other training seeds (initialization and data order): how
    # far one training of a recipe is from another, against the differences between recipes.
    for seed in (1001, 1002):
        v[f"baseline_e40_s{seed}"] = {"model": "demo_baseline", "recipe": {}, "seed": seed}
    for seed in (1001, 1002):
        v[f"linf2_e40_s{seed}"] = {"model": "demo_linf_2", "recipe": {}, "seed": seed}
        v[f"l2_0.25_e40_s{seed}"] = {"model": "demo_l2_0.25", "recipe": {}, "seed": seed}
    return v


def mean_criticality(net: torch.nn.Module, arch: Any, eval_set: Any, normalization: dict | None) -> dict[str, Any]:
    """Mean criticality over the architecture's layers and RESET_SEEDS (randomize mode), and per layer."""
    settings = EvalSettings(device="cpu", batch_size=500)
    clean = predict_logits(net, eval_set, normalization, settings, "cpu")
    fresh = {seed: build_architecture(arch, seed=seed).state_dict() for seed in RESET_SEEDS}  # once, not per layer
    per_layer = {}
    for layer in arch.layers:
        values = []
        for seed in RESET_SEEDS:
            with reset_layer(net, layer.name, "randomize", fresh[seed]):
                reset = predict_logits(net, eval_set, normalization, settings, "cpu")
            values.append(float(output_change(clean, reset)["cosine"].mean()))
        per_layer[layer.name] = criticality(float(np.mean(values)))
    return {"mean_criticality": float(np.mean(list(per_layer.values()))), "per_layer": per_layer}


def run_variant(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    torch.set_num_threads(1)
    study, config = _demo()
    model = study.models[spec["model"]]
    arch = study.architectures[model.architecture]
    if spec.get("kwargs"):
        arch = dataclasses.replace(arch, kwargs={**arch.kwargs, **spec["kwargs"]})
    data = config["data"]
    common = dict(n_classes=data["n_classes"], image_size=data["image_size"])
    train = make_synthetic_images(seed=data["seed"], n_images=data["train_images"], **common)
    eval_set = make_synthetic_images(seed=data["seed"] + 1, n_images=data["eval_images"], **common)
    norm = model.normalization
    mean, std = (norm["mean"], norm["std"]) if norm else (None, None)
    recipe = recipe_of(model.source, model.adversarial, spec["recipe"])
    seed = spec.get("seed", model.source.get("seed", 0))

    start = time.perf_counter()
    net = build_architecture(arch, seed=seed).train()
    history = train_classifier(net, train, recipe, mean=mean, std=std, seed=seed, progress=False)
    train_seconds = time.perf_counter() - start
    top1 = evaluate_accuracy(net, eval_set, mean=mean, std=std)
    crit = mean_criticality(net, arch, eval_set, norm)
    return {
        "variant": name,
        "model": model.id,
        "architecture_kwargs": arch.kwargs,
        "recipe": recipe.to_dict(),
        "seed": seed,
        "top1": top1,
        "final_train_accuracy": history["train_accuracy"][-1],
        "train_seconds": train_seconds,
        **crit,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="variant names (default: all)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--add", action="store_true", help="keep the other variants of an existing --out record (same-named ones are replaced)")
    args, record = harness.start(parser, "demo_training", out="required")
    study, _ = _demo()
    todo = variants(study)
    if args.only:
        unknown = sorted(set(args.only) - set(todo))
        if unknown:
            parser.error(f"unknown variants {unknown}; known: {sorted(todo)}")
        todo = {k: todo[k] for k in args.only}
    results = []
    with cf.ProcessPoolExecutor(args.jobs) as pool:
        futures = {pool.submit(run_variant, k, v): k for k, v in todo.items()}
        for future in cf.as_completed(futures):
            r = future.result()
            results.append(r)
            print(
                f"{r['variant']:28s} top-1 {r['top1']:5.1f} %  mean criticality {r['mean_criticality']:5.1f} %  "
                f"({r['train_seconds']:.0f} s)",
                flush=True,
            )
    if args.add and args.out.exists():
        results += [r for r in json.loads(args.out.read_text())["results"] if r["variant"] not in todo]
    order = list(variants(study))
    results.sort(key=lambda r: order.index(r["variant"]) if r["variant"] in order else len(order))
    record.update(torch=torch.__version__, config=str(CONFIG.relative_to(ROOT)), results=results)
    harness.write_record(record, args.out)


if __name__ == "__main__":
    main()
