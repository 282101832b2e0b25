"""The paper's evaluation data: a fixed 10,000-image subset of the ImageNet-1k validation set.

The 50,000 validation images are ordered as torchvision's ``ImageFolder`` orders them (class
folders sorted, files sorted within each, labels = index of the sorted WordNet id). The authors
then iterated ``DataLoader(ImageFolder(val), batch_size=500, shuffle=True,
generator=torch.Generator().manual_seed(0))`` and kept the first 20 batches. That is *not*
``torch.randperm(50000, generator=Generator().manual_seed(0))[:10000]``: each DataLoader
iterator first draws its workers' base seed (one int64) from the same generator, and only then
does the RandomSampler draw its permutation. ``paper_subset_indices`` reproduces the
DataLoader; the tests check it against a real DataLoader.

Each image is decoded once (``Resize(256)``, ``CenterCrop(224)``, kept as uint8) and the subset
is stored as one ``ImageSet`` file, in subset order, so that every evaluation job reads the
same tensor and decodes nothing. With per-model input pipelines (``layercrit.pipelines``) the
same subset is stored once per pipeline, each file resized and cropped as its pipeline says.

Accepted layouts of the validation folder:

- class folders: ``val/<wnid>/*.JPEG`` (what the usual ``valprep.sh`` produces);
- flat: ``val/ILSVRC2012_val_00000001.JPEG`` … plus a label file, either Kaggle's
  ``LOC_val_solution.csv`` or the devkit's ``ILSVRC2012_validation_ground_truth.txt`` with its
  ``meta.mat``. The flat layout is ordered exactly as the class-folder layout of the same images
  would be (by wnid, then file name), so both give the same subset.
"""

from __future__ import annotations

import concurrent.futures as cf
import csv
import functools
import json
import os
import re
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision import transforms
from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension, make_dataset

from layercrit.data import ImageSet, save_image_set
from layercrit.image_folders import folder_listing
from layercrit.io import atomic_path, provenance
from layercrit.pipelines import STUDY_INTERPOLATION, InputPipeline

KAGGLE_LABELS = "LOC_val_solution.csv"
DEVKIT_LABELS = "ILSVRC2012_validation_ground_truth.txt"
DEVKIT_DIR = "ILSVRC2012_devkit_t12"
IMAGENET_VAL_IMAGES = 50_000
# Auto-detection of a flat layout's label file looks in the folder and this many levels above:
# Kaggle's archive keeps LOC_val_solution.csv four levels above ILSVRC/Data/CLS-LOC/val.
LABEL_SEARCH_LEVELS = 4
# safetensors refuses headers over 100,000,000 bytes; past this size the file list goes to a
# sidecar (50,000 relative paths are ~2.5 MB, so this only matters for unusual inputs).
HEADER_BUDGET = 50_000_000

LAYOUT_CLASS_FOLDERS = "class_folders"
LAYOUT_FLAT = "flat"

_HINT = (
    "Set the `imagenet_val` config key to the ImageNet-1k validation folder "
    "(e.g. `--config imagenet_val=/path/to/val`). Accepted layouts: "
    "(1) class folders, val/<wnid>/*.JPEG, as torchvision's ImageFolder reads them; "
    f"(2) flat, val/ILSVRC2012_val_*.JPEG with a label file: Kaggle's {KAGGLE_LABELS} or the "
    f"devkit's {DEVKIT_LABELS} with meta.mat beside it or in {DEVKIT_DIR}/data/, found in the "
    f"folder or up to {LABEL_SEARCH_LEVELS} levels above it, or given explicitly as the labels file."
)


class ImageNetLayoutError(ValueError):
    """The image folder is missing, empty, or laid out in a way we cannot read; ``hint`` says
    what the setting must name (the ImageNet validation folder's layouts by default)."""

    def __init__(self, problem: str, hint: str = _HINT) -> None:
        super().__init__(f"{problem}\n{hint}")
        self.problem = problem


class ImageDecodeError(ValueError):
    """An image file cannot be decoded (corrupt, truncated, not an image)."""


@dataclass(frozen=True)
class Listing:
    """The validation images in ImageFolder order, with how they were found."""

    root: Path
    paths: list[Path]
    labels: list[int]
    classes: list[str]
    layout: str
    labels_file: Path | None


# ----------------------------------------------------------------------------------------------
# Listing


def list_validation_images(
    root: str | Path,
    labels_file: str | Path | None = None,
    *,
    expected_classes: int | None = 1000,
) -> tuple[list[Path], list[int], list[str]]:
    """The validation images in ImageFolder order, their ImageFolder labels, and the sorted wnids.

    ``expected_classes=None`` accepts any number of classes (tests, partial copies).
    """
    listing = scan_validation_folder(root, labels_file, expected_classes=expected_classes)
    return listing.paths, listing.labels, listing.classes


def scan_validation_folder(
    root: str | Path,
    labels_file: str | Path | None = None,
    *,
    expected_classes: int | None = 1000,
) -> Listing:
    """Like ``list_validation_images``, also saying which layout and label file were used."""
    root = Path(root).expanduser()
    if not root.exists():
        raise ImageNetLayoutError(f"Image folder {root} does not exist.")
    if not root.is_dir():
        raise ImageNetLayoutError(f"Image folder {root} is not a directory.")

    # os.scandir + is_dir()/is_file() follow symlinks, as ImageFolder's find_classes does.
    with os.scandir(root) as entries:
        entries = list(entries)
    class_dirs = sorted(e.name for e in entries if e.is_dir())
    top_images = sorted(e.name for e in entries if e.is_file() and has_file_allowed_extension(e.name, IMG_EXTENSIONS))

    samples: list[tuple[str, int]] = []
    if class_dirs:
        # torchvision's own scanner, so the order is ImageFolder's by construction (recursive
        # walk, sorted, case-insensitive extensions); empty classes are reported by us below.
        samples = make_dataset(str(root), {c: i for i, c in enumerate(class_dirs)}, IMG_EXTENSIONS, allow_empty=True)

    if samples and top_images:
        raise ImageNetLayoutError(
            f"{root} holds both {len(top_images)} images directly inside it and {len(samples)} images in "
            f"{len(class_dirs)} subfolders; it is unclear which layout is meant (an unfinished reorganization "
            "into class folders?). Finish moving the images into class folders, or point at a folder with one layout."
        )
    if samples:
        listing = _class_folder_listing(root, class_dirs, samples)
    elif top_images:
        listing = _flat_listing(root, top_images, labels_file)
    else:
        where = f" (nor in its {len(class_dirs)} subfolders)" if class_dirs else ""
        raise ImageNetLayoutError(
            f"No images ({', '.join(IMG_EXTENSIONS)}, any case) found in {root}{where}."
        )

    if expected_classes is not None and len(listing.classes) != expected_classes:
        if listing.layout == LAYOUT_CLASS_FOLDERS:
            found = f"{len(listing.classes)} class folders in {root}"
            fix = "If these are not class folders, point at the validation folder itself."
        else:
            found = f"{len(listing.classes)} classes in the label file {listing.labels_file}"
            fix = "Use the full ImageNet-1k label file."
        raise ImageNetLayoutError(
            f"Found {found} ({_preview(listing.classes)}), expected {expected_classes} (ImageNet-1k). {fix}"
        )
    return listing


def _class_folder_listing(root: Path, class_dirs: list[str], samples: list[tuple[str, int]]) -> Listing:
    found = {label for _, label in samples}
    empty = [c for i, c in enumerate(class_dirs) if i not in found]
    if empty:
        # ImageFolder itself refuses empty classes: their indices would shift every later label.
        raise ImageNetLayoutError(
            f"{len(empty)} of the {len(class_dirs)} subfolders of {root} hold no images: {_preview(empty)}. "
            "Every subfolder is read as a class (as ImageFolder does); remove the stray folders or restore their images."
        )
    return Listing(root, [Path(p) for p, _ in samples], [label for _, label in samples], class_dirs, LAYOUT_CLASS_FOLDERS, None)


def _flat_listing(root: Path, names: list[str], labels_file: str | Path | None) -> Listing:
    if labels_file is None:
        labels_path = find_labels_file(root)
        if labels_path is None:
            raise ImageNetLayoutError(
                f"{root} holds {len(names)} images directly inside it (flat layout) but no label file was found: "
                f"looked for {KAGGLE_LABELS}, {DEVKIT_LABELS} and {DEVKIT_DIR}/data/{DEVKIT_LABELS} in it and up to "
                f"{LABEL_SEARCH_LEVELS} levels above it."
            )
    else:
        labels_path = Path(labels_file).expanduser()
        if not labels_path.is_file():
            raise ImageNetLayoutError(f"Label file {labels_path} does not exist.")

    wnid_of, classes = read_labels_file(labels_path)
    missing = [n for n in names if _stem(n) not in wnid_of]
    if missing:
        raise ImageNetLayoutError(
            f"Label file {labels_path} has no entry for {len(missing)} of the {len(names)} images in {root}: "
            f"{_preview(missing)}. Use the label file that belongs to these images."
        )
    class_to_idx = {c: i for i, c in enumerate(classes)}
    # Class-folder order of the same images: by class (sorted wnid), then by file name.
    keyed = sorted((wnid_of[_stem(n)], n) for n in names)
    return Listing(
        root,
        [root / n for _, n in keyed],
        [class_to_idx[w] for w, _ in keyed],
        classes,
        LAYOUT_FLAT,
        labels_path,
    )


def find_labels_file(root: str | Path) -> Path | None:
    """The first flat-layout label file in ``root`` or up to ``LABEL_SEARCH_LEVELS`` levels above it."""
    here = Path(root).expanduser().absolute()
    for folder in [here, *here.parents][: LABEL_SEARCH_LEVELS + 1]:
        # Kaggle's CSV first: it needs nothing else, while the devkit file also needs meta.mat.
        for candidate in (folder / KAGGLE_LABELS, folder / DEVKIT_LABELS, folder / DEVKIT_DIR / "data" / DEVKIT_LABELS):
            if candidate.is_file():
                return candidate
    return None


def read_labels_file(path: str | Path) -> tuple[dict[str, str], list[str]]:
    """Image stem (``ILSVRC2012_val_00000001``) → wnid, and the sorted class list, from either format."""
    path = Path(path)
    with open(path, newline="") as f:
        first = f.readline()
    if path.suffix.lower() == ".csv" or first.startswith("ImageId"):
        return _read_kaggle_labels(path)
    return _read_devkit_labels(path)


def _read_kaggle_labels(path: Path) -> tuple[dict[str, str], list[str]]:
    wnid_of: dict[str, str] = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"ImageId", "PredictionString"} <= set(reader.fieldnames):
            raise ImageNetLayoutError(
                f"{path} is not Kaggle's {KAGGLE_LABELS}: expected the columns ImageId,PredictionString, "
                f"found {reader.fieldnames}."
            )
        for row in reader:
            tokens = (row["PredictionString"] or "").split()
            if not tokens:
                raise ImageNetLayoutError(f"{path}: image {row['ImageId']} has an empty PredictionString.")
            # "n01751748 1 2 3 4 n01751748 …": boxes of one class; its wnid comes first.
            wnid_of[_stem(row["ImageId"])] = tokens[0]
    return wnid_of, sorted(set(wnid_of.values()))


_VAL_NUMBER = re.compile(r"ILSVRC2012_val_(\d+)$")


def _read_devkit_labels(path: Path) -> tuple[dict[str, str], list[str]]:
    try:
        ids = [int(line) for line in path.read_text().split()]
    except ValueError:
        raise ImageNetLayoutError(
            f"{path} is neither Kaggle's {KAGGLE_LABELS} (CSV) nor the devkit's {DEVKIT_LABELS} (one integer per line)."
        ) from None
    meta = _find_meta_mat(path)
    if meta is None:
        raise ImageNetLayoutError(
            f"{path} gives ILSVRC2012 class ids, which need the devkit's meta.mat to become wnids; "
            f"none found beside it or in {DEVKIT_DIR}/data/ next to it or its folder."
        )
    wnid_of_id = read_meta_mat(meta)
    unknown = sorted({i for i in ids if i not in wnid_of_id})
    if unknown:
        raise ImageNetLayoutError(f"{path} uses class ids that {meta} does not define: {_preview([str(i) for i in unknown])}.")
    # Line k (1-based) is the class of ILSVRC2012_val_{k:08d}.
    wnid_of = {f"ILSVRC2012_val_{k:08d}": wnid_of_id[i] for k, i in enumerate(ids, start=1)}
    return wnid_of, sorted(set(wnid_of_id.values()))


def _find_meta_mat(labels: Path) -> Path | None:
    here = labels.parent
    for candidate in (
        here / "meta.mat",
        here / "data" / "meta.mat",
        here / DEVKIT_DIR / "data" / "meta.mat",
        here.parent / "data" / "meta.mat",
        here.parent / DEVKIT_DIR / "data" / "meta.mat",
    ):
        if candidate.is_file():
            return candidate
    return None


def read_meta_mat(path: str | Path) -> dict[int, str]:
    """ILSVRC2012_ID → wnid for the devkit's leaf synsets (the 1000 classes)."""
    from scipy.io import loadmat  # only the devkit layout needs scipy

    synsets = np.atleast_1d(loadmat(str(path), squeeze_me=True)["synsets"])
    fields = synsets.dtype.names or ()
    if not {"ILSVRC2012_ID", "WNID"} <= set(fields):
        raise ImageNetLayoutError(f"{path} is not the devkit's meta.mat: its `synsets` has fields {fields}.")
    out = {}
    for s in synsets:
        # The leaves of the synset tree are the classes (the devkit numbers them 1…1000).
        leaf = int(s["num_children"]) == 0 if "num_children" in fields else int(s["ILSVRC2012_ID"]) <= 1000
        if leaf:
            out[int(s["ILSVRC2012_ID"])] = str(s["WNID"])
    return out


def _stem(name: str) -> str:
    # "ILSVRC2012_val_00000001.JPEG" and Kaggle's extension-less ImageId share the stem.
    return name.rsplit(".", 1)[0] if "." in name else name


def _preview(items: Sequence[str], k: int = 5) -> str:
    shown = ", ".join(items[:k])
    return f"{shown}, … ({len(items)} in all)" if len(items) > k else shown


# ----------------------------------------------------------------------------------------------
# The subset


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


# ----------------------------------------------------------------------------------------------
# Decoding


@functools.lru_cache(maxsize=4)
def _transform(resize: int, crop: int, interpolation: str = STUDY_INTERPOLATION) -> transforms.Compose:
    # The authors' transforms (Resize on PIL: bilinear, antialiased), minus ToTensor's /255,
    # which the model input transform applies later (uint8 / 255 is bitwise what ToTensor gives).
    # timm's evaluation transform is the same Resize and CenterCrop with its own size and filter.
    resize_step = transforms.Resize(resize, interpolation=transforms.InterpolationMode(interpolation))
    return transforms.Compose([resize_step, transforms.CenterCrop(crop), transforms.PILToTensor()])


def preprocess(path: str | Path, resize: int = 256, crop: int = 224, interpolation: str = STUDY_INTERPOLATION) -> torch.Tensor:
    """One image as uint8 3×crop×crop: RGB, shorter side resized to ``resize`` with
    ``interpolation`` (a name of ``layercrit.pipelines.INTERPOLATIONS``), center crop."""
    try:
        # ImageFolder's pil_loader: open, convert to RGB (grayscale, CMYK, palette → RGB).
        with Image.open(path) as img:
            rgb = img.convert("RGB")
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError… for broken files
        raise ImageDecodeError(
            f"Cannot decode image {path}: {type(e).__name__}: {e}. The file is corrupt, truncated or not an image."
        ) from e
    return _transform(resize, crop, interpolation)(rgb)


def _decode_chunk(paths: list[str], resize: int, crop: int, interpolation: str) -> np.ndarray:
    # numpy, not torch, across the process boundary: torch would pass tensors through shared
    # memory file descriptors, which a long run with many chunks does not need.
    return torch.stack([preprocess(p, resize, crop, interpolation) for p in paths]).numpy()


def _worker_init() -> None:
    # One decoding process per core; torch's own thread pool would only oversubscribe them.
    torch.set_num_threads(1)


def default_workers() -> int:
    """The cores this process may use (respects Slurm/cgroup CPU affinity)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def decode_images(
    paths: Sequence[str | Path],
    *,
    resize: int = 256,
    crop: int = 224,
    interpolation: str = STUDY_INTERPOLATION,
    workers: int | None = None,
    progress: bool = True,
    chunk_size: int = 32,
    desc: str = "decoding images",
) -> torch.Tensor:
    """Decode ``paths`` into one preallocated uint8 N×3×crop×crop tensor, in parallel processes.

    A process pool with chunks of up to ``chunk_size`` images and at most two chunks per worker
    in flight, so memory stays at the output tensor plus a few chunks. ``workers`` ≤ 1 decodes in
    this process. ``desc`` labels the progress bar.
    """
    n = len(paths)
    images = torch.empty((n, 3, crop, crop), dtype=torch.uint8)
    workers = default_workers() if workers is None else workers
    bar = _progress_bar(n, progress, desc)
    # Small sets are still spread over all workers (at least two chunks each).
    chunk_size = max(1, min(chunk_size, -(-n // (2 * max(workers, 1)))))
    try:
        if workers <= 1 or n <= 1:
            for i, p in enumerate(paths):
                images[i] = preprocess(p, resize, crop, interpolation)
                bar.update(1)
            return images
        starts = iter(range(0, n, chunk_size))
        with cf.ProcessPoolExecutor(max_workers=workers, initializer=_worker_init) as pool:
            pending: dict[cf.Future, int] = {}
            try:
                while True:
                    while len(pending) < 2 * workers and (start := next(starts, None)) is not None:
                        chunk = [str(p) for p in paths[start : start + chunk_size]]
                        pending[pool.submit(_decode_chunk, chunk, resize, crop, interpolation)] = start
                    if not pending:
                        break
                    done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                    for future in done:
                        start = pending.pop(future)
                        block = torch.from_numpy(future.result())
                        images[start : start + len(block)] = block
                        bar.update(len(block))
            except BaseException:
                # Stop queued work at once (a corrupt file, Ctrl-C) instead of finishing it.
                pool.shutdown(wait=False, cancel_futures=True)
                raise
        return images
    finally:
        bar.close()


def _progress_bar(total: int, enabled: bool, desc: str):
    from tqdm import tqdm

    # The rate (img/s) is what tells whether decoding is I/O- or CPU-bound.
    return tqdm(total=total, unit="img", desc=desc, file=sys.stderr, disable=not enabled, smoothing=0.1)


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
        _HINT,
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
