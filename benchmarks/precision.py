"""How much does the arithmetic change criticality? Re-evaluate finished fp32 reset results of a
study in another precision (bf16 / tf32) and report the differences, in criticality points.

    python -m benchmarks.precision --configfile config/demo.yaml --precision bf16 --seeds 0

Run it in the directory the study ran in (it reads results/<study>/), on the same kind of device
(tf32 only differs from fp32 on a GPU). Reports the differences per model × layer × seed and of
each model's mean criticality over layers (the number the paper's model-level figures use).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import yaml

from benchmarks import harness
from layercrit.evaluation import EvaluationCache, ResetInputs, evaluate_baseline, evaluate_reset
from layercrit.evaluation.forward import EvalSettings
from layercrit.io import read_json
from layercrit.study import load_study


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configfile", type=Path, default=Path("config/demo.yaml"))
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--models", nargs="*", default=None)
    started = harness.start(parser, "precision", summary_table)
    if started is None:
        return
    args, record = started

    config = yaml.safe_load(args.configfile.read_text())
    config["reset"].setdefault("mode", "randomize")
    study = load_study(config)
    root = Path("results") / study.name
    settings = EvalSettings(device=args.device, precision=args.precision, batch_size=config.get("batch_size", 500),
                            activation_cache_mb=config.get("activation_cache_mb", 0))  # fmt: skip
    cache = EvaluationCache()
    diffs = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models or list(study.models):
            arch = study.architectures[study.models[model].architecture]
            # A study in this precision computes its clean outputs in it too.
            tmp_logits, tmp_summary = Path(tmp) / f"{model}.logits.safetensors", Path(tmp) / f"{model}.json"
            evaluate_baseline(model_id=model, arch=arch, weights=root / f"models/{model}.safetensors",
                              eval_data=root / "data/eval.safetensors", settings=settings, logits_out=tmp_logits,
                              summary_out=tmp_summary, cache=cache)  # fmt: skip
            for layer in study.layers_of(model):
                for seed in args.seeds:
                    ref = read_json(root / f"resets/{study.mode}/{model}/{layer.name}/seed{seed}.json")
                    res = evaluate_reset(
                        model_id=model, arch=arch,
                        files=ResetInputs(checkpoint=root / f"models/{model}.safetensors", eval=root / "data/eval.safetensors", logits=tmp_logits, baseline=tmp_summary),
                        layer=layer.name, seed=seed, mode=study.mode, settings=settings, out=Path(tmp) / "r.json", cache=cache,
                    )  # fmt: skip
                    diffs.append({"model": model, "layer": layer.name, "seed": seed, "fp32": ref["criticality"],
                                  args.precision: res["criticality"], "diff": res["criticality"] - ref["criticality"]})  # fmt: skip
    abs_diffs = sorted(abs(d["diff"]) for d in diffs)
    by_model: dict[str, list[float]] = {}
    for d in diffs:
        by_model.setdefault(d["model"], []).append(d["diff"])
    model_mean_diffs = {m: sum(v) / len(v) for m, v in by_model.items()}
    summary = {
        "precision": args.precision,
        "device": res["device"],
        "n": len(diffs),
        "max_abs_diff": abs_diffs[-1],
        "median_abs_diff": abs_diffs[len(abs_diffs) // 2],
        "mean_abs_diff": sum(abs_diffs) / len(abs_diffs),
        "worst": max(diffs, key=lambda d: abs(d["diff"])),
        "max_abs_diff_of_model_mean": max(abs(v) for v in model_mean_diffs.values()),
        "model_mean_diffs": model_mean_diffs,
    }
    record.update(summary=summary, rows=diffs)
    harness.finish(args, record, summary_table)


def summary_table(record: dict) -> str:
    return json.dumps(record["summary"], indent=2)


if __name__ == "__main__":
    main()
