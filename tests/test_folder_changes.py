"""Issue 30 H3, H4: an image folder is no file Snakemake can watch, so its listing (every image's
path, size and modification time) is a param of the data jobs. Images added, replaced or removed
prepare the evaluation data again; every per-model pipeline file comes from one listing, and the
tables refuse files that hold other images."""

import json
import os
import shutil

import pytest
import torch

from conftest import run_snakemake, standin_imagenet
from support.config_cases import break_config
from test_input_pipelines import RESNET_INPUT, pipeline_study
from test_own_data import folder_study, own_folder

EVAL = "results/tiny/data/eval.safetensors"


def plan(workdir, path, *targets):
    """A dry run's output (stdout and stderr)."""
    proc = run_snakemake(workdir, "--configfile", str(path), "-n", "--logger-layercrit-jobs", *targets)
    return proc.stdout + proc.stderr


def test_images_added_replaced_or_removed_prepare_the_evaluation_data_again(workdir):
    images = own_folder(workdir / "images")
    path = folder_study(workdir)
    run_snakemake(workdir, "--configfile", str(path), "--cores", "1", EVAL)
    assert "Nothing to be done" in plan(workdir, path, EVAL)
    victim = images / "class_04/img1.jpg"
    kept = victim.read_bytes(), victim.stat()
    old = (kept[1].st_atime_ns, kept[1].st_mtime_ns - 10**12)  # an older file, as cp -p or rsync -a leave it

    def restore():
        victim.write_bytes(kept[0])
        os.utime(victim, ns=(kept[1].st_atime_ns, kept[1].st_mtime_ns))

    changes = {
        "added": lambda: (shutil.copy(victim, images / "class_04/img9.jpg"), os.utime(images / "class_04/img9.jpg", ns=old)),
        "replaced": lambda: (victim.write_bytes((images / "class_07/img0.jpg").read_bytes()), os.utime(victim, ns=old)),
        "removed": victim.unlink,
    }
    for change, make in changes.items():
        make()
        output = plan(workdir, path, EVAL)
        assert "rule image_folder:" in output and "Params have changed" in output, change
        assert f"the images of {images} have changed since {EVAL} was prepared" in output, change
        if change == "added":  # issue 30 L6: where params do not trigger re-runs, the plan says so
            output = plan(workdir, path, EVAL, "--rerun-triggers", "mtime")
            assert "Nothing to be done" in output and f"leaves out params, so nothing is made again: add params, or --forcerun {EVAL}" in output
        (images / "class_04/img9.jpg").unlink(missing_ok=True)
        restore()
    # the folder as it was: nothing to do (the listing is of the images, not of when they were looked at)
    assert "Nothing to be done" in plan(workdir, path, EVAL)


def write_prepared(path, **metadata):
    """A prepared evaluation-data file with ``metadata`` (what image_folders reads of it)."""
    from layercrit.data import ImageSet, save_image_set

    save_image_set(ImageSet(torch.zeros(1, 3, 2, 2, dtype=torch.uint8), torch.zeros(1, dtype=torch.int64)), path, metadata)


def listing_param(root, prepared):
    from layercrit.study import image_folders

    image_folders._count_images.cache_clear()
    image_folders._folder_listing.cache_clear()
    return image_folders.listing_param(root, prepared)


def test_a_file_prepared_before_listings_were_recorded_keeps_its_params_while_the_folder_is_unchanged(tmp_path):
    """Its job's recorded params have no listing: giving it one would prepare a finished study's
    data again (10,000 ImageNet images, and every result after them) for nothing."""
    images = own_folder(tmp_path / "images", classes=2)
    prepared = tmp_path / "eval.safetensors"
    write_prepared(prepared, n_total=6)  # what files made before issue 30 record
    assert listing_param(images, prepared).param == {} and listing_param(images, prepared).change is None
    shutil.copy2(images / "class_00/img0.jpg", images / "class_00/img7.jpg")  # an older image added
    changed = listing_param(images, prepared)
    assert set(changed.param) == {"listing_sha256"} and "(6 images then, 7 now)" in changed.change
    (images / "class_00/img7.jpg").unlink()
    (images / "class_01/img2.jpg").write_bytes(b"replaced")  # newer than the file
    assert set(listing_param(images, prepared).param) == {"listing_sha256"}
    # a file that records its listing: the digest always, and a change only where it differs
    write_prepared(prepared, n_total=6, listing_sha256=listing_param(images, prepared).param["listing_sha256"])
    assert listing_param(images, prepared).change is None
    assert listing_param(images, tmp_path / "not_yet.safetensors").change is None


def test_the_listing_of_the_papers_imagenet_folder_costs_a_fraction_of_a_second(tmp_path):
    """What every parse pays when a data job is planned: one stat per image (50,000 here)."""
    import time

    from layercrit.study import image_folders

    val = standin_imagenet(tmp_path / "val", classes=1000, per_class=50)
    started = time.perf_counter()
    listing = image_folders.folder_listing(val)
    elapsed = time.perf_counter() - started
    assert listing.n_images == 50_000
    assert elapsed < 3, f"{elapsed:.2f} s"  # 0.24 s measured on a 2-core CI machine


def test_a_model_added_later_gets_its_pipeline_file_from_the_same_listing_as_the_others(workdir):
    """Issue 30 H3: the folder changed after the first model's pipeline file was prepared; adding
    a model with another pipeline prepares every pipeline file again, not only the new one."""
    images = own_folder(workdir / "images", per_class=2)
    path = pipeline_study(workdir, {"demo_baseline": RESNET_INPUT}, models=("demo_baseline",), resize=36, crop=32)
    first = "results/tiny/data/eval-bilinear-resize40-crop32.safetensors"
    run_snakemake(workdir, "--configfile", str(path), "--cores", "1", first)
    shutil.copy(images / "class_00/img0.jpg", images / "class_00/img5.jpg")
    break_config(path, lambda c: c.update(models=["demo_baseline", "demo_vit"]))
    output = plan(workdir, path, first, "results/tiny/data/eval-bicubic-resize35-crop32.safetensors")
    assert output.count("rule pipeline_images:") == 2, output[-3000:]
    assert f"since {first} was prepared (20 images then, 21 now)" in output


def test_a_pipeline_job_refuses_a_folder_that_changed_after_planning(tmp_path):
    from layercrit.imagenet import ImageNetLayoutError, prepare_pipeline_images
    from layercrit.study.pipelines import InputPipeline

    images = own_folder(tmp_path / "images", classes=2)
    data = {"kind": "folder", "root": str(images), "subset_size": None, "subset_seed": 0, "listing_sha256": "0" * 64}
    with pytest.raises(ImageNetLayoutError, match="changed after the workflow was planned .* run the workflow again"):
        prepare_pipeline_images(data, tmp_path / "eval.safetensors", InputPipeline(36, 32), imagenet_val=None, workers=0)
    assert not (tmp_path / "eval.safetensors").exists()


def test_the_tables_refuse_pipeline_files_that_hold_other_images(tmp_path):
    """Two pipeline files made from the folder at different times (one image more in the second)."""
    from layercrit.imagenet import prepare_pipeline_images, read_metadata
    from layercrit.study.pipelines import InputPipeline
    from layercrit.analysis.readback import check_one_image_set

    images = own_folder(tmp_path / "images", classes=2)
    data = {"kind": "folder", "root": str(images), "subset_size": None, "subset_seed": 0}
    a, b, c = (tmp_path / f"eval-{n}.safetensors" for n in "abc")
    prepare_pipeline_images(data, a, InputPipeline(36, 32), imagenet_val=None, workers=0)
    prepare_pipeline_images(data, c, InputPipeline(40, 32, "bicubic"), imagenet_val=None, workers=0)
    check_one_image_set([a, c])  # the same images, prepared two ways
    assert read_metadata(a)["listing_sha256"] == read_metadata(c)["listing_sha256"]
    shutil.copy(images / "class_01/img0.jpg", images / "class_01/img5.jpg")
    from layercrit.study import image_folders

    image_folders._count_images.cache_clear()
    image_folders._folder_listing.cache_clear()
    prepare_pipeline_images(data, b, InputPipeline(40, 32, "bicubic"), imagenet_val=None, workers=0)
    with pytest.raises(ValueError, match=r"eval-a.safetensors and .*eval-b.safetensors hold other images \(6 and 7 images; "
                       r"they differ in files, n_total, listing_sha256, labels\).*snakemake --forcerun pipeline_images"):  # fmt: skip
        check_one_image_set([a, b, c])
    assert json.loads(json.dumps(read_metadata(b)["files"]))[-1] == "class_01/img5.jpg"
