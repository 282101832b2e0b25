"""Which images the paper evaluated: the first 10,000 its shuffled DataLoader drew.

The authors iterated ``DataLoader(ImageFolder(val), batch_size=500, shuffle=True,
generator=torch.Generator().manual_seed(0))`` and kept the first 20 batches. That is *not*
``torch.randperm(50000, generator=Generator().manual_seed(0))[:10000]``: each DataLoader
iterator first draws its workers' base seed (one int64) from the same generator, and only then
does the RandomSampler draw its permutation. ``paper_subset_indices`` reproduces the
DataLoader; the tests check it against a real DataLoader.
"""

from __future__ import annotations

import torch


def paper_subset_indices(n_total: int, n_subset: int | None = 10_000, seed: int = 0) -> list[int]:
    """Indices (into ImageFolder order) of the images the authors' shuffled DataLoader yields first.

    Equal to the first ``n_subset`` indices of ``DataLoader(range(n_total), shuffle=True,
    generator=torch.Generator().manual_seed(seed))`` for any batch size; for 50,000 / 10,000 /
    seed 0 that is the paper's subset. ``n_subset=None`` means all images in ImageFolder order
    (no shuffle); ``n_subset == n_total`` means all images, shuffled.
    """
    if n_total < 1:
        raise ValueError(f"n_total must be positive, got {n_total}")
    if n_subset is None:
        return list(range(n_total))
    if not 1 <= n_subset <= n_total:
        raise ValueError(f"n_subset must be in 1…{n_total} (the number of images), got {n_subset}")
    g = torch.Generator().manual_seed(seed)
    # A DataLoader iterator draws its workers' base seed from the generator first (also with
    # num_workers=0), and only then does its RandomSampler call randperm with that generator.
    torch.empty((), dtype=torch.int64).random_(generator=g)
    return torch.randperm(n_total, generator=g)[:n_subset].tolist()
