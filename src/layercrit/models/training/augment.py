"""Data augmentation for the demo zoo's training, batched on [0, 1] images and drawn from the
training's own generator: random crop and flip, cutout, colour jitter (and mixup's strength,
which the training loop applies after any attack).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Fixed augmentation strengths (small-image CIFAR conventions), kept out of the recipe on purpose:
# the recipe names *which* method is used, the demo does not sweep their strengths.
CROP_PADDING = 4  # pad-4 random crop (zero padding), as for CIFAR
CUTOUT_FRACTION = 0.25  # cutout square side as a fraction of the image side (8 px at 32 px: the objects
# here are smaller than CIFAR's, and DeVries & Taylor's 16 px hole erases many of them whole)
COLOR_JITTER = 0.4  # brightness, contrast, saturation factors drawn from [1 - 0.4, 1 + 0.4]
MIXUP_ALPHA = 0.2  # Beta(α, α) mixing weight, as in Zhang et al. for CIFAR


def crop_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
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


def cutout(x: torch.Tensor, gen: torch.Generator, fill: torch.Tensor) -> torch.Tensor:
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


def color_jitter(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random brightness, contrast and saturation (in that order), per image."""
    b = x.shape[0]
    f = (1 + COLOR_JITTER * (2 * torch.rand(3, b, 1, 1, 1, generator=gen) - 1)).to(x.device, x.dtype)
    weights = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    x = (x * f[0]).clamp(0.0, 1.0)
    gray_mean = (x * weights).sum(1, keepdim=True).mean((2, 3), keepdim=True)
    x = ((x - gray_mean) * f[1] + gray_mean).clamp(0.0, 1.0)
    gray = (x * weights).sum(1, keepdim=True)
    return ((x - gray) * f[2] + gray).clamp(0.0, 1.0)
