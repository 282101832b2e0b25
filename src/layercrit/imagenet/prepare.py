"""The prepared evaluation data: the subset of a folder's images decoded into one ``ImageSet``
file, in subset order, with what it holds recorded in its header (the file list in a sidecar where
the header would be too large), so that every evaluation job reads the same tensor and decodes
nothing; and the same images once per input pipeline."""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from layercrit.data import ImageSet, save_image_set
from layercrit.study.image_folders import folder_listing
from layercrit.imagenet.decode import ImageDecodeError, decode_images, default_workers
from layercrit.imagenet.layout import IMAGENET_VAL_IMAGES, LAYOUT_HINT, ImageNetLayoutError, scan_validation_folder
from layercrit.imagenet.subset import paper_subset_indices
from layercrit.io import atomic_path, provenance
from layercrit.study.pipelines import STUDY_INTERPOLATION, InputPipeline


# safetensors refuses headers over 100,000,000 bytes; past this size the file list goes to a
# sidecar (50,000 relative paths are ~2.5 MB, so this only matters for unusual inputs).
HEADER_BUDGET = 50_000_000

@dataclass(frozen=True)
class FolderWords:
    """How a data job speaks of the folder it reads: the progress bar, the fix of an image that
    cannot be decoded, what the folder must be."""

    progress: str
    broken_image: str
    layout: str


# The two kinds of folder prepare_validation_set reads (its ``kind``, recorded in the file).
FOLDER_WORDS = {
    "imagenet_val": FolderWords(
        "decoding ImageNet val",
        "Restore it from the original archive (deleting it would change which images the subset picks).",
        LAYOUT_HINT,
    ),
    "image_folder": FolderWords(
        "decoding images of data.root",
        "Replace it with a readable image, or move it out of data.root (the evaluation data is then prepared "
        "again from the images that remain, and every model evaluated on them again).",
        "data.root (data.kind folder) must hold one subfolder per class, each with its images "
        "(<root>/<class>/<image>), as torchvision's ImageFolder reads it (README, 'Your own images').",
    ),
}


# ----------------------------------------------------------------------------------------------
# The prepared file


def prepare_validation_set(
    root: str | Path,
    out: str | Path,
    *,
    labels_file: str | Path | None = None,
    n_subset: int | None = 10_000,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
    expected_classes: int | None = 1000,
    resize: int = 256,
    crop: int = 224,
    interpolation: str = STUDY_INTERPOLATION,
    kind: str = "imagenet_val",
    listing_sha256: str | None = None,
) -> dict[str, Any]:
    """Decode the paper's subset of the validation set and store it as one ``ImageSet`` file
    (or, ``kind="image_folder"`` with ``expected_classes=None``, a subset of any class-folder tree).

    The i-th stored image is ``paper_subset_indices(...)[i]`` of the ImageFolder order. Layout and
    subset problems are raised (``ImageNetLayoutError``) before anything is decoded. Returns a
    summary (counts, layout, time, images/s). ``kind`` says how messages and the progress bar
    speak of the folder (``FOLDER_WORDS``). ``listing_sha256``: the digest of the folder's listing
    (``image_folders.folder_listing``) the workflow planned with; a folder that differs now
    changed after planning, and the file is not made from it. The file records the digest.
    """
    t0 = time.perf_counter()
    words = FOLDER_WORDS[kind]
    try:
        listing = scan_validation_folder(root, labels_file, expected_classes=expected_classes)
    except ImageNetLayoutError as error:
        raise ImageNetLayoutError(error.problem, words.layout) from None
    folder = folder_listing(listing.root)
    if listing_sha256 is not None and folder.sha256 != listing_sha256:
        # every evaluation-data file of a study is made from one listing of its folder
        raise ImageNetLayoutError(
            f"The images of {listing.root} changed after the workflow was planned (added, replaced or removed: "
            f"{folder.n_images} images now); run the workflow again, so that the evaluation data is prepared "
            "from the folder as it is then",
            words.layout,
        )
    n_total = len(listing.paths)
    if n_subset is not None and n_subset > n_total:
        raise ImageNetLayoutError(f"Asked for {n_subset} images but {listing.root} holds only {n_total}.", words.layout)
    if expected_classes == 1000 and n_total != IMAGENET_VAL_IMAGES and n_subset is not None:
        warnings.warn(
            f"{listing.root} holds {n_total} images, not the {IMAGENET_VAL_IMAGES} of the ImageNet-1k validation set: "
            "the subset is well defined but not the paper's.",
            stacklevel=2,
        )
    indices = paper_subset_indices(n_total, n_subset, seed)
    paths = [listing.paths[i] for i in indices]
    labels = torch.tensor([listing.labels[i] for i in indices], dtype=torch.int64)

    t1 = time.perf_counter()
    try:
        images = decode_images(
            paths, resize=resize, crop=crop, interpolation=interpolation, workers=workers, progress=progress, desc=words.progress
        )
    except ImageDecodeError as error:
        raise ImageDecodeError(f"{error} {words.broken_image}") from error
    decode_seconds = time.perf_counter() - t1

    out = Path(out)
    files = [p.relative_to(listing.root).as_posix() for p in paths]
    metadata: dict[str, Any] = {
        "kind": kind,
        "root": str(listing.root.absolute()),
        "layout": listing.layout,
        "labels_file": str(listing.labels_file.absolute()) if listing.labels_file else None,
        "n_total": n_total,
        "listing_sha256": folder.sha256,
        "n_subset": n_subset,
        "n_images": len(paths),
        "seed": seed,
        "order": "ImageFolder order" if n_subset is None else "first n_subset of the seeded shuffled DataLoader",
        "resize": resize,
        "crop": crop,
        "interpolation": interpolation,
        "classes": listing.classes,
        "files": files,
        "files_sidecar": None,
        "provenance": provenance(),
    }
    sidecar = sidecar_path(out)
    # The metadata travels as a JSON string inside the JSON header: measure it escaped.
    if len(json.dumps(json.dumps(metadata))) > HEADER_BUDGET:
        with atomic_path(sidecar) as tmp, open(tmp, "w") as f:
            f.writelines(f"{name}\n" for name in files)
        metadata.update(files=None, files_sidecar=sidecar.name)
    elif sidecar.exists():
        sidecar.unlink()  # left over from an earlier run of a larger set; it would contradict this one
    save_image_set(ImageSet(images, labels), out, metadata)

    return {
        "out": str(out),
        "layout": listing.layout,
        "n_total": n_total,
        "n_images": len(paths),
        "n_classes": len(listing.classes),
        "seed": seed,
        "workers": default_workers() if workers is None else workers,
        "decode_seconds": round(decode_seconds, 3),
        "images_per_s": round(len(paths) / decode_seconds, 1) if decode_seconds > 0 else None,
        "seconds": round(time.perf_counter() - t0, 3),
        "files_sidecar": str(sidecar) if metadata["files_sidecar"] else None,
    }


def prepare_pipeline_images(
    data: dict[str, Any], out: str | Path, pipeline: InputPipeline, *, imagenet_val: str | None, workers: int | None = None
) -> dict[str, Any]:
    """The study's evaluation images (config ``data``: kind imagenet, its folder ``imagenet_val``,
    or folder) prepared with one model's input ``pipeline``; every pipeline's file holds the
    same images, labels and order (the subset depends on the folder and subset settings only),
    each made from the folder's listing whose digest ``data`` names (``listing_sha256``, the
    param all pipeline jobs share)."""
    if data["kind"] == "imagenet":
        source = {"root": imagenet_val, "labels_file": data["labels_file"], "expected_classes": data["expected_classes"]}
    else:
        source = {"root": data["root"], "expected_classes": None, "kind": "image_folder"}
    return prepare_validation_set(
        **source,
        out=out,
        n_subset=data["subset_size"],
        seed=data["subset_seed"],
        workers=workers,
        resize=pipeline.resize,
        crop=pipeline.crop,
        interpolation=pipeline.interpolation,
        listing_sha256=data.get("listing_sha256"),
    )


def sidecar_path(out: str | Path) -> Path:
    """Where the file list goes when it is too large for the safetensors header."""
    out = Path(out)
    return out.with_name(out.name + ".files.txt")


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of a prepared file, with ``files`` filled in from the sidecar if it is there."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        metadata = json.loads((f.metadata() or {}).get("metadata", "{}"))
    if metadata.get("files") is None and metadata.get("files_sidecar"):
        metadata["files"] = sidecar_path(path).read_text().splitlines()
    return metadata
