"""Where the validation images are and which class each is: the folder's layout, found and
checked, and the images listed in ImageFolder order.

Accepted layouts of the validation folder:

- class folders: ``val/<wnid>/*.JPEG`` (what the usual ``valprep.sh`` produces);
- flat: ``val/ILSVRC2012_val_00000001.JPEG`` … plus a label file, either Kaggle's
  ``LOC_val_solution.csv`` or the devkit's ``ILSVRC2012_validation_ground_truth.txt`` with its
  ``meta.mat``. The flat layout is ordered exactly as the class-folder layout of the same images
  would be (by wnid, then file name), so both give the same subset.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension, make_dataset


KAGGLE_LABELS = "LOC_val_solution.csv"
DEVKIT_LABELS = "ILSVRC2012_validation_ground_truth.txt"
DEVKIT_DIR = "ILSVRC2012_devkit_t12"
IMAGENET_VAL_IMAGES = 50_000
# Auto-detection of a flat layout's label file looks in the folder and this many levels above:
# Kaggle's archive keeps LOC_val_solution.csv four levels above ILSVRC/Data/CLS-LOC/val.
LABEL_SEARCH_LEVELS = 4

LAYOUT_CLASS_FOLDERS = "class_folders"
LAYOUT_FLAT = "flat"

LAYOUT_HINT = (
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

    def __init__(self, problem: str, hint: str = LAYOUT_HINT) -> None:
        super().__init__(f"{problem}\n{hint}")
        self.problem = problem


@dataclass(frozen=True)
class Listing:
    """The validation images in ImageFolder order, with how they were found."""

    root: Path
    paths: list[Path]
    labels: list[int]
    classes: list[str]
    layout: str
    labels_file: Path | None


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
