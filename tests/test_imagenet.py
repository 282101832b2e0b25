"""ImageNet validation data: listing (both layouts), the paper's subset, preprocessing, the prepared file.

A small fake ImageNet is generated with PIL (5 classes, varied sizes and image modes) in three
layouts: class folders, flat with Kaggle's LOC_val_solution.csv, flat with the devkit's ground
truth + meta.mat. The reference for order and labels is torchvision's ImageFolder itself.
"""

from __future__ import annotations

import csv
import hashlib
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torchvision import transforms

from layercrit.data import load_image_set
from layercrit.imagenet import (
    ImageDecodeError,
    ImageNetLayoutError,
    list_validation_images,
    paper_subset_indices,
    prepare_validation_set,
    preprocess,
    read_metadata,
    scan_validation_folder,
    sidecar_path,
)

WNIDS = ["n01440764", "n01443537", "n01484850", "n01491361", "n01494475"]
COUNTS = [4, 5, 6, 7, 4]
SIZES = [(300, 200), (180, 260), (500, 375), (375, 500), (257, 256), (640, 480), (150, 150), (224, 300)]
# The devkit numbers classes in its own order, not by wnid: make the two differ.
DEVKIT_IDS = {"n01440764": 3, "n01443537": 5, "n01484850": 1, "n01491361": 4, "n01494475": 2}
# First indices of DataLoader(range(50000), shuffle=True, generator=Generator().manual_seed(0)),
# printed once with torch 2.15; a guard against a silent change of the subset.
PAPER_SUBSET_HEAD = [14933, 16284, 2523, 19485, 42663, 32433, 1879, 10687, 38029, 4091]


def _image(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """A smooth random picture plus noise: compresses like a photo, not like white noise."""
    w, h = size
    base = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
    arr = np.asarray(base).astype(np.int16) + rng.integers(-12, 13, (h, w, 3))
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def _save(img: Image.Image, path: Path, kind: str) -> None:
    if kind == "gray":
        img.convert("L").save(path, "JPEG", quality=90)
    elif kind == "cmyk":
        img.convert("CMYK").save(path, "JPEG", quality=90)
    elif kind == "png":  # a PNG with a .JPEG name (ImageNet's train set has one)
        img.save(path, "PNG")
    elif kind == "palette":
        img.convert("P").save(path, "PNG")
    else:
        img.save(path, "JPEG", quality=90)


@pytest.fixture(scope="session")
def fake(tmp_path_factory):
    """Class folders, Kaggle-flat and devkit-flat copies of the same 26 images."""
    base = tmp_path_factory.mktemp("imagenet")
    rng = np.random.default_rng(0)
    n = sum(COUNTS)
    numbers = rng.permutation(np.arange(1, n + 1))  # file numbers interleave across classes
    kinds = {3: "gray", 8: "cmyk", 13: "png", 20: "palette"}
    folders = base / "folders" / "val"
    wnid_of_number: dict[int, str] = {}
    k = 0
    for wnid, count in zip(WNIDS, COUNTS):
        (folders / wnid).mkdir(parents=True)
        for _ in range(count):
            number = int(numbers[k])
            wnid_of_number[number] = wnid
            _save(_image(rng, SIZES[k % len(SIZES)]), folders / wnid / f"ILSVRC2012_val_{number:08d}.JPEG", kinds.get(k, "rgb"))
            k += 1

    # Kaggle: ILSVRC/Data/CLS-LOC/val/*.JPEG, the CSV four levels above.
    kaggle = base / "kaggle" / "ILSVRC" / "Data" / "CLS-LOC" / "val"
    devkit = base / "devkit" / "val"
    for flat in (kaggle, devkit):
        flat.mkdir(parents=True)
        for f in folders.glob("*/*.JPEG"):
            shutil.copyfile(f, flat / f.name)
    rows = sorted(wnid_of_number.items(), key=lambda item: -item[0])  # any row order
    with open(base / "kaggle" / "LOC_val_solution.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["ImageId", "PredictionString"])
        for number, wnid in rows:
            writer.writerow([f"ILSVRC2012_val_{number:08d}", f"{wnid} 10 20 110 120 {wnid} 1 2 3 4 "])

    data = base / "devkit" / "ILSVRC2012_devkit_t12" / "data"
    data.mkdir(parents=True)
    (data / "ILSVRC2012_validation_ground_truth.txt").write_text(
        "".join(f"{DEVKIT_IDS[wnid_of_number[i]]}\n" for i in range(1, n + 1))
    )
    _write_meta_mat(data / "meta.mat")
    return {"folders": folders, "kaggle": kaggle, "devkit": devkit, "base": base}


def _write_meta_mat(path: Path) -> None:
    """The devkit's meta.mat: a struct array `synsets`, leaves (num_children 0) are the classes."""
    from scipy.io import savemat

    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children", "wordnet_height", "num_train_images"]
    synsets = np.empty((len(DEVKIT_IDS) + 1,), dtype=[(f, "O") for f in fields])
    for i, (wnid, ilsvrc_id) in enumerate(DEVKIT_IDS.items()):
        synsets[i] = (ilsvrc_id, wnid, "fish", "a fish", 0, np.zeros((1, 0)), 0, 1300)
    # A non-leaf synset (the devkit has 860 of them): not a class.
    synsets[-1] = (1001, "n00000001", "entity", "that which is", 2, np.array([1, 2]), 18, 0)
    savemat(str(path), {"synsets": synsets})


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _reference(path: Path) -> torch.Tensor:
    tf = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.PILToTensor()])
    return tf(Image.open(path).convert("RGB"))


# ----------------------------------------------------------------------------------------------
# Listing


def test_class_folders_match_imagefolder(fake):
    paths, labels, classes = list_validation_images(fake["folders"], expected_classes=None)
    folder = torchvision.datasets.ImageFolder(str(fake["folders"]))
    assert [(str(p), y) for p, y in zip(paths, labels)] == folder.samples
    assert classes == folder.classes == WNIDS
    assert len(paths) == sum(COUNTS)


def test_imagefolder_quirks(tmp_path):
    """Nested folders, extension case, non-image files, symlinked class: as ImageFolder does."""
    rng = np.random.default_rng(1)
    root = tmp_path / "val"
    for name in ["n02/b.JPEG", "n02/a.jpg", "n02/C.JpEg", "n02/sub/z.png", "n02/notes.txt", "n01/x.webp", "n01/y.JPEG.bak"]:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        _image(rng, (40, 30)).save(root / name, "PNG" if not name.endswith(("JPEG", "jpg", "JpEg")) else "JPEG")
    (tmp_path / "elsewhere").mkdir()
    _image(rng, (40, 30)).save(tmp_path / "elsewhere" / "q.jpeg")
    (root / "n03").symlink_to(tmp_path / "elsewhere")
    paths, labels, classes = list_validation_images(root, expected_classes=None)
    folder = torchvision.datasets.ImageFolder(str(root))
    assert [(str(p), y) for p, y in zip(paths, labels)] == folder.samples
    assert classes == folder.classes == ["n01", "n02", "n03"]


@pytest.mark.parametrize("layout", ["kaggle", "devkit"])
def test_flat_layout_equals_class_folders(fake, layout):
    """Same files, same order, same labels: the subset picks the same images in every layout."""
    ref_paths, ref_labels, ref_classes = list_validation_images(fake["folders"], expected_classes=None)
    listing = scan_validation_folder(fake[layout], expected_classes=None)  # label file auto-detected
    assert listing.layout == "flat"
    assert listing.labels_file.name == ("LOC_val_solution.csv" if layout == "kaggle" else "ILSVRC2012_validation_ground_truth.txt")
    assert [p.name for p in listing.paths] == [p.name for p in ref_paths]
    assert [_digest(p) for p in listing.paths] == [_digest(p) for p in ref_paths]
    assert listing.labels == ref_labels
    assert listing.classes == ref_classes  # the non-leaf synset of meta.mat is not a class
    # An explicit label file gives the same.
    explicit = list_validation_images(fake[layout], listing.labels_file, expected_classes=None)
    assert explicit == (listing.paths, listing.labels, listing.classes)


# ----------------------------------------------------------------------------------------------
# The subset


def test_subset_is_what_the_authors_dataloader_yields():
    n, batch, batches = 50_000, 500, 20
    loader = torch.utils.data.DataLoader(range(n), batch_size=batch, shuffle=True, generator=torch.Generator().manual_seed(0))
    it = iter(loader)
    from_loader = torch.cat([next(it) for _ in range(batches)]).tolist()
    subset = paper_subset_indices(n, batch * batches, seed=0)
    assert subset == from_loader
    assert subset[: len(PAPER_SUBSET_HEAD)] == PAPER_SUBSET_HEAD
    assert len(set(subset)) == 10_000
    # PAPER.md's shorthand randperm(...)[:10000] is a different subset: the DataLoader draws its
    # workers' base seed from the generator before it shuffles.
    naive = torch.randperm(n, generator=torch.Generator().manual_seed(0))[:10_000].tolist()
    assert naive != subset


def test_subset_options():
    assert paper_subset_indices(7, None) == list(range(7))
    full = paper_subset_indices(7, 7, seed=3)
    assert sorted(full) == list(range(7))
    assert paper_subset_indices(7, 4, seed=3) == full[:4]  # a prefix of the same shuffle
    assert paper_subset_indices(7, 4, seed=4) != full[:4]
    with pytest.raises(ValueError, match="n_subset"):
        paper_subset_indices(7, 8)
    with pytest.raises(ValueError, match="n_subset"):
        paper_subset_indices(7, 0)


# ----------------------------------------------------------------------------------------------
# Preprocessing and the prepared file


def test_preprocess_is_torchvision_bitwise(fake):
    paths = sorted(fake["folders"].glob("*/*.JPEG"))
    modes = {Image.open(p).mode for p in paths}
    assert {"L", "CMYK", "P", "RGB"} <= modes
    for p in paths:
        x = preprocess(p)
        assert x.dtype == torch.uint8 and x.shape == (3, 224, 224)
        assert torch.equal(x, _reference(p)), p
    assert preprocess(paths[0], resize=64, crop=56).shape == (3, 56, 56)


def test_prepare_validation_set(fake, tmp_path):
    root = fake["folders"]
    paths, labels, classes = list_validation_images(root, expected_classes=None)
    out = tmp_path / "eval.safetensors"
    summary = prepare_validation_set(root, out, n_subset=10, seed=0, workers=2, progress=False, expected_classes=None)
    subset = paper_subset_indices(len(paths), 10, 0)
    stored = load_image_set(out)
    assert torch.equal(stored.images, torch.stack([preprocess(paths[i]) for i in subset]))
    assert stored.labels.tolist() == [labels[i] for i in subset]
    meta = read_metadata(out)
    assert meta["files"] == [paths[i].relative_to(root).as_posix() for i in subset]
    assert meta["files"][0].split("/")[0] == classes[stored.labels[0]]
    assert (meta["layout"], meta["n_total"], meta["n_subset"], meta["seed"]) == ("class_folders", len(paths), 10, 0)
    assert (meta["resize"], meta["crop"], meta["classes"], meta["files_sidecar"]) == (256, 224, WNIDS, None)
    assert summary["n_images"] == 10 and summary["layout"] == "class_folders"

    # Another subset: different images, still the DataLoader's first ones for that seed.
    again = prepare_validation_set(root, out, n_subset=6, seed=1, workers=1, progress=False, expected_classes=None)
    other = paper_subset_indices(len(paths), 6, 1)
    assert other != subset[:6] and again["n_images"] == 6
    stored = load_image_set(out)
    assert torch.equal(stored.images, torch.stack([preprocess(paths[i]) for i in other]))
    assert stored.labels.tolist() == [labels[i] for i in other]
    assert read_metadata(out)["files"] == [paths[i].relative_to(root).as_posix() for i in other]


def test_prepared_set_equals_the_authors_loader(fake, tmp_path):
    """End to end against the authors' pipeline: ImageFolder + ToTensor, seeded shuffled DataLoader."""
    tf = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor()])
    folder = torchvision.datasets.ImageFolder(str(fake["folders"]), transform=tf)
    loader = torch.utils.data.DataLoader(folder, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(5))
    it = iter(loader)
    batches = [next(it) for _ in range(3)]
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    # The Kaggle-flat copy: layout must not matter.
    prepare_validation_set(fake["kaggle"], tmp_path / "e.st", n_subset=12, seed=5, workers=2, progress=False, expected_classes=None)
    stored = load_image_set(tmp_path / "e.st")
    assert torch.equal(stored.images.float().div(255), x)
    assert torch.equal(stored.labels, y)


def test_all_images_in_imagefolder_order(fake, tmp_path):
    out = tmp_path / "all.st"
    prepare_validation_set(fake["devkit"], out, n_subset=None, workers=0, progress=False, expected_classes=None, resize=40, crop=32)
    paths, labels, _ = list_validation_images(fake["devkit"], expected_classes=None)
    stored = load_image_set(out)
    assert stored.images.shape == (len(paths), 3, 32, 32)
    assert stored.labels.tolist() == labels
    assert torch.equal(stored.images[5], preprocess(paths[5], 40, 32))
    assert read_metadata(out)["files"] == [p.name for p in paths]


def test_file_list_sidecar(fake, tmp_path, monkeypatch):
    import layercrit.imagenet.prepare as imagenet

    monkeypatch.setattr(imagenet, "HEADER_BUDGET", 100)  # pretend the header would be too large
    out = tmp_path / "eval.safetensors"
    summary = prepare_validation_set(fake["folders"], out, n_subset=3, workers=0, progress=False, expected_classes=None)
    sidecar = sidecar_path(out)
    assert summary["files_sidecar"] == str(sidecar) and sidecar.name == "eval.safetensors.files.txt"
    meta = read_metadata(out)
    assert meta["files_sidecar"] == sidecar.name and len(meta["files"]) == 3
    assert meta["files"] == sidecar.read_text().splitlines()
    monkeypatch.setattr(imagenet, "HEADER_BUDGET", 50_000_000)
    prepare_validation_set(fake["folders"], out, n_subset=3, workers=0, progress=False, expected_classes=None)
    assert not sidecar.exists()  # a stale sidecar would contradict the header


# ----------------------------------------------------------------------------------------------
# Errors


def _layout_error(root, **kwargs) -> str:
    with pytest.raises(ImageNetLayoutError) as info:
        list_validation_images(root, **kwargs)
    message = str(info.value)
    assert "imagenet_val" in message and "class folders" in message  # says what to set and what is accepted
    return message


def test_errors_name_the_problem_and_the_fix(fake, tmp_path):
    assert "does not exist" in _layout_error(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    assert "No images" in _layout_error(tmp_path / "empty")

    flat = tmp_path / "a" / "val"
    flat.mkdir(parents=True)
    for f in sorted(fake["kaggle"].glob("*.JPEG"))[:3]:
        shutil.copyfile(f, flat / f.name)
    message = _layout_error(flat, expected_classes=None)
    assert "no label file" in message and "LOC_val_solution.csv" in message

    partial = tmp_path / "partial.csv"
    partial.write_text("ImageId,PredictionString\nILSVRC2012_val_00099999,n01440764 1 2 3 4\n")
    message = _layout_error(flat, labels_file=partial, expected_classes=None)
    assert "no entry for 3 of the 3 images" in message
    assert "does not exist" in _layout_error(flat, labels_file=tmp_path / "nope.csv", expected_classes=None)

    message = _layout_error(fake["folders"])  # expected_classes=1000 by default
    assert "Found 5 class folders" in message and "expected 1000" in message
    assert "Found 5 classes in" in _layout_error(fake["kaggle"])

    mixed = tmp_path / "mixed"
    shutil.copytree(fake["folders"], mixed)
    shutil.copyfile(next(fake["kaggle"].glob("*.JPEG")), mixed / "stray.JPEG")
    assert "both 1 images directly inside it" in _layout_error(mixed, expected_classes=None)
    shutil.rmtree(mixed / WNIDS[0])
    (mixed / "stray.JPEG").unlink()
    (mixed / "n09999999").mkdir()
    assert "hold no images: n09999999" in _layout_error(mixed, expected_classes=None)

    devkit = tmp_path / "devkit"
    shutil.copytree(fake["devkit"].parent, devkit)
    (devkit / "ILSVRC2012_devkit_t12" / "data" / "meta.mat").unlink()
    assert "need the devkit's meta.mat" in _layout_error(devkit / "val", expected_classes=None)

    with pytest.raises(ImageNetLayoutError, match="Asked for 100 images but .* holds only 26"):
        prepare_validation_set(fake["folders"], tmp_path / "x.st", n_subset=100, progress=False, expected_classes=None)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_image_names_the_file(fake, tmp_path, damage):
    root = tmp_path / "val"
    shutil.copytree(fake["folders"], root)
    victim = sorted(root.glob("*/*.JPEG"))[7]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"not a jpeg" * 50)
    with pytest.raises(ImageDecodeError, match=f"Cannot decode image {re.escape(str(victim))}"):
        # All images, two worker processes: the error crosses the process boundary intact.
        prepare_validation_set(root, tmp_path / "x.st", n_subset=None, workers=2, progress=False, expected_classes=None)
    assert not (tmp_path / "x.st").exists()


def test_an_own_folders_data_job_speaks_of_data_root_not_imagenet(fake, tmp_path, capfd):
    """Issue 30 L3: the progress bar, a broken image's advice and a layout error of an own folder
    (data.kind folder) name data.root; ImageNet's keep their words."""
    root = tmp_path / "mine"
    shutil.copytree(fake["folders"], root)
    prepare_validation_set(root, tmp_path / "ok.st", n_subset=None, workers=0, expected_classes=None, kind="image_folder")
    assert "decoding images of data.root" in capfd.readouterr().err
    victim = sorted(root.glob("*/*.JPEG"))[3]
    victim.write_bytes(b"not a jpeg" * 50)
    with pytest.raises(ImageDecodeError) as error:
        prepare_validation_set(root, tmp_path / "x.st", n_subset=None, workers=0, progress=False, expected_classes=None, kind="image_folder")
    assert "move it out of data.root" in str(error.value) and "ImageNet" not in str(error.value) and "archive" not in str(error.value)
    with pytest.raises(ImageNetLayoutError) as error:
        prepare_validation_set(tmp_path / "gone", tmp_path / "x.st", progress=False, expected_classes=None, kind="image_folder")
    assert "data.root (data.kind folder) must hold one subfolder per class" in str(error.value) and "imagenet" not in str(error.value).lower()
    with pytest.raises(ImageDecodeError, match="Restore it from the original archive"):
        prepare_validation_set(root, tmp_path / "x.st", n_subset=None, workers=0, expected_classes=None)
    assert "decoding ImageNet val" in capfd.readouterr().err
