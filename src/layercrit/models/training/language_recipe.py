"""How a causal language model of a zoo is trained here (``LanguageRecipe``), checked against the
zoo schema's ``language_recipe``, the one validator of its keys.

A recipe of its own beside the image classifiers' ``TrainingRecipe``: the two share no key's
meaning (epochs of a fixed image set against steps over windows of a text; augmentation and
adversarial budgets against a text and a parent checkpoint), so one dataclass for both would
hold fields that half its users must leave unset. A zoo recipe with ``text`` is this one.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from layercrit.study import load_schema, schema_problems
from layercrit.study.language_training import LANGUAGE_RECIPE_DEFAULTS as _DEFAULTS
from layercrit.study.language_training import is_language_recipe

LANGUAGE_RECIPE_SCHEMA = load_schema("zoo")["$defs"]["language_recipe"]
LANGUAGE_SCHEDULES = tuple(LANGUAGE_RECIPE_SCHEMA["properties"]["schedule"]["enum"])


@dataclass(frozen=True)
class LanguageRecipe:
    """How one causal language model is trained: ``steps`` AdamW steps of ``batch_size`` windows
    of ``window_tokens`` tokens each, next-token cross-entropy with label smoothing, gradient
    norm clipped to ``grad_clip``; ``heldout_windows`` windows at the end of the text are kept
    out of training and scored after it. ``init_from`` names the zoo model whose checkpoint it
    starts from (else a fresh initialization under the source's seed)."""

    text: dict[str, Any]
    steps: int = _DEFAULTS["steps"]
    batch_size: int = _DEFAULTS["batch_size"]
    window_tokens: int = _DEFAULTS["window_tokens"]
    heldout_windows: int = _DEFAULTS["heldout_windows"]
    lr: float = _DEFAULTS["lr"]
    optimizer: str = _DEFAULTS["optimizer"]
    weight_decay: float = _DEFAULTS["weight_decay"]
    warmup_steps: int = _DEFAULTS["warmup_steps"]
    schedule: str = _DEFAULTS["schedule"]  # "constant" | "cosine" (towards 0 after the last step), after the warm-up
    label_smoothing: float = _DEFAULTS["label_smoothing"]
    grad_clip: float = _DEFAULTS["grad_clip"]
    log_every: int = _DEFAULTS["log_every"]
    init_from: str | None = None

    def __post_init__(self) -> None:
        if self.warmup_steps >= self.steps:
            raise ValueError(f"invalid training recipe: warmup_steps ({self.warmup_steps}) must be fewer than steps ({self.steps})")

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> LanguageRecipe:
        """A recipe from a zoo recipe; bad keys or values raise ``ValueError`` with the schema's words."""
        problems = schema_problems(dict(cfg), LANGUAGE_RECIPE_SCHEMA, "training recipe")
        if problems:
            raise ValueError("\n".join(problems))
        return cls(**{**cfg, "text": dict(cfg["text"])})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``from_config(to_dict())`` round-trips; ``init_from`` left out when unset)."""
        d = dataclasses.asdict(self)
        if d["init_from"] is None:
            del d["init_from"]
        return d

    def lr_at(self, step: int) -> float:
        """The learning rate of step ``step`` (0-based): linear warm-up, then constant or cosine.
        It depends on ``steps`` only under cosine, so a constant run's first k steps are a run of k."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        if self.schedule == "constant":
            return self.lr
        rest = self.steps - self.warmup_steps
        return self.lr * 0.5 * (1 + math.cos(math.pi * (step - self.warmup_steps) / rest))
