"""Training recipes for the demo zoo: the paper's training-method categories, in miniature.

One architecture, several ways to train it: a standard recipe (baseline), an "improved" recipe
(cosine schedule, label smoothing, tuned learning rate), data augmentation (cutout, colour
jitter, mixup), adversarial training (PGD in L∞ or L2 at several budgets) and a control that
trains only the classifier on top of the randomly initialized backbone.

Everything here is deterministic given ``seed``: shuffling and augmentation draw from a local
``torch.Generator`` (and a local numpy generator for mixup's Beta draw), and training runs inside
``torch.random.fork_rng`` so the caller's global RNG state is left as it was.
"""

from layercrit.models.training.adversarial import pgd_attack
from layercrit.models.training.augment import COLOR_JITTER, CROP_PADDING, CUTOUT_FRACTION, MIXUP_ALPHA
from layercrit.models.training.language import train_causal_lm, train_zoo_language_model
from layercrit.models.training.language_recipe import LANGUAGE_RECIPE_SCHEMA, LanguageRecipe, is_language_recipe
from layercrit.models.training.loop import evaluate_accuracy, train_classifier, train_zoo_model
from layercrit.models.training.recipe import (
    ADVERSARIAL_FIELDS,
    ADVERSARIAL_NORMS,
    ADVERSARIAL_SCHEMA,
    AUGMENTATIONS,
    RECIPE_SCHEMA,
    SCHEDULES,
    TrainingRecipe,
    recipe_of,
)

# the names of the former module layercrit/training.py
__all__ = [
    "ADVERSARIAL_FIELDS", "ADVERSARIAL_NORMS", "ADVERSARIAL_SCHEMA", "AUGMENTATIONS", "COLOR_JITTER", "CROP_PADDING",
    "CUTOUT_FRACTION", "MIXUP_ALPHA", "RECIPE_SCHEMA", "SCHEDULES", "TrainingRecipe", "evaluate_accuracy", "pgd_attack",
    "recipe_of", "train_classifier", "train_zoo_model",
    "LANGUAGE_RECIPE_SCHEMA", "LanguageRecipe", "is_language_recipe", "train_causal_lm", "train_zoo_language_model",
]  # fmt: skip
