"""Issue 33: the notebook API (``layercrit.notebook``). ``layer_criticality`` on a model in memory
gives the workflow's numbers bit for bit, with the columns of ``resets.csv``; DataLoaders,
float images, mode zero; bad arguments stop before any forward pass; the figures draw from its
table; the README's notebook example runs as written."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest
import timm
import torch
import yaml

from conftest import REPO, run_snakemake
from test_deploy import readme_block

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# What the reset rows hold that depends only on the model, images and seeds (not on where and
# when they were computed, or the files they were read from).
METRICS = [
    "criticality", "criticality_se_images", "cosine", "l1", "l2", "kl", "top1_agreement", "top1", "top5",
    "recovered_acc", "original_top1", "n_images", "n_nonfinite", "n_nonfinite_clean", "n_nonfinite_reset",
]  # fmt: skip
IDENTITY = ["model", "layer", "layer_index", "layer_type", "kernel", "seed", "mode"]
# Where and how long: these differ from run to run; the *_sha256 of files the notebook has none of.
PROVENANCE = {"device", "forward_s", "forward_from", "lease_wait_s", "wall_s", "created", "host",
              "checkpoint_sha256", "eval_data_sha256", "logits_sha256"}  # fmt: skip

SELECTIONS = {
    "demo_resnet": {"types": ["Conv2d", "Linear", "BatchNorm2d"], "include": ["conv1", "bn1", "layer2.0.conv2", "fc"]},
    "demo_vit": {"types": ["Linear", "LayerNorm"], "include": ["blocks.1.*", "head"], "exclude": ["blocks.1.mlp.*"]},
}
BATCH_SIZE = 24  # 64 images in three batches, the last one short


def demo_model(arch_id: str):
    """What a notebook user has: the demo architecture built by timm, and a function building it untrained."""
    spec = yaml.safe_load((REPO / "config/zoo/demo.yaml").read_text())["architectures"][arch_id]
    return timm.create_model(spec["timm"], **spec["kwargs"]), lambda: timm.create_model(spec["timm"], **spec["kwargs"])


@pytest.mark.slow
def test_the_notebook_function_equals_the_workflow_bitwise(workdir):
    """A study of two shipped demo models (a ResNet, with a BatchNorm among its layers, and a ViT),
    2 seeds, 64 images in batches of 24, with the workflow's activation reuse; then the same
    checkpoints loaded into timm models, the same images, seeds, layers and batch size through
    ``layer_criticality``: every metric equal (==), the same rows, columns and dtypes as resets.csv."""
    from layercrit.data import load_image_set
    from layercrit.models.zoo import load_checkpoint
    from layercrit.notebook import layer_criticality

    config = {
        "study": "nb", "zoo": str(REPO / "config/zoo/demo.yaml"), "models": ["demo_baseline", "demo_vit"],
        "device": "cpu", "batch_size": BATCH_SIZE, "activation_cache_mb": 64,
        "data": {"kind": "synthetic", "eval_images": 64},
        "reset": {"seeds": [0, 1], "layers": {"architectures": SELECTIONS}},
    }  # fmt: skip
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    run_snakemake(workdir, "--configfile", str(path), "--cores", "2", "aggregate")
    results = workdir / "results/nb"
    workflow = pd.read_csv(results / "tables/randomize/resets.csv")

    data = load_image_set(results / "data/eval.safetensors")
    tables = []
    for model_id, arch_id, images in (
        ("demo_baseline", "demo_resnet", data.images),  # uint8, as the workflow stores them
        ("demo_vit", "demo_vit", data.images.float() / 255),  # floats in [0, 1]
    ):
        checkpoint = load_checkpoint(results / f"models/{model_id}.safetensors")
        model, fresh = demo_model(arch_id)
        model.load_state_dict(checkpoint.state_dict)
        tables.append(
            layer_criticality(
                model, images, labels=data.labels, layers=SELECTIONS[arch_id], seeds=[0, 1], fresh_model=fresh,
                normalization=checkpoint.normalization, batch_size=BATCH_SIZE, model_id=model_id, progress=False,
            )
        )  # fmt: skip
    notebook = pd.concat(tables, ignore_index=True)
    assert len(notebook) == len(workflow) == 2 * (4 + 5)  # (4 ResNet + 5 ViT layers) x 2 seeds
    assert (workflow["forward_from"] != "input").any()  # the workflow reused activations for some
    assert notebook[IDENTITY].equals(workflow[IDENTITY].fillna({"kernel": ""}))
    for column in METRICS:
        assert (notebook[column] == workflow[column]).all(), (column, notebook[column].tolist(), workflow[column].tolist())
    for row in notebook.itertuples(index=False):  # and as each reset job wrote it (JSON: every bit of a float)
        job = json.loads((results / f"resets/randomize/{row.model}/{row.layer}/seed{row.seed}.json").read_text())
        assert {c: getattr(row, c) for c in METRICS} == {c: job[c] for c in METRICS}
    assert notebook["criticality"].gt(0).all()

    # the table is resets.csv's: the same columns in the same order, read back with the same dtypes
    # (but for what the notebook has none of)
    notebook.to_csv(workdir / "notebook.csv", index=False)
    again = pd.read_csv(workdir / "notebook.csv")
    assert list(again.columns) == list(workflow.columns)
    kept = [c for c in workflow.columns if c not in PROVENANCE]
    assert again[kept].dtypes.equals(workflow[kept].dtypes)
    assert again[kept].equals(workflow[kept])
    assert again[["checkpoint_sha256", "eval_data_sha256", "logits_sha256", "lease_wait_s"]].isna().all().all()


def tiny_resnet():
    """A small trained-looking model: the demo ResNet with weights moved off their initialization
    (an untrained timm ResNet zeroes each block's last BatchNorm, so most resets would change nothing)."""
    from layercrit.evaluation.concurrency import global_rng

    with global_rng(11):  # the same model whatever ran before
        model, fresh = demo_model("demo_resnet")
    with torch.no_grad():
        generator = torch.Generator().manual_seed(5)
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=generator))
    return model, fresh


@pytest.fixture(scope="module")
def images():
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (20, 3, 32, 32), dtype=torch.uint8, generator=generator), torch.randint(0, 10, (20,), generator=generator)


NORMALIZATION = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
LAYERS = {"include": ["conv1", "layer3.0.conv2", "fc"]}


def test_a_dataloader_gives_what_the_tensor_gives(images):
    from layercrit.notebook import layer_criticality

    x, y = images
    model, fresh = tiny_resnet()
    common = dict(layers=LAYERS, seeds=[3], fresh_model=fresh, normalization=NORMALIZATION, batch_size=8, progress=False)
    from_tensor = layer_criticality(model, x, labels=y, **common)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=6)
    from_loader = layer_criticality(model, loader, **common)
    assert len(from_tensor) == 3 and from_tensor["criticality"].gt(0).all()
    assert from_loader[IDENTITY + METRICS].equals(from_tensor[IDENTITY + METRICS])


def test_the_model_is_left_as_it_was(images):
    from layercrit.notebook import layer_criticality

    x, y = images
    model, fresh = tiny_resnet()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    layer_criticality(model, x, labels=y, layers=LAYERS, seeds=[0], fresh_model=fresh, normalization=NORMALIZATION, progress=False)
    after = model.state_dict()
    assert model.training
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_mode_zero_needs_no_fresh_model_and_without_labels_accuracies_are_nan(images):
    from layercrit.evaluation.reset import reset_layer
    from layercrit.notebook import layer_criticality

    x, _ = images
    model, _ = tiny_resnet()
    table = layer_criticality(model, x, layers={"include": ["fc"]}, mode="zero", seeds=[0, 1], progress=False)
    assert table["mode"].eq("zero").all() and "seed_scheme" not in table
    assert table["criticality"].nunique() == 1  # zero draws nothing: every seed alike
    assert table[["top1", "top5", "recovered_acc", "original_top1"]].isna().all().all()
    # a zeroed head gives equal logits, uniform softmax: the cosine with the clean softmax, by hand
    model.eval()
    with torch.no_grad():
        p = model(x.float().div(255)).double().softmax(dim=1)
    uniform = torch.full_like(p, 1 / p.shape[1])
    expected = 100 * (1 - torch.nn.functional.cosine_similarity(p, uniform, dim=1).mean().item())
    assert math.isclose(table["criticality"].iloc[0], expected, rel_tol=1e-6)
    with reset_layer(model, "fc", "zero"):
        assert not model.fc.weight.any()


def test_reinit_takes_the_initial_weights(images):
    from layercrit.notebook import layer_criticality

    x, y = images
    model, fresh = tiny_resnet()
    table = layer_criticality(
        model, x, labels=y, layers={"include": ["fc"]}, mode="reinit", seeds=[0], initial_weights=model.state_dict(), progress=False
    )
    assert table["criticality"].eq(0).all() and table["top1_agreement"].eq(1).all()  # rewound to itself: nothing changes


def forward_counting(model):
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    return calls


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"layers": {"include": ["conv9"]}}, "layers.include: pattern 'conv9' matches no layer"),
        ({"layers": {"types": ["Conv3d"]}}, "layers.types: ['Conv3d'] is no module class"),
        ({"layers": {"includes": ["fc"]}}, "unknown key(s) ['includes']"),
        ({"layers": ["fc"]}, "layers: a selection as the config's reset.layers, e.g. {\"include\": [\"layer4.*\"]}, not ['fc']"),
        ({"seeds": []}, "layer_criticality argument key 'seeds': [] should be non-empty"),
        ({"fresh_model": None}, "fresh_model: mode randomize takes each layer from a freshly initialized model"),
        ({"fresh_model": lambda: timm.create_model("resnet18", num_classes=10)}, "fresh_model() builds a model that does not fit the model"),
        ({"mode": "shuffle"}, "'shuffle' is not allowed; allowed: ['randomize', 'zero', 'reinit', 'remove']"),
        ({"seeds": [0, -1]}, "seeds.1"),
        ({"mode": "reinit"}, "initial_weights: mode reinit"),
        ({"images": "x[0]"}, "images: a batch N×C×H×W of at least one image, got shape (3, 32, 32) (one image: images.unsqueeze(0))"),
        ({"images": "x[:, :1]"}, "normalization: {'mean': [...], 'std': [...]} with 1 values each"),
        ({"images": "x[:, :1]", "normalization": None}, "images: the model cannot run on images of shape (1, 32, 32)"),
        ({"images": "(x.float() / 255 - 0.45) / 0.22"}, "images: values from"),
        ({"images": "x.int()"}, "images: uint8 (0-255) or floating point (0-1), not torch.int32"),
        ({"labels": "y[:5]"}, "labels: one integer class per image, shape (20,)"),
        ({"labels": "y + 10"}, "labels: 20 of 20 are not classes of the model, which has 10 outputs"),
    ],
)
def test_bad_arguments_stop_before_any_reset_with_what_to_change(images, arguments, message):
    from layercrit.notebook import layer_criticality

    x, y = images
    model, fresh = tiny_resnet()
    calls = forward_counting(model.fc)
    given = {"labels": y, "layers": LAYERS, "fresh_model": fresh, "normalization": NORMALIZATION, "progress": False}
    given.update(arguments)
    for key in ("images", "labels"):
        if isinstance(given.get(key), str):
            given[key] = eval(given[key], {"x": x, "y": y})
    with pytest.raises(ValueError) as error:
        layer_criticality(model, given.pop("images", x), **given)
    assert message in str(error.value)
    # no reset ran; only what the clean pass shows (the model's classes, whether it runs on the images) ran it
    assert len(calls) == (1 if "are not classes" in message else 0)


def test_the_figures_draw_from_the_table(images, tmp_path, monkeypatch):
    from matplotlib.text import Text

    from layercrit.figures import common
    from layercrit.notebook import layer_criticality, plot_heatmap, plot_profile

    x, y = images
    tables = []
    for model_id, seed in (("perturbed_a", 5), ("perturbed_b", 6)):
        model, fresh = tiny_resnet()
        with torch.no_grad():
            model.fc.weight.mul_(seed)
        tables.append(layer_criticality(model, x, labels=y, layers=LAYERS, seeds=[0, 1], fresh_model=fresh,
                                        normalization=NORMALIZATION, model_id=model_id, progress=False))  # fmt: skip
    vit, vit_fresh = demo_model("demo_vit")  # another layer list: a panel of its own, a profile over relative depth
    tables.append(layer_criticality(vit, x, labels=y, layers={"include": ["blocks.0.*", "head"]}, seeds=[0],
                                    fresh_model=vit_fresh, normalization=NORMALIZATION, model_id="vit", progress=False))  # fmt: skip
    table = pd.concat(tables, ignore_index=True)
    texts, save = {}, common.save_figure

    def keep_texts(fig, out_base):  # what the figure says, before saving clears it
        texts[Path(out_base).name] = [t.get_text() for t in fig.findobj(Text) if t.get_visible()]
        return save(fig, out_base)

    monkeypatch.setattr(common, "save_figure", keep_texts)
    names = {"perturbed_a": "Model A"}
    heatmap = plot_heatmap(table, tmp_path / "heatmap", names=names, architectures={"vit": "ViT"})
    profile = plot_profile(table, tmp_path / "profile", names=names)
    assert [p.name for p in heatmap + profile] == ["heatmap.png", "heatmap.pdf", "profile.png", "profile.pdf"]
    assert all(p.stat().st_size > 1000 for p in heatmap + profile)
    for figure in ("heatmap", "profile"):  # rows or lines: the models, named, with their top-1 on the images
        rows = [m[1] for t in texts[figure] if (m := re.fullmatch(r"(.+) \[\d+\.\d%\]", t))]
        assert rows == ["Model A", "perturbed_b", "vit"], texts[figure]
    assert "ViT (5 layers)" in texts["heatmap"]  # the ViT's panel, apart from the ResNets'
    assert "relative depth (position among the model's reset layers: 0 first, 1 last)" in texts["profile"]


def test_the_readme_notebook_example_runs_as_written(tmp_path, monkeypatch):
    """The README's "In a notebook" block, run as written where it says (the clone: its demo
    checkpoint), writing into a fresh directory: it returns the table and writes both figures."""
    (tmp_path / "resources").symlink_to(REPO / "resources")  # in the clone, as the README says
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(readme_block("### In a notebook", "python"), "README.md", "exec"), namespace)
    table = namespace["table"]
    assert list(table.columns[:8]) == ["model", "layer", "layer_index", "layer_type", "kernel", "seed", "mode", "criticality"]
    assert table["criticality"].between(0, 100).all()
    assert {p.name for p in tmp_path.iterdir()} >= {"heatmap.png", "profile.png"}
