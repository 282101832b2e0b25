"""Causal language models trained by the workflow, checked at parse time (torch-free): a recipe
with a ``text`` (the zoo schema's ``language_recipe``) goes with a causal-LM architecture and an
image recipe with none; its text file exists; its window fits the model's positions; and
``init_from`` names a model of the zoo and of its architecture, in the study (its checkpoint is
the training's input), without a cycle of models each starting from the next.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from layercrit.study.architectures import Architecture
from layercrit.study.errors import ConfigError
from layercrit.study.schemas import load_schema, schema_problems
from layercrit.study.text_data import is_language_model
from layercrit.study.zoo import Model

# The defaults of a language recipe's unset keys (layercrit.models.training.LanguageRecipe takes
# them from here, so that the parse-time checks and the training agree).
LANGUAGE_RECIPE_DEFAULTS: dict[str, Any] = {
    "steps": 200, "batch_size": 8, "window_tokens": 64, "heldout_windows": 8, "lr": 1e-3, "optimizer": "adamw",
    "weight_decay": 0.01, "warmup_steps": 0, "schedule": "constant", "label_smoothing": 0.0, "grad_clip": 1.0, "log_every": 10,
}  # fmt: skip


SYNTHETIC_TEXT_SCHEMA = load_schema("config")["$defs"]["text_data"]["properties"]["synthetic"]


def is_language_recipe(recipe: Any) -> bool:
    """Whether a zoo recipe trains a causal language model: it names a text (the schema's test)."""
    return isinstance(recipe, Mapping) and "text" in recipe


def trains_language_model(model: Model) -> bool:
    """Whether a zoo model is a causal language model trained (or once trained) by the workflow."""
    return model.source.get("kind") == "train" and is_language_recipe(model.source.get("recipe"))


def init_from(model: Model) -> str | None:
    """The zoo model whose checkpoint a language model's training starts from, if any."""
    return model.source["recipe"].get("init_from") if trains_language_model(model) else None


def check_language_training(
    zoo_models: dict[str, Model], models: dict[str, Model], architectures: dict[str, Architecture], trained: tuple[str, ...]
) -> None:
    """The study's models of source kind train (``models``; ``zoo_models``: every model of the
    zoo) as the module's docstring says, or ``ConfigError`` naming the key and what to do. The
    text and the parent's checkpoint are needed only by those ``trained`` here (the others are
    fetched from their recorded checkpoints)."""
    for model in models.values():
        if model.source.get("kind") != "train":
            continue
        where = f"zoo.models.{model.id}.source.recipe"
        arch = architectures[model.architecture]
        language = is_language_recipe(model.source.get("recipe"))
        if language != is_language_model(arch):
            if language:
                raise ConfigError(
                    f"{where}: its text trains a causal language model, but architecture {arch.id!r} is not one; "
                    "train an image classifier without `text` (epochs, batch_size, ...), or use a causal-LM architecture"
                )
            raise ConfigError(
                f"{where}: architecture {arch.id!r} is a causal language model, which trains on a text: give the recipe "
                "a text, e.g. {text: {path: corpus.txt}, steps: 200} (README, 'Language models')"
            )
        if not language:
            continue
        recipe = model.source["recipe"]
        text = recipe["text"]
        if "synthetic" in text:  # one validator of generated text: the config schema's (data.synthetic)
            problems = schema_problems(text["synthetic"], SYNTHETIC_TEXT_SCHEMA, f"{where}.text.synthetic")
            if problems:
                raise ConfigError("\n".join(problems))
        if model.id in trained and "path" in text and not Path(text["path"]).expanduser().is_file():
            raise ConfigError(
                f"{where}.text.path: {text['path']!r} does not exist (relative to the working directory); give a .txt "
                'file (documents separated by blank lines) or a .jsonl file (one {"text": ...} per line)'
            )
        recipe = LANGUAGE_RECIPE_DEFAULTS | recipe
        steps, warmup = recipe["steps"], recipe["warmup_steps"]
        if warmup >= steps:
            raise ConfigError(f"{where}.warmup_steps: {warmup}, but the training has {steps} steps; warm up over fewer steps than it has")
        limit = arch.input.get("max_positions")
        tokens = recipe["window_tokens"]
        if limit and tokens > limit:
            raise ConfigError(f"{where}.window_tokens: {tokens}, but architecture {arch.id!r} takes at most {limit} positions; set it to at most {limit}")
        _check_init_from(model, zoo_models, models if model.id in trained else None)


def _check_init_from(model: Model, zoo_models: dict[str, Model], models: dict[str, Model] | None) -> None:
    """``init_from`` names a zoo model of the same architecture, without a cycle; with the study's
    ``models`` (the model trains here), one of them."""
    parent_id = init_from(model)
    if parent_id is None:
        return
    where = f"zoo.models.{model.id}.source.recipe.init_from"
    if parent_id not in zoo_models:
        raise ConfigError(f"{where}: unknown model {parent_id!r}; name a model of this zoo: {list(zoo_models)}")
    parent = zoo_models[parent_id]
    if parent.architecture != model.architecture:
        raise ConfigError(
            f"{where}: {parent_id!r} is of architecture {parent.architecture!r}, {model.id!r} of {model.architecture!r}; "
            "a training starts from a checkpoint of its own architecture"
        )
    chain = [model.id]
    current: str | None = parent_id
    while current is not None:
        if current in chain:
            raise ConfigError(f"{where}: the models start from each other in a cycle ({' -> '.join([*chain, current])}); one of them must start fresh")
        chain.append(current)
        current = init_from(zoo_models[current]) if current in zoo_models else None
    if models is not None and parent_id not in models:
        raise ConfigError(f"{where}: {parent_id!r} is not in this study's models, but its checkpoint is this training's start; add it to `models`")
