"""Evaluation images: stored once as uint8, turned into model input on the device.

Every evaluation job reads the same prepared file (images as uint8 N×3×H×W, labels as int64),
so no job decodes images again. Normalization belongs to the model (some models take raw
[0, 1] input), which is why it is applied here, per model, and not baked into the stored data.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from layercrit.io import atomic_path, read_safetensors
from layercrit.study.pipelines import STUDY_INTERPOLATION


@dataclass(frozen=True)
class ImageSet:
    """Images (uint8, N×3×H×W) with their integer class labels."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(f"images must be uint8 N×3×H×W, got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"labels must have shape ({self.images.shape[0]},), got {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return self.images.shape[0]


def normalize(
    x01: torch.Tensor, mean: Sequence[float] | None, std: Sequence[float] | None, *, inplace: bool = False
) -> torch.Tensor:
    """[0, 1] images → model input, normalized with the model's mean/std if it has one.

    Out of place by default, so it also serves inputs that need gradients (adversarial
    training); in place where the caller owns ``x01`` (no extra batch-sized tensors)."""
    if mean is None:
        return x01
    m = torch.as_tensor(mean, dtype=x01.dtype, device=x01.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x01.dtype, device=x01.device).view(1, -1, 1, 1)
    return x01.sub_(m).div_(s) if inplace else (x01 - m) / s


def to_model_input(
    images: torch.Tensor,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """uint8 images → float input in [0, 1], normalized with the model's mean/std if it has one."""
    return normalize(images.to(dtype).div_(255.0), mean, std, inplace=True)


def save_image_set(image_set: ImageSet, path: str | Path, metadata: dict | None = None) -> None:
    """Write images + labels as one safetensors file (atomically); metadata goes in its header."""
    header = {"metadata": json.dumps(metadata or {})}
    with atomic_path(path) as tmp:
        save_file({"images": image_set.images.contiguous(), "labels": image_set.labels.contiguous()}, tmp, header)


def load_labels(path: str | Path) -> torch.Tensor:
    """The labels of a stored image set, without reading its images."""
    return read_safetensors(path, names=("labels",))[0]["labels"]


def check_labels(labels: torch.Tensor, n_classes: int, path: str | Path) -> None:
    """Labels must be classes of the model (0 … n_classes − 1): one outside would be scored as a
    miss that no model could avoid, and would lower every accuracy without a word."""
    outside = (labels < 0) | (labels >= n_classes)
    if bool(outside.any()):
        values = sorted({int(v) for v in labels[outside][:1000]})
        raise ValueError(
            f"{path}: {int(outside.sum())} of {len(labels)} evaluation labels are not classes of the model, which "
            f"has {n_classes} outputs (labels 0 to {n_classes - 1}): {values[:10]}. The data and the models must "
            f"have the same classes: check data.n_classes (or the image folder) and the architectures' num_classes"
        )


def image_set_pipeline(path: str | Path) -> dict[str, Any] | None:
    """The input pipeline (resize, crop, interpolation) a stored image set was prepared with, from
    its metadata; None for generated images, which had none. Files prepared before the
    interpolation was recorded were all bilinear."""
    _, header = read_safetensors(path, names=("labels",))  # the header, with the smallest tensor
    metadata = json.loads(header.get("metadata", "{}"))
    if "resize" not in metadata:
        return None
    return {"resize": metadata["resize"], "crop": metadata["crop"], "interpolation": metadata.get("interpolation", STUDY_INTERPOLATION)}


def load_image_set(path: str | Path) -> ImageSet:
    tensors, _ = read_safetensors(path, names=("images", "labels"))
    return ImageSet(tensors["images"], tensors["labels"])
