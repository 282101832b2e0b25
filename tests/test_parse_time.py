"""Planning the paper-sized study is fast and never imports torch."""

import re
import time

import yaml

from conftest import REPO, run_snakemake, standin_imagenet, write_layer_list


def poisoned_torch(workdir):
    """A `torch` that cannot be imported: parsing the workflow must not need it."""
    poison = workdir / "poison" / "torch"
    poison.mkdir(parents=True)
    (poison / "__init__.py").write_text("raise ImportError('torch imported at parse time')\n")
    return {"PYTHONPATH": str(workdir / "poison")}


def test_dry_run_of_51_models_54_layers_3_seeds_lists_every_job_without_torch(workdir):
    # the 54 layers of ResNet-50, with as many outputs as the demo data has classes
    resnet50 = {"timm": "resnet50", "kwargs": {"num_classes": 10}, "layers": "resnet50.tsv"}
    write_layer_list(workdir, "resnet50", resnet50)
    zoo = {
        "architectures": {"resnet50": resnet50},
        "categories": [{"id": "baseline", "label": "Baseline"}, {"id": "adversarial", "label": "Adversarial"}],
        "baseline": "m00",
        "models": [
            {
                "id": f"m{i:02d}",
                "category": "adversarial" if i % 3 else "baseline",
                "architecture": "resnet50",
                **({"adversarial": {"norm": "l2", "epsilon": i / 10}} if i % 3 else {}),
                "source": {"kind": "train", "recipe": {"epochs": 1}},
            }
            for i in range(51)
        ],
    }
    (workdir / "zoo.yaml").write_text(yaml.safe_dump(zoo))
    config = yaml.safe_load((REPO / "config/demo.yaml").read_text())
    config.update(study="big", zoo="zoo.yaml")
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    started = time.monotonic()
    proc = run_snakemake(workdir, "--configfile", str(workdir / "config.yaml"), "-n", "--quiet", "rules", env=poisoned_torch(workdir))
    elapsed = time.monotonic() - started
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", proc.stdout, flags=re.M))
    assert int(counts["reset"]) == 51 * 54 * 3
    assert int(counts["baseline"]) == 51
    assert int(counts["train_model"]) == 51
    assert int(counts["aggregate_tables"]) == 1
    assert elapsed < 120, f"dry run took {elapsed:.0f} s"  # generous for slow CI; typically ~15 s


def test_dry_run_of_a_study_mixing_resnet50_vit_and_convnext_plans_each_architectures_layers_without_torch(workdir):
    """config/beyond_resnet.yaml: one job per (model, layer of its own architecture, seed)."""
    val = standin_imagenet(workdir / "val")  # planning reads no image
    config = yaml.safe_load((REPO / "config/beyond_resnet.yaml").read_text())
    config.update(zoo=str(REPO / config["zoo"]), imagenet_val=str(val))
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    proc = run_snakemake(workdir, "--configfile", str(workdir / "config.yaml"), "-n", "--logger-layercrit-jobs", env=poisoned_torch(workdir))
    planned = set(re.findall(r"output: results/beyond_resnet/resets/randomize/([^/]+)/([^/]+)/seed(\d)\.json", proc.stdout))
    layers = {
        arch: [l.split("\t") for l in (REPO / f"config/architectures/{arch}.tsv").read_text().splitlines() if not l.startswith("#")][1:]
        for arch in ("resnet50", "vit_small_patch16_224", "convnext_tiny")
    }
    expected = {
        (model, name, str(seed))
        for model, arch in (("tv_resnet50", "resnet50"), ("vit_small_augreg", "vit_small_patch16_224"), ("convnext_tiny_fb", "convnext_tiny"))
        for name, kind, _ in layers[arch]
        if kind in ("Conv2d", "Linear")
        for seed in (0, 1, 2)
    }
    assert planned == expected
    assert len(expected) == 3 * (54 + 50 + 59)  # ResNet-50, ViT-S/16 (patch embedding, 12 × 4, head), ConvNeXt-T
    assert ("vit_small_augreg", "blocks.11.mlp.fc2", "2") in planned and ("convnext_tiny_fb", "stages.3.blocks.2.mlp.fc2", "0") in planned


def planned_rules(workdir, *args, env=None):
    proc = run_snakemake(workdir, *args, "-n", "--quiet", "rules", env=env)
    return {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)$", proc.stdout, flags=re.M) if rule != "total"}


def test_the_demo_fetches_its_recorded_checkpoints_and_trains_only_when_told_to(workdir):
    """The demo (default config) obtains its ten models from the checkpoints its zoo records,
    needing no training images; config/demo_training.yaml after it trains them all here."""
    env = poisoned_torch(workdir)
    demo = planned_rules(workdir, env=env)
    assert demo["download_model"] == 10 and "train_model" not in demo
    assert demo["synthetic_data"] == 1 and demo["reset"] == 9 * 17 * 3 + 18 * 3
    configs = [str(REPO / "config" / name) for name in ("demo.yaml", "demo_training.yaml")]
    retrained = planned_rules(workdir, "--configfile", *configs, env=env)
    assert retrained["train_model"] == 10 and "download_model" not in retrained
    assert retrained["synthetic_data"] == 2  # training and evaluation images
    assert (retrained["reset"], retrained["baseline"]) == (demo["reset"], demo["baseline"])


def test_unlock_needs_no_cores_for_any_study(workdir):
    """`snakemake --unlock` (the README's step after a crash) runs no job and gives no --cores:
    rules whose threads follow the cores (evaluations on the CPU, ImageNet preparation) must not
    make parsing fail."""
    val = standin_imagenet(workdir / "val")
    for config in ("demo.yaml", "config.yaml"):
        run_snakemake(workdir, "--unlock", "--configfile", str(REPO / "config" / config), "--config", f"imagenet_val={val}")
