"""The demo zoo's training loop: one model trained by its recipe (augmentation, adversarial
examples, mixup, learning-rate schedule), deterministic given its seed, and the job that trains
one zoo model and writes its trained and initial weights and its history.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from layercrit.data import ImageSet, load_image_set, normalize, to_model_input
from layercrit.io import provenance, write_json
from layercrit.models.training.adversarial import pgd_attack
from layercrit.models.training.augment import MIXUP_ALPHA, color_jitter, crop_flip, cutout
from layercrit.models.training.recipe import TrainingRecipe, recipe_of
from layercrit.models.zoo import build_architecture, save_checkpoint
from layercrit.study import Architecture


def _classifier(model: torch.nn.Module) -> torch.nn.Module:
    """The final classifier layer (timm: ``get_classifier()``, i.e. ``fc`` for ResNets)."""
    if hasattr(model, "get_classifier"):
        return model.get_classifier()
    return model.fc


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
                        x = crop_flip(x, gen)
                    if "color_jitter" in recipe.augment:
                        x = color_jitter(x, gen)
                    if "cutout" in recipe.augment:
                        x = cutout(x, gen, fill)
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
