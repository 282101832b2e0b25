"""The demo's shipped zoo: checkpoints trained once by the workflow, recorded in the demo zoo.

    python -m tools.demo_zoo train   # `make demo-zoo`: retrain the demo zoo (config/demo_training.yaml), then `ship`
    python -m tools.demo_zoo ship    # ship the checkpoints of a finished retraining (results/demo_training/models/)
    python -m tools.demo_zoo check   # the shipped files are what the zoo records, trained from its recipes (a test runs this)

Why: training carries the last bits of a CPU's floating-point sums into every weight, so the
same recipe gives another model on another CPU (docs/benchmarks.md, "Demo reproducibility").
The demo therefore evaluates models trained once, here, by the workflow's own `train_model`
rule and fetched through the verified path any published model takes (the zoo's
`source.checkpoint`: file and sha256); what still varies between CPUs is evaluation arithmetic.

Shipping stores each trained checkpoint's floating-point tensors as float16 (half the size: the
ten models take ~10 MB instead of ~20 MB) in the workflow's checkpoint format, its header
recording the model, architecture, seed and recipe it was trained from and the sha256 of the
float32 file `train_model` wrote. The training history goes beside it (`<model>.training.json`),
and `resources/demo_zoo/manifest.json` records, per model, both hashes and the clean top-1 of
the float32 and float16 weights on the demo's evaluation images (what the rounding changed).
Then the zoo's `sha256:` of each checkpoint is rewritten.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "config" / "zoo" / "demo.yaml"
CONFIGS = (ROOT / "config" / "demo.yaml", ROOT / "config" / "demo_training.yaml")
SHIPPED = ROOT / "resources" / "demo_zoo"
MANIFEST = SHIPPED / "manifest.json"
STORED_DTYPE = "float16"


@dataclass(frozen=True)
class ShippedZoo:
    """A zoo whose models were trained once by the workflow and shipped: its zoo file, the configs
    that retrain it (merged as Snakemake merges several --configfile), where the checkpoints are
    shipped, and the retraining study's results."""

    zoo: Path
    configs: tuple[Path, ...]
    shipped: Path
    results: Path

    @property
    def manifest(self) -> Path:
        return self.shipped / "manifest.json"

    def training_study(self) -> Any:
        """The study as its training configs retrain it (every `train` model trained here)."""
        import yaml
        from snakemake.utils import update_config

        from layercrit.study import load_study

        config: dict[str, Any] = {}
        for path in self.configs:
            update_config(config, yaml.safe_load(path.read_text()))
        config["zoo"] = str(self.zoo)
        return load_study(config)

    def shipped_path(self, model_id: str) -> Path:
        return self.shipped / f"{model_id}.safetensors"

    def train(self, cores: int, extra_targets: tuple[str, ...] = ()) -> None:
        """Retrain every `train` model of the zoo with the workflow (then ``extra_targets``)."""
        study = self.training_study()
        results = self.results.relative_to(ROOT)  # as the rules write them (an absolute path matches no rule)
        targets = [str(results / "models" / f"{m}.safetensors") for m in study.trained_models]
        command = [str(Path(sys.executable).with_name("snakemake")), "--cores", str(cores)]
        configs = ["--configfile", *map(str, self.configs)]  # last: --configfile takes every path after it
        for batch in (targets, [str(results / t) for t in extra_targets]):
            if batch:
                print("+", " ".join(command + batch + configs), flush=True)
                subprocess.run(command + batch + configs, check=True, cwd=ROOT)

    def ship(self, evaluate: Callable[[Any, str, Any, dict], dict[str, Any]],
             summarize: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        """Round the retrained checkpoints to float16, write them and their training histories to
        the shipped folder, the manifest (``evaluate(study, model_id, checkpoint, float16 state)``: what the
        rounding changed) and the zoo's hashes; ``summarize(history)`` goes into each header."""
        import torch

        from layercrit.io import file_sha256, machine, provenance, read_json, write_json
        from layercrit.models.zoo import load_checkpoint, save_checkpoint

        study = self.training_study()
        here = {**machine(), "host": provenance()["host"]}
        self.shipped.mkdir(parents=True, exist_ok=True)
        manifest: dict[str, Any] = {"stored_dtype": STORED_DTYPE, "models": {}}
        zoo_text = self.zoo.read_text()
        for model_id in study.trained_models:
            trained = self.results / "models" / f"{model_id}.safetensors"
            history = read_json(self.results / "models" / f"{model_id}.training.json")
            expected = trained_from(study, model_id)
            if history.get("recipe") != expected["recipe"] or history.get("seed") != expected["seed"]:
                sys.exit(f"{trained} was trained from {history.get('recipe')} (seed {history.get('seed')}), not from the zoo's "
                         f"{expected['recipe']} (seed {expected['seed']}): retrain it")
            checkpoint = load_checkpoint(trained)
            floats = {k: v for k, v in checkpoint.state_dict.items() if v.is_floating_point()}
            too_large = [k for k, v in floats.items() if v.abs().max() > torch.finfo(torch.float16).max]
            if too_large:
                sys.exit(f"{trained}: {too_large} exceed float16's range; ship float32 instead")
            stored = {k: v.to(torch.float16) if v.is_floating_point() else v for k, v in checkpoint.state_dict.items()}
            rounding = max(float((stored[k].float() - v).abs().max()) for k, v in floats.items())
            same_machine = history.get("host") == here["host"]
            metadata = {
                **checkpoint.metadata,
                **expected,
                "trained_sha256": file_sha256(trained),
                "stored_dtype": STORED_DTYPE,
                "training": {
                    **summarize(history),
                    "created": history.get("created"),
                    "versions": history.get("versions"),
                    "machine": here if same_machine else {"host": history.get("host")},
                },
            }
            out = self.shipped_path(model_id)
            save_checkpoint(out, stored, checkpoint.normalization, metadata)
            shutil.copyfile(self.results / "models" / f"{model_id}.training.json", self.shipped / f"{model_id}.training.json")
            sha256 = file_sha256(out)
            effect = evaluate(study, model_id, checkpoint, stored)
            manifest["models"][model_id] = {
                "file": out.name,
                "sha256": sha256,
                "trained_sha256": metadata["trained_sha256"],
                "max_abs_rounding_error": rounding,
                **effect,
                "size_bytes": out.stat().st_size,
            }
            zoo_text = record_hash(zoo_text, model_id, sha256, self.zoo)
            print(f"{model_id}: {out.relative_to(ROOT)} {sha256[:12]}…, {effect}, largest rounding {rounding:.2g}", flush=True)
        write_json(self.manifest, provenance(**manifest))
        self.zoo.write_text(zoo_text)
        print(f"wrote {self.shipped.relative_to(ROOT)}/ and the checkpoints' sha256 in {self.zoo.relative_to(ROOT)}", flush=True)

    def check(self) -> list[str]:
        """Problems with the shipped zoo ([] if none): every `train` model of the zoo records a
        checkpoint in the shipped folder whose sha256 is the recorded one and whose header says it
        was trained from the zoo's current recipe, seed and architecture."""
        from layercrit.io import file_sha256
        from layercrit.weights.checkpoint_files import recorded_metadata

        study = self.training_study()
        problems = []
        for model_id in study.trained_models:
            source = study.models[model_id].source
            if "checkpoint" not in source:
                problems.append(f"{model_id}: the zoo records no checkpoint")
                continue
            path = ROOT / source["checkpoint"]["url"]  # as the workflow finds it from any directory
            if path.resolve() != self.shipped_path(model_id).resolve() or not path.is_file():
                problems.append(f"{model_id}: recorded checkpoint {path} is not the shipped {self.shipped_path(model_id)}")
                continue
            if file_sha256(path) != source["checkpoint"]["sha256"]:
                problems.append(f"{model_id}: {path.name} does not have the sha256 the zoo records")
            recorded = recorded_metadata(path) or {}
            expected = trained_from(study, model_id)
            for key, value in expected.items():
                if recorded.get(key) != value:
                    problems.append(f"{model_id}: trained from {key} {recorded.get(key)!r}, the zoo now says {value!r}")
        return problems


def trained_from(study: Any, model_id: str) -> dict[str, Any]:
    """What a model's shipped checkpoint must say it was trained from: model, architecture (as
    the zoo builds it), seed and full recipe."""
    from layercrit.study import architecture_identity
    from layercrit.models.training import recipe_of

    model = study.models[model_id]
    return {
        "model": model_id,
        "architecture": model.architecture,
        "architecture_identity": architecture_identity(study.architectures[model.architecture]),
        "seed": model.source.get("seed", 0),
        "recipe": recipe_of(model.source, model.adversarial).to_dict(),
    }


def record_hash(zoo_text: str, model_id: str, sha256: str, zoo: Path) -> str:
    """The zoo's text with the recorded checkpoint of ``model_id`` given ``sha256``."""
    # quoted: YAML would read a digest of digits only (and one "e") as a number
    pattern = re.compile(r'(checkpoint: \{url: [^,}]*/' + re.escape(model_id) + r'\.safetensors, sha256: )"[0-9a-f]{64}"')
    text, count = pattern.subn(lambda m: f'{m.group(1)}"{sha256}"', zoo_text)
    if count != 1:
        sys.exit(f'{zoo}: expected one `checkpoint: {{url: …/{model_id}.safetensors, sha256: "…"}}` line, found {count}')
    return text


def demo_zoo() -> ShippedZoo:
    """The vision demo's zoo (ZOO read when called, so a test can point it at another file)."""
    return ShippedZoo(ZOO, CONFIGS, SHIPPED, ROOT / "results" / "demo_training")


def top1_effect(study: Any, model_id: str, checkpoint: Any, float16: dict) -> dict[str, float]:
    """Clean top-1 of the float32 and the float16 weights on the demo's evaluation images."""
    from layercrit.data import load_image_set
    from layercrit.models.training import evaluate_accuracy
    from layercrit.models.zoo import Checkpoint, load_model

    eval_set = load_image_set(demo_zoo().results / "data" / "eval.safetensors")
    arch = study.architectures[study.models[model_id].architecture]
    norm = checkpoint.normalization
    mean, std = (norm["mean"], norm["std"]) if norm else (None, None)
    return {
        f"top1_{name}": evaluate_accuracy(load_model(arch, Checkpoint(sd, norm, {})), eval_set, mean=mean, std=std)
        for name, sd in (("float32", checkpoint.state_dict), ("float16", float16))
    }


def epochs_summary(history: dict[str, Any]) -> dict[str, Any]:
    return {
        "epochs": history["epoch"][-1],
        "n_train": history["n_train"],
        "final_train_accuracy": history["train_accuracy"][-1],
        "total_seconds": round(history["total_seconds"], 1),
    }


def check() -> list[str]:
    """Problems with the shipped vision demo zoo ([] if none); see ``ShippedZoo.check``."""
    return demo_zoo().check()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["train", "ship", "check"])
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    zoo = demo_zoo()
    if args.action == "train":
        zoo.train(args.cores, extra_targets=("data/eval.safetensors",))  # the evaluation images too (what rounding changes)
    if args.action in ("train", "ship"):
        zoo.ship(top1_effect, epochs_summary)
    problems = zoo.check()
    if problems:
        sys.exit("the shipped demo zoo does not match config/zoo/demo.yaml:\n  " + "\n  ".join(problems))
    print("the shipped demo zoo matches config/zoo/demo.yaml", flush=True)


if __name__ == "__main__":
    main()
