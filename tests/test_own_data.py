"""Issue 22 item 2: one's own images (data.kind folder): any class-folder tree, classes from its
folders, every image by default; counts checked while the workflow is parsed, with the right
advice; ImageNet's settings on such a folder stop there too."""

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, run_snakemake, tiny_study
from support.config_cases import assert_config_fails, break_config


def own_folder(root, classes=10, per_class=3, size=(40, 36)):
    """A class-folder tree of generated JPEGs (class names that are not WordNet ids)."""
    rng = np.random.default_rng(0)
    for c in range(classes):
        folder = root / f"class_{c:02d}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"img{i}.jpg", quality=90)
    return root


def folder_study(workdir, **data):
    """The demo's zoo (its recorded checkpoints: nothing trains on own images) on an own folder."""
    path = tiny_study(workdir)
    break_config(
        path,
        lambda c: c.update(
            zoo=str(REPO / "config/zoo/demo.yaml"),
            training={**c["training"], "retrain": False},
            data={"kind": "folder", "root": str(workdir / "images"), "resize": 36, "crop": 32, **data},
        ),
    )
    return path


def test_torchvisions_image_extensions_are_the_parse_time_ones():
    from torchvision.datasets.folder import IMG_EXTENSIONS

    from layercrit.study.image_folders import IMAGE_EXTENSIONS

    assert IMAGE_EXTENSIONS == IMG_EXTENSIONS


def test_an_own_folder_of_ten_classes_plans_every_image(workdir):
    own_folder(workdir / "images")
    path = folder_study(workdir)
    run_snakemake(workdir, "--configfile", str(path), "-n")


@pytest.mark.parametrize(
    "setup, data, expected",
    [
        (lambda w: own_folder(w / "images"), {"subset_size": 10000}, ["data.subset_size: 10000 images asked for", "holds 30", "at most 30, or to null"]),
        (lambda w: own_folder(w / "images", classes=8), {}, ["10 outputs (kwargs.num_classes)", "8 classes (the class folders of data.root", "num_classes to 8"]),
        (lambda w: (own_folder(w / "images"), (w / "images/stray").mkdir()), {}, ["1 of the 11 subfolders", "['stray']"]),
        (lambda w: None, {"root": "nowhere"}, ["data.root: 'nowhere' is not a directory"]),
        (lambda w: (own_folder(w / "images"), (w / "images/class_03/img0.jpg").rename(w / "images/stray.JPG")), {},
         ["data.root: ", "holds 1 image(s) directly in it, beside its 10 class folders: ['stray.JPG']", "move these into their class folders"]),
    ],
    ids=["subset larger than the folder", "other classes than outputs", "empty class folder", "missing folder", "image beside the class folders"],
)
def test_an_own_folder_that_cannot_serve_stops_at_parse_time(workdir, setup, data, expected):
    setup(workdir)
    assert_config_fails(workdir, folder_study(workdir, **data), expected)


def test_imagenet_settings_on_an_own_folder_name_the_folder_kind(workdir):
    own_folder(workdir / "images")
    path = folder_study(workdir)
    break_config(path, lambda c: c.update(data={"kind": "imagenet"}, imagenet_val=str(workdir / "images")))
    assert_config_fails(workdir, path, ["has 10 class folders, but ImageNet-1k has 1000", "use data.kind: folder"])
    break_config(path, lambda c: c.update(data={"kind": "imagenet", "expected_classes": None}))
    assert_config_fails(workdir, path, ["data.subset_size: 10000 images asked for", "holds 30"])


@pytest.mark.slow
def test_a_study_on_an_own_folder_evaluates_every_image(workdir):
    import json

    from layercrit.imagenet import read_metadata

    own_folder(workdir / "images", per_class=2)
    path = folder_study(workdir)
    break_config(path, lambda c: (c.update(models=["demo_baseline"]), c["reset"].update(seeds=[0], layers={"include": ["fc"]})))
    run_snakemake(workdir, "--configfile", str(path), "--cores", "2")
    meta = read_metadata(workdir / "results/tiny/data/eval.safetensors")
    assert meta["kind"] == "image_folder" and meta["n_images"] == 20 and meta["classes"][0] == "class_00"
    result = json.loads((workdir / "results/tiny/resets/randomize/demo_baseline/fc/seed0.json").read_text())
    assert result["n_images"] == 20


def test_models_that_train_here_need_the_generated_training_images(workdir):
    own_folder(workdir / "images")
    path = folder_study(workdir)
    break_config(path, lambda c: c["training"].update(retrain=True))
    assert_config_fails(workdir, path, ["train here (zoo source kind train), which needs the generated training images", "'folder'"])
