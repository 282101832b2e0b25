"""Issue 22 item 3: per-model input pipelines. With data.pipeline per_model each model is evaluated
on images prepared as its zoo entry's `input` or its architecture's pretrained config says (resize,
crop, interpolation), one evaluation-data file per distinct pipeline, the same images in each;
the default (study) plans what it always did: one file for every model."""

import json
import re

import pandas as pd
import pytest
import torch
import yaml
from PIL import Image
from torchvision import transforms

from conftest import REPO, run_snakemake, standin_imagenet, tiny_study
from support.config_cases import assert_config_fails, break_config, break_zoo
from test_own_data import own_folder

# The demo ResNet said to take torchvision-style bilinear input; the demo ViT (built for 32x32)
# left to its layer list's timm config: bicubic, crop_pct 0.9, so floor(32 / 0.9) = 35.
RESNET_INPUT = {"crop": 32, "resize": 40, "interpolation": "bilinear"}
PIPELINE_FILES = {"demo_baseline": "eval-bilinear-resize40-crop32", "demo_vit": "eval-bicubic-resize35-crop32"}


def pipeline_study(workdir, inputs=None, models=("demo_baseline", "demo_vit"), **data):
    """The demo zoo's recorded checkpoints on an own image folder, each model's zoo `input` from ``inputs``."""
    from layercrit.study import relocatable_zoo

    path = tiny_study(workdir)
    # the demo's own recipes: its recorded checkpoints are theirs (tiny_study shortens them)
    (workdir / "zoo.yaml").write_text(yaml.safe_dump(relocatable_zoo(REPO / "config/zoo/demo.yaml"), sort_keys=False))
    break_config(
        path,
        lambda c: c.update(
            models=list(models),
            training={**c["training"], "retrain": False},
            data={"kind": "folder", "root": str(workdir / "images"), "pipeline": "per_model", **data},
        ),
    )
    break_zoo(workdir, lambda z: [m.update(input=inputs[m["id"]]) for m in z["models"] if m["id"] in (inputs or {})])
    return path


def planned(workdir, path, *targets):
    """The jobs of a dry run: rule name → [(inputs, outputs)]."""
    proc = run_snakemake(workdir, "--configfile", str(path), "-n", "--logger-layercrit-jobs", *targets)
    jobs = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", proc.stdout):
        rule = re.match(r"(?:local)?rule (\w+):", block)
        if rule:
            files = {key: set(m.group(1).split(", ")) if (m := re.search(rf"^\s+{key}: (.*)$", block, flags=re.M)) else set() for key in ("input", "output")}
            jobs.setdefault(rule.group(1), []).append((files["input"], files["output"]))
    return jobs


def test_per_model_pipelines_prepare_one_file_per_pipeline_and_each_baseline_reads_its_own(workdir):
    from layercrit.data import load_image_set
    from layercrit.imagenet import read_metadata
    from layercrit.io import file_sha256

    own_folder(workdir / "images", classes=10, per_class=2, size=(53, 47))
    path = pipeline_study(workdir, {"demo_baseline": RESNET_INPUT}, subset_size=12)
    break_config(path, lambda c: c["reset"].update(seeds=[0], layers={"include": ["fc", "head"]}))
    results = workdir / "results/tiny"
    # the tables check every baseline against its own evaluation data (layercrit.analysis.readback)
    run_snakemake(workdir, "--configfile", str(path), "--cores", "2", "results/tiny/tables/randomize/resets.csv")
    assert sorted(p.name for p in (results / "data").glob("eval*.safetensors")) == sorted(f"{n}.safetensors" for n in PIPELINE_FILES.values())

    sets = {m: load_image_set(results / "data" / f"{name}.safetensors") for m, name in PIPELINE_FILES.items()}
    metas = {m: read_metadata(results / "data" / f"{name}.safetensors") for m, name in PIPELINE_FILES.items()}
    # the same images, in the same order, with the same labels: only their preparation differs
    assert metas["demo_baseline"]["files"] == metas["demo_vit"]["files"] and len(metas["demo_vit"]["files"]) == 12
    assert torch.equal(sets["demo_baseline"].labels, sets["demo_vit"].labels)
    assert (metas["demo_baseline"]["resize"], metas["demo_baseline"]["interpolation"]) == (40, "bilinear")
    assert (metas["demo_vit"]["resize"], metas["demo_vit"]["interpolation"]) == (35, "bicubic")
    for model, interpolation, resize in (("demo_baseline", "BILINEAR", 40), ("demo_vit", "BICUBIC", 35)):
        expected = transforms.Compose([
            transforms.Resize(resize, interpolation=getattr(transforms.InterpolationMode, interpolation)),
            transforms.CenterCrop(32),
            transforms.PILToTensor(),
        ])  # fmt: skip
        for i, name in enumerate(metas[model]["files"]):
            with Image.open(workdir / "images" / name) as img:
                assert torch.equal(sets[model].images[i], expected(img.convert("RGB"))), (model, name)

    for model, name in PIPELINE_FILES.items():
        baseline = json.loads((results / f"baselines/{model}.json").read_text())
        assert baseline["eval_data_sha256"] == file_sha256(results / "data" / f"{name}.safetensors")
        assert baseline["eval_pipeline"] == {k: metas[model][k] for k in ("resize", "crop", "interpolation")}
        reset = json.loads(next((results / f"resets/randomize/{model}").glob("*/seed0.json")).read_text())
        assert reset["eval_data_sha256"] == baseline["eval_data_sha256"]
    assert len(pd.read_csv(results / "tables/randomize/resets.csv")) == 2


def test_the_vits_pipeline_from_its_layer_list_is_timms_own_evaluation_transform():
    """The resize rule (floor(crop / crop_pct)), filter and crop of every shipped layer list's
    pretrained config, against timm's transform for that config."""
    from timm.data import resolve_data_config
    from timm.data.transforms_factory import transforms_imagenet_eval

    from layercrit.study.pipelines import model_pipeline
    from layercrit.study import read_layer_list_header

    seen = set()
    for tsv in sorted((REPO / "config/architectures").glob("*.tsv")):
        if tsv.name.endswith(".blocks.tsv"):
            continue  # a block list (mode remove), read with its layer list
        facts = read_layer_list_header(tsv).input
        if facts.get("tokens"):
            continue  # a language model: it takes tokens, not images
        ours = model_pipeline("m", None, facts, tsv.stem)
        config = resolve_data_config(pretrained_cfg={k: tuple(v) if isinstance(v, list) else v for k, v in facts.items()})
        resize, crop = transforms_imagenet_eval(config["input_size"][-1], config["crop_pct"], interpolation=config["interpolation"]).transforms[:2]
        assert (ours.resize, ours.crop, ours.interpolation) == (resize.size, crop.size[0], resize.interpolation.value), tsv.name
        seen.add(ours.name)
    assert {"bicubic-resize248-crop224", "bicubic-resize235-crop224", "bicubic-resize35-crop32"} <= seen  # ViT-S, ResNet-50, demo ViT


def test_the_interpolations_are_the_zoo_schemas_and_timms():
    from timm.data.transforms import _str_to_torch_interpolation

    from layercrit.study.pipelines import INTERPOLATIONS
    from layercrit.study import load_schema

    schema = load_schema("zoo")["properties"]["models"]["items"]["properties"]["input"]["properties"]["interpolation"]
    assert list(INTERPOLATIONS) == schema["enum"]
    assert set(INTERPOLATIONS) == set(_str_to_torch_interpolation)
    assert all(transforms.InterpolationMode(name) for name in INTERPOLATIONS)


@pytest.mark.parametrize(
    "given, arch_input, expected",
    [
        ({"crop": 32, "crop_pct": 0.875, "interpolation": "bicubic"}, {}, "bicubic-resize36-crop32"),
        ({"crop": 224, "resize": 256, "interpolation": "bilinear"}, {}, "bilinear-resize256-crop224"),
        (None, {"input_size": [224, 224], "crop_pct": 0.9, "interpolation": "bicubic"}, "bicubic-resize248-crop224"),
        (None, {"input_size": [224, 224]}, "bicubic-resize256-crop224"),  # timm's defaults: bicubic, 0.875
    ],
)
def test_a_models_pipeline_comes_from_its_zoo_entry_else_its_pretrained_config(given, arch_input, expected):
    from layercrit.study.pipelines import model_pipeline

    assert model_pipeline("m", given, arch_input, "a").name == expected


@pytest.mark.parametrize(
    "given, arch_input, expected",
    [
        ({"crop": 32, "interpolation": "bicubic"}, {}, "zoo.models.m.input: give either resize (pixels) or crop_pct"),
        ({"crop": 32, "resize": 40, "crop_pct": 0.9, "interpolation": "bicubic"}, {}, "not both or neither"),
        ({"crop": 32, "resize": 30, "interpolation": "bicubic"}, {}, "would be padded with black borders; resize to at least 32"),
        ({"crop": 32, "resize": 40, "interpolation": "cubic"}, {}, "interpolation 'cubic' is not one of ['nearest', 'bilinear'"),
        (None, {"input_size": None, "fixed_input_size": False}, "a torchvision architecture has no pretrained config"),
        (None, {"input_size": [224, 160]}, "takes 224x160 input; the evaluation images are square"),
        ({"crop": 48, "resize": 54, "interpolation": "bicubic"}, {"input_size": [32, 32], "fixed_input_size": True}, "takes only 32x32 input"),
    ],
    ids=["neither resize nor crop_pct", "both", "crop larger than resize", "unknown interpolation", "no pretrained config", "not square", "fixed input size"],
)
def test_a_pipeline_that_cannot_serve_names_the_setting(given, arch_input, expected):
    from layercrit.study.pipelines import PipelineError, model_pipeline

    with pytest.raises(PipelineError, match=re.escape(expected)):
        model_pipeline("m", given, arch_input, "a")


@pytest.mark.parametrize(
    "mutate_config, mutate_zoo, expected",
    [
        (lambda c: c.update(data={"kind": "synthetic", "pipeline": "per_model"}), None, ["'data.pipeline': 'study' was expected", "per_model needs images read from files"]),
        (None, lambda z: z["models"][0].update(input={"crop": 32, "resize": 40, "interpolation": "cubic"}), ["'models.0.input.interpolation'", "'cubic' is not allowed", "'bicubic'"]),
        (None, lambda z: z["models"][0].update(input={"crop": 32, "crop_pct": 1.2, "interpolation": "bicubic"}), ["'models.0.input.crop_pct'", "1.2 is greater than the maximum of 1"]),
        (None, lambda z: z["models"][0].update(input={"crop": 32, "resize": 28, "interpolation": "bilinear"}), ["zoo.models.demo_baseline.input: a 32-pixel centre crop", "resize to at least 32"]),
        (None, lambda z: z["models"][8].update(input={"crop": 48, "resize": 54, "interpolation": "bicubic"}), ["zoo.models.demo_vit.input: crop 48", "takes only 32x32 input", "set crop to 32"]),
        (lambda c: c["data"].update(pipeline="study", resize=28), None, ["data.resize, data.crop: a 32-pixel centre crop of images resized to 28"]),
    ],
    ids=["per_model with generated images", "unknown interpolation", "crop_pct above 1", "crop larger than resize", "crop a ViT cannot take", "study crop larger than resize"],
)
def test_pipeline_errors_stop_the_workflow_at_parse_time(workdir, mutate_config, mutate_zoo, expected):
    own_folder(workdir / "images", per_class=1)
    path = pipeline_study(workdir, models=("demo_baseline", "demo_vit"), resize=36, crop=32)
    if mutate_config:
        break_config(path, mutate_config)
    if mutate_zoo:
        assert yaml.safe_load((workdir / "zoo.yaml").read_text())["models"][8]["id"] == "demo_vit"
        break_zoo(workdir, mutate_zoo)
    assert_config_fails(workdir, path, expected)


def test_the_study_pipeline_plans_one_file_for_every_model_as_before(workdir):
    """The default (and the paper's config): one imagenet_subset job writes data/eval.safetensors,
    which every baseline reads; the zoo's `input` entries are not used."""
    val = standin_imagenet(workdir / "val")
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    config.update(zoo=str(REPO / config["zoo"]), imagenet_val=str(val))
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    jobs = planned(workdir, path)
    assert jobs["imagenet_subset"] == [(set(), {"results/paper/data/eval.safetensors"})] and "pipeline_images" not in jobs
    assert len(jobs["baseline"]) == 51
    assert all("results/paper/data/eval.safetensors" in inputs for inputs, _ in jobs["baseline"])

    own_folder(workdir / "images", per_class=1)
    path = pipeline_study(workdir, {"demo_baseline": RESNET_INPUT}, pipeline="study", resize=36, crop=32)
    jobs = planned(workdir, path)
    assert [outputs for _, outputs in jobs["image_folder"]] == [{"results/tiny/data/eval.safetensors"}]
    assert all("results/tiny/data/eval.safetensors" in inputs for inputs, _ in jobs["baseline"]) and "pipeline_images" not in jobs


def test_an_imagenet_folder_and_an_own_folder_give_one_pipeline_the_same_images(workdir):
    """prepare_pipeline_images reads either kind of data config: on one class-folder tree both
    give the same subset, order, labels and pixels, prepared with the pipeline."""
    from layercrit.data import load_image_set
    from layercrit.imagenet import prepare_pipeline_images, read_metadata
    from layercrit.study.pipelines import InputPipeline

    root = own_folder(workdir / "images", classes=3, per_class=3, size=(41, 37))
    subset = {"subset_size": 5, "subset_seed": 0}
    pipeline = InputPipeline(36, 32, "bicubic")
    imagenet = {"kind": "imagenet", "labels_file": None, "expected_classes": None, **subset}
    prepare_pipeline_images(imagenet, workdir / "a.safetensors", pipeline, imagenet_val=str(root), workers=0)
    prepare_pipeline_images({"kind": "folder", "root": str(root), **subset}, workdir / "b.safetensors", pipeline, imagenet_val=None, workers=0)
    a, b = (load_image_set(workdir / f"{n}.safetensors") for n in "ab")
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels) and a.images.shape == (5, 3, 32, 32)
    metas = [read_metadata(workdir / f"{n}.safetensors") for n in "ab"]
    assert [m["kind"] for m in metas] == ["imagenet_val", "image_folder"]
    assert all((m["resize"], m["crop"], m["interpolation"]) == (36, 32, "bicubic") for m in metas)
