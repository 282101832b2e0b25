"""Issue 22: one's own models in one's own study. A local checkpoint is the user's own and
changes: saving a retrained model over it re-makes its checkpoint, baseline and reset results."""

import json

import pandas as pd
import pytest
import torch
import yaml

from conftest import run_snakemake
from test_workflow import planned_jobs

pytestmark = pytest.mark.slow


def save_own_checkpoint(path, arch, seed):
    """What a user's training script saves: torch.save of a state dict (not this project's format)."""
    from layercrit.models.zoo import build_architecture

    model = build_architecture(arch, seed=seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(seed)))
    torch.save(model.state_dict(), path)


def test_three_own_architectures_from_two_libraries_on_an_own_folder(workdir):
    """Issue 22's scenario: an own 10-class image folder; own checkpoints (torch.save of a state
    dict) of timm EfficientNet-B0, torchvision MobileNetV3-Small and a timm ViT; the study runs;
    one checkpoint saved over re-runs that model only, with the new weights' results."""
    from layercrit.study import Architecture
    from test_own_data import own_folder

    from conftest import write_layer_list

    own_folder(workdir / "images", classes=10, per_class=2, size=(72, 64))
    specs = {
        "effb0": {"timm": "efficientnet_b0", "kwargs": {"num_classes": 10}, "layers": "effb0.tsv"},
        "mnv3s": {"torchvision": "mobilenet_v3_small", "kwargs": {"num_classes": 10}, "layers": "mnv3s.tsv"},
        "vit": {"timm": "vit_tiny_patch16_224", "kwargs": {"num_classes": 10, "img_size": 64, "depth": 2}, "layers": "vit.tsv"},
    }
    (workdir / "ckpt").mkdir()
    models = []
    for arch_id, spec in specs.items():
        write_layer_list(workdir, arch_id, spec)
        library = "torchvision" if "torchvision" in spec else "timm"
        arch = Architecture(arch_id, spec[library], spec["kwargs"], library=library)
        save_own_checkpoint(workdir / "ckpt" / f"{arch_id}.pth", arch, seed=1)
        models.append({"id": arch_id, "name": arch_id, "category": "baseline", "architecture": arch_id,
                       "source": {"kind": "url", "url": str(workdir / "ckpt" / f"{arch_id}.pth")},
                       **({"normalization": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}} if library == "torchvision" else {})})  # fmt: skip
    zoo = {"architectures": specs, "categories": [{"id": "baseline", "label": "Own"}], "models": models}
    (workdir / "zoo.yaml").write_text(yaml.safe_dump(zoo, sort_keys=False))
    config = {
        "study": "own", "zoo": "zoo.yaml", "device": "cpu",
        "data": {"kind": "folder", "root": str(workdir / "images"), "resize": 72, "crop": 64},
        "reset": {"mode": "randomize", "seeds": [0, 1], "layers": {"include": ["conv_stem", "features.0.0", "patch_embed.proj", "classifier", "classifier.3", "head"]}},
    }  # fmt: skip
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    run_snakemake(workdir, "--configfile", str(path), "--cores", "2")
    results = workdir / "results/own"
    resets = pd.read_csv(results / "tables/randomize/resets.csv")
    assert set(resets["model"]) == set(specs) and (resets["n_images"] == 20).all()
    assert len(resets) == 2 * 2 * 3  # 2 layers x 2 seeds x 3 models
    index = json.loads((results / "figures/randomize/index.json").read_text())
    assert "difference_heatmap" in index["left_out"] and "criticality_vs_epsilon" in index["left_out"]

    save_own_checkpoint(workdir / "ckpt/mnv3s.pth", Architecture("mnv3s", "mobilenet_v3_small", {"num_classes": 10}, library="torchvision"), seed=2)
    jobs = planned_jobs(workdir, path)
    assert jobs["download_model"] == 1 and jobs["baseline"] == 1 and jobs["reset"] == 4, jobs
    run_snakemake(workdir, "--configfile", str(path), "--cores", "2")
    after = pd.read_csv(results / "tables/randomize/resets.csv")
    changed = after.set_index(["model", "layer", "seed"])["checkpoint_sha256"] != resets.set_index(["model", "layer", "seed"])["checkpoint_sha256"]
    assert set(changed[changed].index.get_level_values("model")) == {"mnv3s"}
    assert f"{workdir / 'ckpt/mnv3s.pth'} has changed since it was cached" in (results / "logs/models/mnv3s.log").read_text()
