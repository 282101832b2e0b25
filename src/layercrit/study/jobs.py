"""The pure parts of the workflow's rules: what a job gets as params and in what order jobs run,
computed from the study alone, so that a unit test reaches them without a Snakemake workflow.

The ``.smk`` files call these through one-line wrappers that pass ``STUDY`` and ``config``.
Every value here is a job's param or priority: Snakemake re-runs a finished job whose params
changed, so a change here re-runs finished studies (tests/test_finished_studies.py pins them).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict
from typing import Any

from layercrit.study.core import Study
from layercrit.study.zoo import Model

# The fields of a zoo entry that make its checkpoint. The others (display name, category,
# method, reported top-1, in_figures) only label it in tables and figures: as params of the
# download and training jobs, renaming a model would re-make it and re-run all its evaluations.
CHECKPOINT_FIELDS = ("id", "architecture", "source", "adversarial", "normalization")


def checkpoint_entry(study: Study, model_id: str) -> dict[str, Any]:
    """A model's zoo entry as its download job's params: the fields that make its checkpoint."""
    entry = asdict(study.models[model_id])
    return {key: entry[key] for key in CHECKPOINT_FIELDS}


def training_entry(study: Study, model_id: str) -> dict[str, Any]:
    """A trained model's zoo entry as its training job's params: without the checkpoint a
    training once recorded, which is its result, not an input (recording one retrains nothing).
    """
    entry = checkpoint_entry(study, model_id)
    entry["source"] = {k: v for k, v in entry["source"].items() if k != "checkpoint"}
    return entry


def training_priority(model: Model) -> int:
    """Longest training first (epochs × forward-backward passes per batch), so that the last
    one to start is a short one and no core idles at the end."""
    recipe = model.source.get("recipe", {})
    steps = recipe.get("adversarial_steps", 2) if model.adversarial else 0
    return recipe.get("epochs", 10) * (1 + steps)


def synthetic_split(data: dict[str, Any], split: str) -> dict[str, Any]:
    """What one split of the generated images is made from (``data``: config ``data``): the
    evaluation images never share a seed with the training images, and each split is its own
    job (the demo with recorded checkpoints needs no training images)."""
    seed, count = {"train": (0, "train_images"), "eval": (1, "eval_images")}[split]
    return {
        "split": split,
        "seed": data["seed"] + seed,
        "n_images": data[count],
        "n_classes": data["n_classes"],
        "image_size": data["image_size"],
    }


def data_params(data: dict[str, Any], per_model_pipelines: bool) -> dict[str, Any]:
    """The data settings (config ``data``) as the preparing job's params: without `pipeline`, so
    that images prepared before the key existed (what `study` does) stay current; with per-model
    pipelines also without resize and crop, which each file's pipeline sets instead."""
    unused = {"pipeline"} | ({"resize", "crop"} if per_model_pipelines else set())
    return {key: value for key, value in data.items() if key not in unused}


def model_rank(model_ids: list[str], model_id: str) -> int:
    """n for the zoo's first of n models, 1 for its last: reset jobs run model by model."""
    return len(model_ids) - model_ids.index(model_id)


def reset_priorities(study: Study) -> dict[tuple[str, str, str], float]:
    """Each reset job's priority, by (model, layer, seed as text): model i of n (zoo order) gets
    priorities in (n - i, n - i + 1), falling in the study's job order (Study.reset_jobs: within
    a model seed by seed): the range the models' integer ranks gave before, so other rules'
    priorities (training's) keep their place among them."""
    model_ids = list(study.models)
    jobs = study.reset_jobs()
    per_model = Counter(model for model, _, _ in jobs)
    priorities, position = {}, Counter()
    for model, layer, seed in jobs:
        position[model] += 1
        within = (per_model[model] + 1 - position[model]) / (per_model[model] + 1)
        priorities[model, layer, str(seed)] = model_rank(model_ids, model) + within
    return priorities
