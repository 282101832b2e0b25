"""Adversarial examples for adversarial training: PGD in L∞ or L2 (Madry et al.), on [0, 1]
images, leaving the model's BatchNorm running statistics as they were.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from layercrit.data import normalize
from layercrit.models.training.recipe import ADVERSARIAL_NORMS


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
