"""Training recipes for the demo zoo: the paper's training-method categories, in miniature.

One architecture, several ways to train it: a standard recipe (baseline), an "improved" recipe
(cosine schedule, label smoothing, tuned learning rate), data augmentation (cutout, colour
jitter, mixup), adversarial training (PGD in L∞ or L2 at several budgets) and a control that
trains only the classifier on top of the randomly initialized backbone.

Everything here is deterministic given ``seed``: shuffling and augmentation draw from a local
``torch.Generator`` (and a local numpy generator for mixup's Beta draw), and training runs inside
``torch.random.fork_rng`` so the caller's global RNG state is left as it was.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from layercrit.data import ImageSet, load_image_set, normalize, to_model_input
from layercrit.io import provenance, write_json
from layercrit.study import Architecture, load_schema, schema_problems
from layercrit.zoo import build_architecture, save_checkpoint

# The zoo schema says what a recipe may hold; these lists are read from it.
_ZOO_SCHEMA = load_schema("zoo")
RECIPE_SCHEMA = _ZOO_SCHEMA["$defs"]["train_source"]["properties"]["recipe"]
SCHEDULES = tuple(RECIPE_SCHEMA["properties"]["schedule"]["enum"])
AUGMENTATIONS = tuple(RECIPE_SCHEMA["properties"]["augment"]["items"]["enum"])
ADVERSARIAL_SCHEMA = _ZOO_SCHEMA["properties"]["models"]["items"]["properties"]["adversarial"]
ADVERSARIAL_NORMS = tuple(ADVERSARIAL_SCHEMA["properties"]["norm"]["enum"])
# Recipe fields that come from a zoo model's `adversarial` entry, not from its `recipe`.
ADVERSARIAL_FIELDS = ("adversarial_norm", "adversarial_epsilon")

# Fixed augmentation strengths (small-image CIFAR conventions), kept out of the recipe on purpose:
# the recipe names *which* method is used, the demo does not sweep their strengths.
CROP_PADDING = 4  # pad-4 random crop (zero padding), as for CIFAR
CUTOUT_FRACTION = 0.25  # cutout square side as a fraction of the image side (8 px at 32 px: the objects
# here are smaller than CIFAR's, and DeVries & Taylor's 16 px hole erases many of them whole)
COLOR_JITTER = 0.4  # brightness, contrast, saturation factors drawn from [1 - 0.4, 1 + 0.4]
MIXUP_ALPHA = 0.2  # Beta(α, α) mixing weight, as in Zhang et al. for CIFAR


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
) -> TrainingRecipe:
    """The recipe of a zoo model trained here: its source's ``recipe``, trained adversarially with
    the budget of its ``adversarial`` entry (the zoo states a model's budget once, for the
    figures and the training alike), then ``overrides``."""
    cfg = dict(source["recipe"])
    if adversarial:
        cfg.update(adversarial_norm=adversarial["norm"], adversarial_epsilon=adversarial["epsilon"])
    cfg.update(overrides or {})
    return TrainingRecipe.from_config(cfg)


# --- helpers ---------------------------------------------------------------------------------


def _bn_buffers(model: torch.nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(buffer, saved copy) for every BatchNorm running statistic of ``model``."""
    saved = []
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._NormBase) and module.track_running_stats:
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                buf = getattr(module, name)
                if buf is not None:
                    saved.append((buf, buf.clone()))
    return saved


def _classifier(model: torch.nn.Module) -> torch.nn.Module:
    """The final classifier layer (timm: ``get_classifier()``, i.e. ``fc`` for ResNets)."""
    if hasattr(model, "get_classifier"):
        return model.get_classifier()
    return model.fc


# --- adversarial examples ----------------------------------------------------------------------


def pgd_attack(
    model: torch.nn.Module,
    x01: torch.Tensor,
    y: torch.Tensor,
    *,
    norm: str,
    epsilon: float,
    steps: int,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Untargeted PGD on the cross-entropy, in [0, 1] pixel space; returns the adversarial images.

    ``epsilon`` is in pixel scale for both norms (an L∞ budget of 4/255 is ``4 / 255``). The
    attack starts at a random point of the ε-ball (uniform for L∞, on the sphere for L2), takes
    ``steps`` steps of size 2.5·ε/steps, and after every step projects onto the ε-ball and clamps
    to [0, 1] (clamping only shrinks the perturbation, so the result stays in the ball).

    The model is attacked in whatever mode it is in; BatchNorm running statistics are restored
    afterwards so the attack's extra forward passes leave no trace, and parameter ``.grad`` is
    not touched (gradients are taken with respect to the input only).
    """
    if norm not in ADVERSARIAL_NORMS:
        raise ValueError(f"unknown norm {norm!r}; allowed: {', '.join(ADVERSARIAL_NORMS)}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    x01 = x01.detach()
    if epsilon <= 0:
        return x01.clone()
    step_size = 2.5 * epsilon / steps
    dims = (1,) * (x01.ndim - 1)  # per-sample norms broadcast over C, H, W

    def project(delta: torch.Tensor) -> torch.Tensor:
        if norm == "linf":
            return delta.clamp(-epsilon, epsilon)
        n = delta.flatten(1).norm(dim=1).view(-1, *dims)
        return delta * (epsilon / n.clamp_min(1e-12)).clamp(max=1.0)

    # Random start (drawn on the CPU generator, then moved: reproducible on any device).
    if norm == "linf":
        delta = (torch.rand(x01.shape, generator=generator) * 2 - 1) * epsilon
    else:
        delta = torch.randn(x01.shape, generator=generator)
        delta = delta * (epsilon / delta.flatten(1).norm(dim=1).clamp_min(1e-12)).view(-1, *dims)
    delta = delta.to(device=x01.device, dtype=x01.dtype)
    x_adv = (x01 + delta).clamp(0.0, 1.0)

    saved_bn = _bn_buffers(model)
    try:
        for _ in range(steps):
            x_adv.requires_grad_(True)
            loss = F.cross_entropy(model(normalize(x_adv, mean, std)), y)
            (grad,) = torch.autograd.grad(loss, x_adv)
            with torch.no_grad():
                if norm == "linf":
                    x_adv = x_adv + step_size * grad.sign()
                else:
                    g = grad.flatten(1).norm(dim=1).view(-1, *dims).clamp_min(1e-12)
                    x_adv = x_adv + step_size * grad / g
                x_adv = (x01 + project(x_adv - x01)).clamp(0.0, 1.0)
    finally:
        with torch.no_grad():
            for buf, copy in saved_bn:
                buf.copy_(copy)
    return x_adv.detach()


# --- augmentation (batched, on [0, 1] images) --------------------------------------------------


def _crop_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random crop from the zero-padded image plus random horizontal flip, per image."""
    b, _, h, w = x.shape
    p = CROP_PADDING
    padded = F.pad(x, (p, p, p, p))
    oy = torch.randint(0, 2 * p + 1, (b,), generator=gen)
    ox = torch.randint(0, 2 * p + 1, (b,), generator=gen)
    flip = torch.rand(b, generator=gen) < 0.5
    rows = oy[:, None] + torch.arange(h)
    cols = ox[:, None] + torch.arange(w)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    rows, cols = rows.to(x.device), cols.to(x.device)
    batch = torch.arange(b, device=x.device)[:, None, None]
    # Advanced indices (batch, rows, cols) around the channel slice give (B, H, W, C).
    # (B, H, W, C) permuted to (B, C, H, W) is exactly the channels_last layout the model uses.
    return padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def _cutout(x: torch.Tensor, gen: torch.Generator, fill: torch.Tensor) -> torch.Tensor:
    """One square hole per image (centre anywhere, clipped at the border), filled with ``fill``."""
    b, _, h, w = x.shape
    size = max(1, round(CUTOUT_FRACTION * min(h, w)))
    # Rows/columns [c - size // 2, c - size // 2 + size), as in DeVries & Taylor's code.
    y0 = torch.randint(0, h, (b, 1, 1), generator=gen).to(x.device) - size // 2
    x0 = torch.randint(0, w, (b, 1, 1), generator=gen).to(x.device) - size // 2
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    hole = (ys >= y0) & (ys < y0 + size) & (xs >= x0) & (xs < x0 + size)
    return torch.where(hole[:, None], fill, x)


def _color_jitter(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random brightness, contrast and saturation (in that order), per image."""
    b = x.shape[0]
    f = (1 + COLOR_JITTER * (2 * torch.rand(3, b, 1, 1, 1, generator=gen) - 1)).to(x.device, x.dtype)
    weights = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    x = (x * f[0]).clamp(0.0, 1.0)
    gray_mean = (x * weights).sum(1, keepdim=True).mean((2, 3), keepdim=True)
    x = ((x - gray_mean) * f[1] + gray_mean).clamp(0.0, 1.0)
    gray = (x * weights).sum(1, keepdim=True)
    return ((x - gray) * f[2] + gray).clamp(0.0, 1.0)


# --- training ------------------------------------------------------------------------------------


def _lr_at(recipe: TrainingRecipe, epoch: int, it: int, steps_per_epoch: int) -> float:
    """Learning rate for iteration ``it`` (0-based) of ``epoch`` (0-based)."""
    t = epoch * steps_per_epoch + it
    warmup = recipe.warmup_epochs * steps_per_epoch
    if t < warmup:
        return recipe.lr * (t + 1) / warmup
    if recipe.schedule == "step":
        # Milestones at 50 % and 75 % of the epochs, never before the first epoch ends.
        m1 = max(1, int(0.5 * recipe.epochs + 0.5))
        m2 = max(1, int(0.75 * recipe.epochs + 0.5))
        return recipe.lr * 0.1 ** ((epoch >= m1) + (epoch >= m2))
    # Cosine decay to 0 over the iterations after the warm-up.
    rest = recipe.epochs * steps_per_epoch - warmup
    return recipe.lr * 0.5 * (1 + math.cos(math.pi * (t - warmup) / rest))


def train_classifier(
    model: torch.nn.Module,
    train: ImageSet,
    recipe: TrainingRecipe,
    *,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    seed: int,
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``model`` in place on ``train`` with ``recipe``; return the training history.

    The model trains on whatever device its parameters are on. The history has per-epoch lists
    ``epoch``, ``loss`` (mean training loss), ``train_accuracy`` (top-1 % on the augmented,
    possibly adversarial batches, against the dominant label under mixup), ``lr`` (mean over the
    epoch's iterations) and ``seconds`` (wall time), plus ``total_seconds``, ``n_train``,
    ``steps_per_epoch``, ``seed`` and ``recipe``. The model is left in eval mode.

    Each epoch visits a fresh random permutation in full batches (the remainder is dropped, so
    BatchNorm never sees a tiny batch); with fewer images than ``batch_size`` there is one batch.
    """
    device = next(model.parameters()).device
    n = len(train)
    if n < 2:
        raise ValueError(f"need at least 2 training images, got {n}")
    batch_size = min(recipe.batch_size, n)
    steps_per_epoch = n // batch_size
    fill = torch.as_tensor(mean if mean is not None else (0.5, 0.5, 0.5), dtype=torch.float32, device=device)
    fill = fill.view(1, -1, 1, 1)  # cutout fills with the mean colour: zero after normalization

    # channels_last: mkldnn convolutions, BatchNorm and max-pooling run ~1.5x faster on the CPU in
    # this layout; the weights go back to the default layout at the end (same values, bitwise).
    model.to(memory_format=torch.channels_last)
    head_params = {id(p) for p in _classifier(model).parameters()}
    requires_grad = {p: p.requires_grad for p in model.parameters()}
    if recipe.freeze_backbone:
        for p in model.parameters():
            p.requires_grad_(id(p) in head_params)
    params = [p for p in model.parameters() if p.requires_grad]
    if recipe.optimizer == "adamw":
        optimizer = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    else:
        optimizer = torch.optim.SGD(
            params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay, nesterov=recipe.momentum > 0
        )

    history: dict[str, Any] = {"epoch": [], "loss": [], "train_accuracy": [], "lr": [], "seconds": []}
    fork_devices = [device] if device.type == "cuda" else []
    start = time.perf_counter()
    try:
        with torch.random.fork_rng(devices=fork_devices):
            torch.manual_seed(seed)  # anything drawing on global RNG is seeded too, caller's state restored
            gen = torch.Generator().manual_seed(seed)
            np_rng = np.random.default_rng(seed)  # mixup's Beta draw (torch's Beta takes no generator)
            bar = tqdm(range(recipe.epochs), desc="train", unit="epoch", file=sys.stderr, disable=not progress)
            for epoch in bar:
                t0 = time.perf_counter()
                # The frozen control keeps the whole model in eval mode: BatchNorm then uses (and keeps)
                # its initial running statistics, so nothing but `fc` changes.
                model.train(not recipe.freeze_backbone)
                order = torch.randperm(n, generator=gen)
                loss_sum, correct, seen, lr_sum = 0.0, 0, 0, 0.0
                for it in range(steps_per_epoch):
                    idx = order[it * batch_size : (it + 1) * batch_size]
                    x = train.images[idx].to(device=device, dtype=torch.float32).div_(255.0)
                    x = x.contiguous(memory_format=torch.channels_last)
                    y = train.labels[idx].to(device)
                    if "crop_flip" in recipe.augment:
                        x = _crop_flip(x, gen)
                    if "color_jitter" in recipe.augment:
                        x = _color_jitter(x, gen)
                    if "cutout" in recipe.augment:
                        x = _cutout(x, gen, fill)
                    if recipe.adversarial_norm is not None:
                        # Attack in train mode (batch statistics): the perturbation then maximizes the
                        # loss of the very function the update minimizes, as in Madry et al.'s and
                        # Wong et al.'s reference code; running statistics are restored by pgd_attack.
                        x = pgd_attack(
                            model,
                            x,
                            y,
                            norm=recipe.adversarial_norm,
                            epsilon=recipe.attack_epsilon,
                            steps=recipe.adversarial_steps,
                            mean=mean,
                            std=std,
                            generator=gen,
                        )
                    lam, y2 = 1.0, y
                    if "mixup" in recipe.augment:
                        # After the attack (if any): adversarial examples are made for the hard labels,
                        # then mixed like clean ones.
                        lam = float(np_rng.beta(MIXUP_ALPHA, MIXUP_ALPHA))
                        lam = max(lam, 1.0 - lam)  # `y` stays the dominant label
                        perm = torch.randperm(x.shape[0], generator=gen).to(device)
                        x = lam * x + (1 - lam) * x[perm]
                        y2 = y[perm]

                    lr = _lr_at(recipe, epoch, it, steps_per_epoch)
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                    logits = model(normalize(x, mean, std))
                    loss = F.cross_entropy(logits, y, label_smoothing=recipe.label_smoothing)
                    if lam < 1.0:
                        loss = lam * loss + (1 - lam) * F.cross_entropy(
                            logits, y2, label_smoothing=recipe.label_smoothing
                        )
                    if not torch.isfinite(loss):
                        raise FloatingPointError(f"training loss is {loss.item()} at epoch {epoch + 1}, step {it + 1}")
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()

                    loss_sum += loss.item() * len(idx)
                    correct += int((logits.argmax(1) == y).sum())
                    seen += len(idx)
                    lr_sum += lr
                seconds = time.perf_counter() - t0
                history["epoch"].append(epoch + 1)
                history["loss"].append(loss_sum / seen)
                history["train_accuracy"].append(100.0 * correct / seen)
                history["lr"].append(lr_sum / steps_per_epoch)
                history["seconds"].append(seconds)
                bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{100.0 * correct / seen:.1f}")
            bar.close()
    finally:
        for p, flag in requires_grad.items():
            p.requires_grad_(flag)
        model.to(memory_format=torch.contiguous_format)
        model.eval()
    history.update(
        total_seconds=time.perf_counter() - start,
        n_train=n,
        steps_per_epoch=steps_per_epoch,
        seed=seed,
        recipe=recipe.to_dict(),
    )
    return history


@torch.no_grad()
def evaluate_accuracy(
    model: torch.nn.Module,
    data: ImageSet,
    *,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    batch_size: int = 500,
) -> float:
    """Top-1 accuracy (%) of ``model`` in eval mode on ``data``; the model's mode is restored."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct = 0
    try:
        for a in range(0, len(data), batch_size):
            x = to_model_input(data.images[a : a + batch_size].to(device), mean, std)
            correct += int((model(x).argmax(1) == data.labels[a : a + batch_size].to(device)).sum())
    finally:
        model.train(was_training)
    return 100.0 * correct / max(1, len(data))


def train_zoo_model(
    model: Mapping[str, Any],
    arch: Architecture,
    train_data: str | Path,
    *,
    checkpoint_out: str | Path,
    init_out: str | Path,
    history_out: str | Path,
    threads: int,
) -> dict[str, Any]:
    """Train one model of a zoo (``kind: train``) on ``train_data``; write its trained and its
    initial weights (what `reinit` rewinds to) and the training history; return the history."""
    torch.set_num_threads(threads)
    source = model["source"]
    seed = source.get("seed", 0)
    recipe = recipe_of(source, model.get("adversarial"))
    norm = model.get("normalization")
    mean, std = (norm["mean"], norm["std"]) if norm else (None, None)

    net = build_architecture(arch, seed=seed).train()
    init_state = {k: v.clone() for k, v in net.state_dict().items()}
    history = train_classifier(net, load_image_set(train_data), recipe, mean=mean, std=std, seed=seed, progress=True)

    # what the weights were trained from, in the file itself: a checkpoint recorded in a zoo is
    # fetched only while its zoo entry still gives this recipe (layercrit.weights.sources)
    meta = {"model": model["id"], "architecture": arch.id, "seed": seed, "recipe": recipe.to_dict()}
    save_checkpoint(init_out, init_state, norm, {**meta, "weights": "initialization"})
    save_checkpoint(checkpoint_out, net.state_dict(), norm, {**meta, "weights": "trained"})
    history = {**meta, **history, **provenance(threads=threads)}
    write_json(history_out, history)
    return history
