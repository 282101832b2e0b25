"""Issue 22: one's own models in one's own study. A local checkpoint is the user's own and
changes: saving a retrained model over it re-makes its checkpoint, baseline and reset results."""

import hashlib
import json

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
