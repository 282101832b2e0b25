"""What an image folder holds, listed without decoding anything.

The workflow reads this while it is parsed (torch-free, before any job): a folder whose classes
are not the models' outputs, or that holds fewer images than the subset asks for, stops the run
there with the setting to change, instead of failing in the data job or, worse, being scored.

The folder is no file Snakemake can watch, so its listing (every image's path, size and
modification time, as one digest) is a param of the data jobs: images added, replaced or
removed prepare the evaluation data again, and with it every baseline and reset. The digest
costs one ``stat`` per image (0.2 s for the 50,000 of ImageNet's validation set on a local disk),
so it is taken only when a data job asks for it.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

# torchvision's IMG_EXTENSIONS (what ImageFolder reads; tests/test_imagenet.py checks they agree),
# written out because importing torchvision imports torch.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class FolderCount:
    """A folder's class subfolders (sorted: ImageFolder's labels are their indices), the images
    in each (any depth below it, as paths relative to the folder) and the images directly in it."""

    root: Path
    classes: tuple[str, ...]
    class_images: tuple[tuple[str, ...], ...]
    top_level_images: tuple[str, ...]

    @property
    def images(self) -> tuple[str, ...]:
        """The images ImageFolder (or the flat ImageNet layout, without class folders) reads."""
        return tuple(image for images in self.class_images for image in images) or self.top_level_images

    @property
    def n_images(self) -> int:
        return len(self.images)

    @property
    def empty_classes(self) -> list[str]:
        return [c for c, images in zip(self.classes, self.class_images) if not images]


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _images_below(folder: str, relative: str) -> list[str]:
    """The images in ``folder`` and its subfolders (symlinks followed, as os.walk(followlinks=True)
    in ImageFolder), as paths relative to the root (``relative``: the folder's)."""
    found = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_dir():
                found += _images_below(entry.path, f"{relative}{entry.name}/")
            elif _is_image(entry.name):
                found.append(relative + entry.name)
    return sorted(found)


def count_images(root: str | Path) -> FolderCount:
    """The images of ``root`` as ImageFolder would find them (symlinks followed)."""
    return _count_images(Path(root).expanduser())


@functools.lru_cache(maxsize=8)
def _count_images(root: Path) -> FolderCount:
    with os.scandir(root) as entries:
        entries = list(entries)
    classes = sorted(e.name for e in entries if e.is_dir())
    class_images = tuple(tuple(_images_below(str(root / name), f"{name}/")) for name in classes)
    top = tuple(sorted(e.name for e in entries if e.is_file() and _is_image(e.name)))
    return FolderCount(root, tuple(classes), class_images, top)


@dataclass(frozen=True)
class FolderListing:
    """What the images of a folder are now: their number, a digest of every image's path, size
    and modification time, and the newest modification time of an image or of a folder holding
    one (adding, removing or renaming an image changes its folder's)."""

    n_images: int
    sha256: str
    newest_ns: int


def folder_listing(root: str | Path) -> FolderListing:
    """The listing of the images ``count_images(root)`` finds (one stat of each)."""
    return _folder_listing(Path(root).expanduser())


@functools.lru_cache(maxsize=8)
def _folder_listing(root: Path) -> FolderListing:
    count = _count_images(root)
    base = f"{root}{os.sep}"  # string paths: pathlib's joins would cost more than the stat calls
    digest = hashlib.sha256()
    newest = 0
    for image in count.images:
        stat = os.stat(base + image)
        digest.update(f"{image}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
        newest = max(newest, stat.st_mtime_ns)
    folders = {"", *count.classes, *(image.rpartition("/")[0] for image in count.images)}
    newest = max(newest, *(os.stat(base + folder).st_mtime_ns for folder in folders))
    return FolderListing(count.n_images, digest.hexdigest(), newest)
