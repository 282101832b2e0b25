"""How a model of the demo zoo is trained: the recipe (``TrainingRecipe``), checked against the
zoo schema's ``recipe`` and ``adversarial`` entries, whose lists of schedules, augmentations and
norms are read from the schema (one list of each).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from layercrit.models.training.language_recipe import LanguageRecipe, is_language_recipe
from layercrit.study import load_schema, schema_problems

# The zoo schema says what a recipe may hold; these lists are read from it.
_ZOO_SCHEMA = load_schema("zoo")
RECIPE_SCHEMA = _ZOO_SCHEMA["$defs"]["image_recipe"]
SCHEDULES = tuple(RECIPE_SCHEMA["properties"]["schedule"]["enum"])
AUGMENTATIONS = tuple(RECIPE_SCHEMA["properties"]["augment"]["items"]["enum"])
ADVERSARIAL_SCHEMA = _ZOO_SCHEMA["properties"]["models"]["items"]["properties"]["adversarial"]
ADVERSARIAL_NORMS = tuple(ADVERSARIAL_SCHEMA["properties"]["norm"]["enum"])
# Recipe fields that come from a zoo model's `adversarial` entry, not from its `recipe`.
ADVERSARIAL_FIELDS = ("adversarial_norm", "adversarial_epsilon")


@dataclass(frozen=True)
class TrainingRecipe:
    """How one model of the demo zoo is trained (SGD with Nesterov momentum, or AdamW).

    The defaults are the demo's standard recipe (5,000 32×32 synthetic images, batch 128).

    ``adversarial_epsilon`` is in units of 1/255 for ``linf`` (as the paper reports budgets:
    4 means 4/255) and in [0, 1] pixel scale for ``l2``; see ``attack_epsilon``.
    """

    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.2
    optimizer: str = "sgd"  # "sgd" (Nesterov momentum) | "adamw"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "step"  # after warm-up, "step": ×0.1 at 50 % and 75 % of the epochs; "cosine": cosine decay to 0
    warmup_epochs: int = 1  # linear warm-up from ~0 to lr (both schedules; without it lr ≥ 0.2 diverges here)
    label_smoothing: float = 0.0
    augment: tuple[str, ...] = ()  # any of AUGMENTATIONS, applied crop_flip, color_jitter, cutout, then mixup (after any attack)
    adversarial_norm: str | None = None  # "linf" | "l2" | None (standard training)
    adversarial_epsilon: float = 0.0
    adversarial_steps: int = 2  # PGD steps, step size 2.5·ε/steps, random start
    freeze_backbone: bool = False  # control: train only the classifier `fc` on the random-init backbone

    def __post_init__(self) -> None:
        # Lists from YAML/JSON become tuples so the recipe stays hashable and compares equal.
        augment = self.augment
        if isinstance(augment, str):
            augment = (augment,)
        object.__setattr__(self, "augment", tuple(augment))

        # The zoo schema's `recipe` validates each key (from_config applies it); only what a schema
        # cannot say is checked here.
        if self.warmup_epochs > self.epochs:
            raise ValueError(f"invalid training recipe: warmup_epochs ({self.warmup_epochs}) exceeds epochs ({self.epochs})")
        if (self.adversarial_norm is None) != (self.adversarial_epsilon == 0):
            raise ValueError(
                "invalid training recipe: adversarial_norm and a positive adversarial_epsilon go together, got "
                f"{self.adversarial_norm!r} and {self.adversarial_epsilon!r}"
            )

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> TrainingRecipe:
        """Build a recipe from a zoo recipe (plus the adversarial budget); bad keys or values raise
        ``ValueError`` with the zoo schema's words, the one validator of a recipe."""
        if not isinstance(cfg, Mapping):
            raise ValueError(f"training recipe must be a mapping, got {type(cfg).__name__}")
        recipe = {k: v for k, v in cfg.items() if k not in ADVERSARIAL_FIELDS}
        problems = schema_problems(recipe, RECIPE_SCHEMA, "training recipe")
        if cfg.get("adversarial_norm") is not None:
            budget = {"norm": cfg["adversarial_norm"], "epsilon": cfg.get("adversarial_epsilon", 0.0)}
            problems += schema_problems(budget, ADVERSARIAL_SCHEMA, "adversarial training")
        if problems:
            raise ValueError("\n".join(problems))
        return cls(**cfg)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``from_config(to_dict())`` round-trips)."""
        d = dataclasses.asdict(self)
        d["augment"] = list(self.augment)
        return d

    @property
    def attack_epsilon(self) -> float:
        """The adversarial budget in [0, 1] pixel scale, as ``pgd_attack`` takes it."""
        if self.adversarial_norm == "linf":
            return self.adversarial_epsilon / 255.0
        return float(self.adversarial_epsilon)


def recipe_of(
    source: Mapping[str, Any], adversarial: Mapping[str, Any] | None, overrides: Mapping[str, Any] | None = None
) -> TrainingRecipe | LanguageRecipe:
    """The recipe of a zoo model trained here: its source's ``recipe``, trained adversarially with
    the budget of its ``adversarial`` entry (the zoo states a model's budget once, for the
    figures and the training alike), then ``overrides``. A recipe with a ``text`` trains a
    causal language model (``LanguageRecipe``)."""
    cfg = dict(source["recipe"])
    if is_language_recipe(cfg):
        return LanguageRecipe.from_config({**cfg, **(overrides or {})})
    if adversarial:
        cfg.update(adversarial_norm=adversarial["norm"], adversarial_epsilon=adversarial["epsilon"])
    cfg.update(overrides or {})
    return TrainingRecipe.from_config(cfg)
