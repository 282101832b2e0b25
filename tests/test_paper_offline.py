"""The paper config's rules, offline: a tiny zoo served by a local HTTP server in the real
checkpoint layouts (Hugging Face Hub, plain URLs, a backbone + head pair, timm), a tiny
generated ImageNet, through downloads, conversion, baselines, reset jobs and aggregation."""

import json

import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from conftest import REPO, run_snakemake
from support.reruns import assert_recomputed_with_the_same_numbers, reset_records
from test_sources import (
    DINO_HEAD_URL,
    DINO_URL,
    DIFFUSION,
    MADRY,
    MADRY_FILE,
    RESNET50,
    URL_HOSTS,
    linear_head,
    madry_checkpoint,
    pickled,
    prefixed,
    publish,
    safetensors_bytes,
    without,
)

from layercrit.testing.fake_hosts import FakeHosts
from layercrit.models.zoo import build_architecture, load_checkpoint

pytestmark = pytest.mark.slow
MODELS = ["robust_resnet50_l2_eps0.01", "resnet50_dino", "resnet50.a1_in1k", "resnet50_diffusionnoise_fixed_nonoise"]


def trained_like_state_dict():
    """ResNet-50 weights that give finite outputs (unlike arbitrary random BatchNorm statistics)."""
    sd = build_architecture(RESNET50, seed=0).state_dict()
    g = torch.Generator().manual_seed(3)
    return {k: v + 0.01 * torch.randn(v.shape, generator=g) if v.is_floating_point() and "running_var" not in k else v for k, v in sd.items()}


def fake_imagenet(root, classes=("n01440764", "n01443537", "n01484850"), per_class=4):
    g = torch.Generator().manual_seed(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            w, h = [(300, 200), (200, 260), (320, 320), (260, 180)][i % 4]
            pixels = torch.randint(0, 256, (h, w, 3), dtype=torch.uint8, generator=g).numpy()
            Image.fromarray(pixels).save(root / c / f"ILSVRC2012_val_{i:08d}.JPEG", quality=90)


def test_paper_rules_end_to_end_offline(tmp_path):
    weights = trained_like_state_dict()
    hosts = FakeHosts()
    try:
        hosts.add_hf_file(MADRY["repo"], MADRY_FILE, madry_checkpoint(weights))
        publish(hosts, DINO_URL, pickled(without(weights, "fc.")))
        publish(hosts, DINO_HEAD_URL, linear_head(weights))
        hosts.add_hf_file("timm/resnet50.a1_in1k", "model.safetensors", safetensors_bytes(weights))
        hosts.add_hf_file(DIFFUSION["repo"], DIFFUSION["file"], pickled({"model": prefixed("module.", weights), "epoch": 89}))

        zoo = yaml.safe_load((REPO / "config/zoo/paper.yaml").read_text())
        zoo["architectures"]["resnet50"]["layers"] = str(REPO / "config/architectures/resnet50.tsv")
        zoo["models"] = [m for m in zoo["models"] if m["id"] in MODELS]
        zoo["baseline"] = "resnet50_dino"
        (tmp_path / "zoo.yaml").write_text(yaml.safe_dump(zoo, sort_keys=False))
        fake_imagenet(tmp_path / "val")
        config = yaml.safe_load((REPO / "config/config.yaml").read_text())
        config.update(study="paper_tiny", zoo="zoo.yaml", imagenet_val=str(tmp_path / "val"), device="cpu",
                      batch_size=4, downloads=str(tmp_path / "downloads"))  # fmt: skip
        config["data"].update(subset_size=8, expected_classes=None)
        config["reset"].update(seeds=[0, 1], layers={"include": ["conv1", "fc"]})
        (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))

        env = {
            "LAYERCRIT_URL_REWRITE": json.dumps({f"https://{h}/": f"{hosts.base}/{h}/" for h in URL_HOSTS}),
            "HF_ENDPOINT": hosts.base,
            "LAYERCRIT_DOWNLOAD_BACKOFF": "0.01",
        }
        run_snakemake(tmp_path, "--configfile", str(tmp_path / "config.yaml"), "--cores", "2", "aggregate", env=env)
    finally:
        hosts.close()

    results = tmp_path / "results" / "paper_tiny"
    for model in MODELS:  # every layout became the exact original weights
        state = load_checkpoint(results / "models" / f"{model}.safetensors").state_dict
        assert set(state) == set(weights), model
        assert all(torch.equal(state[k], weights[k]) for k in weights), model
    resets = pd.read_csv(results / "tables/randomize/resets.csv")
    assert set(zip(resets["model"], resets["layer"], resets["seed"])) == {(m, l, s) for m in MODELS for l in ("conv1", "fc") for s in (0, 1)}
    assert (resets["n_images"] == 8).all() and (resets["n_nonfinite"] == 0).all()
    baseline = json.loads((results / "baselines/resnet50_dino.json").read_text())
    assert baseline["reported_top1"] == 75.28 and baseline["suspect_loading"] is True
    # Raw-input models see raw [0, 1] images, normalized ones do not: same weights, other outputs.
    from safetensors.torch import load_file

    diffusion = load_file(str(results / "baselines/resnet50_diffusionnoise_fixed_nonoise.logits.safetensors"))["logits"]
    dino = load_file(str(results / "baselines/resnet50_dino.logits.safetensors"))["logits"]
    assert not torch.allclose(diffusion, dino)

    # The same reset jobs again with Snakemake's own greedy scheduler (the default profile's
    # setting before the by-priority plugin): the same numbers, bit for bit.
    before = reset_records(results)
    run_snakemake(tmp_path, "--configfile", str(tmp_path / "config.yaml"), "--cores", "2", "--scheduler", "greedy",
                  "--forcerun", "reset", "--until", "reset", "-q")  # fmt: skip
    assert_recomputed_with_the_same_numbers(before)
