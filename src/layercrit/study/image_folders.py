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
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layercrit.io import safetensors_metadata

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


def prepared_metadata(prepared: str | Path) -> dict[str, Any] | None:
    """What a prepared evaluation-data file records of the folder it was made from (root,
    n_total, listing_sha256, …: ``imagenet.prepare_validation_set``); None where there is no
    such file yet, {} for one that cannot be read."""
    metadata = safetensors_metadata(prepared)
    if metadata is None:
        return None
    try:
        return json.loads(metadata.get("metadata", "{}"))
    except ValueError:
        return {}


@dataclass(frozen=True)
class ListingParam:
    """The image folder's listing as a data job's param (``param``, merged into its data
    settings) and, where the folder changed since the job's file was prepared, what changed
    (``change``, for the plan's log)."""

    param: dict[str, Any]
    change: str | None


def listing_param(root: str | Path, prepared: str | Path) -> ListingParam:
    """``{"listing_sha256": …}`` of the images of ``root`` as the param of the job that prepares
    ``prepared`` from them: Snakemake makes the file again when the digest changes.

    A file prepared before the digest was recorded (so its job's recorded params lack it) gets
    no digest while the folder is as it was then: as many images as the file says it had, none
    newer than the file. A finished study then keeps its evaluation data (and every result made
    from it) instead of preparing it again for the new param; once the folder changes, the file
    is prepared again and records its digest."""
    listing = folder_listing(root)
    recorded = prepared_metadata(prepared)
    param = {"listing_sha256": listing.sha256}
    if recorded is None:
        return ListingParam(param, None)
    before = recorded.get("n_total")
    if "listing_sha256" in recorded:
        if recorded["listing_sha256"] == listing.sha256:
            return ListingParam(param, None)
    elif before == listing.n_images and listing.newest_ns <= os.stat(prepared).st_mtime_ns:
        return ListingParam({}, None)
    what = f"{before} images then, {listing.n_images} now" if before != listing.n_images else "images replaced"
    return ListingParam(
        param,
        f"the images of {root} have changed since {prepared} was prepared ({what})",
    )
