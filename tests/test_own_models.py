"""Issue 22: one's own models in one's own study. A local checkpoint is the user's own and
changes: saving a retrained model over it re-makes its checkpoint, baseline and reset results."""

import hashlib
import json

import pandas as pd
import pytest
import torch
import yaml

from conftest import run_snakemake, tiny_study
from test_workflow import planned_jobs

pytestmark = pytest.mark.slow


def save_own_checkpoint(path, arch, seed):
    """What a user's training script saves: torch.save of a state dict (not this project's format)."""
    from layercrit.zoo import build_architecture

    model = build_architecture(arch, seed=seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(seed)))
    torch.save(model.state_dict(), path)


def test_a_local_checkpoint_saved_over_reruns_its_model_and_only_it(workdir, demo_arch):
    config = tiny_study(workdir, models=["demo_baseline"], seeds=(0,))
    own = workdir / "ckpt" / "mine.pth"
    own.parent.mkdir()
    save_own_checkpoint(own, demo_arch, seed=1)
    zoo = yaml.safe_load((workdir / "zoo.yaml").read_text())
    zoo["models"].append(
        {"id": "mine", "name": "Mine", "category": "baseline", "architecture": "demo_resnet",
         "source": {"kind": "url", "url": str(own)}, "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}}
    )  # fmt: skip
    (workdir / "zoo.yaml").write_text(yaml.safe_dump(zoo, sort_keys=False))
    cfg = yaml.safe_load(config.read_text())
    cfg["reset"]["layers"] = {"include": ["conv1", "fc"]}
    config.write_text(yaml.safe_dump(cfg))
    run_snakemake(workdir, "--configfile", str(config), "--cores", "2")
    baseline = workdir / "results/tiny/baselines/mine.json"
    first = json.loads(baseline.read_text())

    save_own_checkpoint(own, demo_arch, seed=2)  # retrained, saved over the last
    jobs = planned_jobs(workdir, config)
    assert jobs["download_model"] == 1 and jobs["baseline"] == 1 and jobs["reset"] == 2, jobs
    assert "train_model" not in jobs  # the other model stays as it is
    run_snakemake(workdir, "--configfile", str(config), "--cores", "2")
    second = json.loads(baseline.read_text())
    assert second["checkpoint_sha256"] != first["checkpoint_sha256"]
    log = (workdir / "results/tiny/logs/models/mine.log").read_text()
    assert f"{own} has changed since it was cached" in log
    sha = hashlib.sha256(own.read_bytes()).hexdigest()
    result = json.loads((workdir / "results/tiny/resets/randomize/mine/fc/seed0.json").read_text())
    assert result["checkpoint_sha256"] == second["checkpoint_sha256"]
    assert sha in (workdir / "results/tiny/logs/models/mine.log").read_text()


def test_three_own_architectures_from_two_libraries_on_an_own_folder(workdir):
    """Issue 22's scenario: an own 10-class image folder; own checkpoints (torch.save of a state
    dict) of timm EfficientNet-B0, torchvision MobileNetV3-Small and a timm ViT; the study runs;
    one checkpoint saved over re-runs that model only, with the new weights' results."""
    from layercrit.study import Architecture
    from layercrit.zoo import build_architecture
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
        torch.save(build_architecture(arch, seed=1).state_dict(), workdir / "ckpt" / f"{arch_id}.pth")
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

    torch.save(build_architecture(Architecture("mnv3s", "mobilenet_v3_small", {"num_classes": 10}, library="torchvision"), seed=2).state_dict(), workdir / "ckpt/mnv3s.pth")
    jobs = planned_jobs(workdir, path)
    assert jobs["download_model"] == 1 and jobs["baseline"] == 1 and jobs["reset"] == 4, jobs
    run_snakemake(workdir, "--configfile", str(path), "--cores", "2")
    after = pd.read_csv(results / "tables/randomize/resets.csv")
    changed = after.set_index(["model", "layer", "seed"])["checkpoint_sha256"] != resets.set_index(["model", "layer", "seed"])["checkpoint_sha256"]
    assert set(changed[changed].index.get_level_values("model")) == {"mnv3s"}
