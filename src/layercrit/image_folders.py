"""What an image folder holds, counted without decoding anything.

The workflow reads this while it is parsed (torch-free, before any job): a folder whose classes
are not the models' outputs, or that holds fewer images than the subset asks for, stops the run
there with the setting to change, instead of failing in the data job or, worse, being scored.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

# torchvision's IMG_EXTENSIONS (what ImageFolder reads; tests/test_imagenet.py checks they agree),
# written out because importing torchvision imports torch.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class FolderCount:
    """A folder's class subfolders (sorted: ImageFolder's labels are their indices), the images
    in each (any depth below it) and the images directly in the folder."""

    root: Path
    classes: tuple[str, ...]
    images_per_class: tuple[int, ...]
    top_level_images: int

    @property
    def n_images(self) -> int:
        return sum(self.images_per_class) or self.top_level_images

    @property
    def empty_classes(self) -> list[str]:
        return [c for c, n in zip(self.classes, self.images_per_class) if n == 0]


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


@functools.lru_cache(maxsize=8)
def count_images(root: str | Path) -> FolderCount:
    """Count the images of ``root`` as ImageFolder would find them (symlinks followed)."""
    root = Path(root).expanduser()
    with os.scandir(root) as entries:
        entries = list(entries)
    classes = sorted(e.name for e in entries if e.is_dir())
    per_class = []
    for name in classes:
        per_class.append(sum(_is_image(f) for _, _, files in os.walk(root / name, followlinks=True) for f in files))
    top = sum(e.is_file() and _is_image(e.name) for e in entries)
    return FolderCount(root, tuple(classes), tuple(per_class), top)
