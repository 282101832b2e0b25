"""The paper-scale rehearsal (benchmarks.paper_scale), small: one model of every source format
of the paper zoo, fabricated in its published layout and served on 127.0.0.1, through the whole
DAG of the paper config (fetch, baselines, resets, tables, figures, replication)."""

import json
import subprocess
import sys

import pandas as pd
import pytest
import torch
import yaml

from benchmarks import paper_scale
from conftest import REPO, snakemake_env
from support.reruns import assert_recomputed_with_the_same_numbers, reset_records

pytestmark = pytest.mark.slow

# one model per source layout of config/zoo/paper.yaml
MODELS = [
    "tv_resnet50",  # torchvision (pinned sha256)
    "robust_resnet50_l2_eps0",  # Hub, Madry's wrapped checkpoint with the attacker's copy
    "resnet50_trained_on_SIN",  # plain URL
    "resnet50_pixmix_90ep",  # Google Drive
    "resnet50_tsbias_tbias",  # Google Drive, auxiliary BatchNorms dropped
    "resnet50_diffusionnoise_fixed_nonoise",  # Hub, wrapped
    "resnet50_dino",  # backbone + linear head from two URLs
    "resnet50_moco_v3_100ep",  # URL, wrapped
    "resnet50_simclrv2",  # Google Drive, SimCLRv2's names
    "resnet50.a1_in1k",  # timm tag, safetensors
]


def test_every_paper_source_layout_round_trips_through_its_conversion():
    """The fabricated files are what the zoo's conversion fields expect (checked by converting
    back), for every one of the 51 models: the rehearsal cannot pass on a layout it got wrong."""
    zoo = yaml.safe_load((REPO / "config/zoo/paper.yaml").read_text())
    state = {"conv1.weight": torch.randn(2, 3), "layer1.0.conv1.weight": torch.randn(2), "layer1.0.downsample.1.running_mean": torch.randn(2),
             "fc.weight": torch.randn(3, 2), "fc.bias": torch.randn(3)}  # fmt: skip
    for model in zoo["models"]:
        source = model["source"]
        parts = [(source, state)]
        if source["kind"] == "pair":
            head = {k: v for k, v in state.items() if k.startswith("fc.")}
            parts = [(source["backbone"], {k: v for k, v in state.items() if k not in head}), (source["head"], head)]
        for spec, part in parts:
            paper_scale.check_round_trip(paper_scale.published_object(part, spec), spec, part, model["id"])
    with pytest.raises(AssertionError, match="does not convert back"):
        paper_scale.check_round_trip(state, {"kind": "url", "strip_prefix": ["module."], "rename": [["fc.", "head."]]}, state, "m")


@pytest.mark.rehearsal  # test_paper_offline runs the paper's rules; `make test-all` runs this too
def test_small_rehearsal_runs_the_paper_dag_and_reorders_without_changing_a_number(tmp_path):
    workdir = tmp_path / "rehearsal"
    out = tmp_path / "record.json"
    cmd = [sys.executable, "-m", "benchmarks.paper_scale", "--models", *MODELS, "--layers", "conv1", "layer4.2.conv3", "fc",
           "--seeds", "0", "1", "--workdir", str(workdir), "--out", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=snakemake_env(), timeout=1500, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    record = json.loads(out.read_text())
    jobs = len(MODELS) * 3 * 2
    assert record["resets"]["reset_jobs"] == jobs
    assert set(record["stages"]) == {"data", "fetch", "baselines", "resets", "tables", "figures"}
    assert sorted(record["resets"]["models_in_order"]) == sorted(MODELS)
    assert set(record["memory_mib"]["per_model_peak"]) == set(MODELS)
    assert record["resets"]["overhead_s"]["all"]["n"] >= jobs - 5

    results = workdir / "results/paper_rehearsal"
    resets = pd.read_csv(results / "tables/randomize/resets.csv")
    assert len(resets) == jobs and (resets["n_nonfinite"] == 0).all() and (resets["n_images"] == 2).all()
    assert (results / "figures/randomize/replication.png").exists()
    # model by model (a model's jobs are never interleaved with another's), within a model seed by seed
    done = sorted((json.loads(p.read_text()) for p in results.glob("resets/*/*/*/*.json")), key=lambda r: r["created"])
    runs = [r["model"] for i, r in enumerate(done) if i == 0 or done[i - 1]["model"] != r["model"]]
    assert sorted(runs) == sorted(MODELS)
    for model in MODELS:
        order = [(r["seed"], r["layer"]) for r in done if r["model"] == model]
        assert order == [(s, l) for s in (0, 1) for l in ("conv1", "layer4.2.conv3", "fc")], model

    # The same jobs again in a fresh process with Snakemake's own greedy scheduler (the default
    # profile's setting before the by-priority plugin): the same numbers, bit for bit.
    before = reset_records(results)
    config = workdir / "config.yaml"
    rerun = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--cores", "2", "--configfile", str(config),
             "--scheduler", "greedy", "--forcerun", "reset", "--until", "reset", "-q"]  # fmt: skip
    proc = subprocess.run(rerun, cwd=workdir, capture_output=True, text=True, env=snakemake_env(), timeout=900)
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert_recomputed_with_the_same_numbers(before)
