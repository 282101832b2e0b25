"""Issue 23: under ``reset.seed_scheme: authors`` a randomize seed is the authors' trial.

The reference is the authors' own main.py (tests/authors_code, unchanged; run by
tests/authors_harness.py), in randomize mode with three trials, on fabricated checkpoints of the
two constructors their model loader uses for the paper's models: timm's resnet50 (their
default branch, served from a Hugging Face cache made here; every other branch builds the same) and torchvision's (their
``tv2_resnet50`` branch, served from a torch hub cache made here). The workflow runs the same
models on the same images with the authors' scheme and must give the same metrics for every
layer and trial.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from conftest import REPO, run_snakemake, standin_imagenet, write_layer_list
from support.config_cases import plan_error

HARNESS = Path(__file__).resolve().parent / "authors_harness.py"
# Layers compared: stem, blocks of every stage, a downsample, BatchNorms (their loop resets
# those too), the classifier. The fresh model is built once per trial, so a wrong draw shows in
# every layer; a wrong layer mapping shows in these.
LAYERS = ["conv1", "bn1", "layer1.0.downsample.0", "layer2.1.conv2", "layer3.5.bn3", "layer4.2.conv3", "fc"]
BATCH, TRIALS = 2, 3  # their main.py resets all 107 modules per trial: 321 ResNet-50 evaluations
# Their main.py's model ids: the default branch (timm.create_model(id, pretrained=True), as for
# every timm-hosted paper model; the other branches build timm's resnet50 too) and tv2_resnet50.
MODELS = ["resnet50.a1_in1k", "tv2_resnet50"]
IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def calibration_images(images: Path, n: int = 8) -> torch.Tensor:
    """``n`` of the images as both sides feed them to a model: 256 → 224, normalized."""
    from torchvision import transforms

    prepare = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
                                  transforms.Normalize(IMAGENET["mean"], IMAGENET["std"])])  # fmt: skip
    paths = sorted(images.glob("*/*.JPEG"))[:n]
    return torch.stack([prepare(Image.open(p).convert("RGB")) for p in paths])


def fabricated_weights(model: torch.nn.Module, seed: int, calibration: torch.Tensor) -> dict[str, torch.Tensor]:
    """A trained-looking ResNet-50: its initialization perturbed, BatchNorm statistics measured on
    ``calibration`` images (not the initial 0/1, so a reset BatchNorm changes something), and a
    classifier scaled so that the softmax is neither uniform nor one-hot."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g))
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None  # a plain average over the batch below
        model.train()(calibration)
        model.fc.weight.mul_(4)
    return model.eval().state_dict()


def image_folder(root: Path) -> Path:
    """1,000 class folders of one generated JPEG each: their loader and this workflow both take the
    ImageFolder order and the same seeded permutation of it, and the models have 1,000 outputs."""
    rng = np.random.default_rng(0)
    for c in range(1000):
        folder = root / f"n{c:08d}"
        folder.mkdir(parents=True)
        pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
        Image.fromarray(pixels).resize((96, 80), Image.BILINEAR).save(folder / f"img{c}.JPEG", quality=90)
    return root


def torch_hub_with_torchvision(home: Path, torchvision_state: dict[str, torch.Tensor]) -> None:
    """What ``torch.hub.load("pytorch/vision", "resnet50", weights=IMAGENET1K_V2)`` finds offline:
    a cached pytorch/vision repo whose hubconf is the installed torchvision's, and the V2 weights
    file in the checkpoint cache (here, fabricated weights)."""
    from torchvision.models import ResNet50_Weights

    repo = home / "hub" / "pytorch_vision_main"
    repo.mkdir(parents=True)
    (repo / "hubconf.py").write_text('dependencies = ["torch"]\nfrom torchvision.models.resnet import resnet50\n')
    checkpoints = home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(torchvision_state, checkpoints / ResNet50_Weights.IMAGENET1K_V2.url.rsplit("/", 1)[1])


def hugging_face_cache_with_timm(cache: Path, model: str, state: dict[str, torch.Tensor]) -> None:
    """What ``timm.create_model(model, pretrained=True)`` finds offline (HF_HUB_OFFLINE=1): the
    model's weights file in a Hugging Face hub cache (here, fabricated weights)."""
    from safetensors.torch import save_file

    repo = cache / f"models--timm--{model}"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    save_file({k: v.contiguous() for k, v in state.items()}, snapshot / "model.safetensors")


def run_authors_main(model: str, images: Path, out: Path, home: Path) -> subprocess.Popen:
    env = {**os.environ, "TORCH_HOME": str(home / "torch"), "HF_HUB_CACHE": str(home / "hf"), "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "PYTHONPATH": str(HARNESS.parent / "authors_code")}  # fmt: skip
    args = ["--model", model, "--imagenet", str(images), "--device", "cpu", "--batch_size", str(BATCH),
            "--num_batches", "1", "--num_workers", "0", "--n_trials", str(TRIALS), "--output_path", str(out),
            "--save_logits", "false"]  # fmt: skip
    log = open(out.parent / f"{out.name}.log", "w")
    return subprocess.Popen([sys.executable, str(HARNESS), *args], stdout=log, stderr=subprocess.STDOUT, env=env)


def authors_results(out: Path) -> pd.DataFrame:
    (path,) = out.glob("*.pt")
    rows = torch.load(path, weights_only=False)["trials"]
    table = pd.DataFrame([r for r in rows if r["layer"] != "original"])
    table["layer"] = table["layer"].str.removeprefix("model.")  # inside their normalizing wrapper
    return table.rename(columns={"trial": "seed"}).set_index(["layer", "seed"])


@pytest.fixture(scope="module")
def both_runs(tmp_path_factory):
    """The authors' main.py and this workflow (seed scheme authors) on the same two models."""

    work = tmp_path_factory.mktemp("authors")
    images = image_folder(work / "images")
    import timm
    import torchvision

    calibration = calibration_images(images)
    timm_weights = fabricated_weights(timm.create_model("resnet50"), 1, calibration)
    torch.save(timm_weights, work / "timm_resnet50.pth")
    hugging_face_cache_with_timm(work / "hf", "resnet50.a1_in1k", timm_weights)
    tv_weights = fabricated_weights(torchvision.models.resnet50(), 2, calibration)
    torch.save(tv_weights, work / "tv_resnet50.pth")
    torch_hub_with_torchvision(work / "torch", torchvision_state=tv_weights)

    theirs = {}
    procs = {}
    for model_id in MODELS:
        out = work / "authors" / model_id
        out.mkdir(parents=True)
        procs[model_id] = (run_authors_main(model_id, images, out, work), out)

    # meanwhile, the workflow on the same models and images
    spec = {"timm": "resnet50", "layers": "resnet50.tsv"}
    write_layer_list(work, "resnet50", spec)
    zoo = {
        "architectures": {"resnet50": spec},
        "categories": [{"id": "baseline", "label": "Baseline"}],
        "models": [
            {"id": "resnet50.a1_in1k", "category": "baseline", "architecture": "resnet50", "normalization": IMAGENET,
             "source": {"kind": "url", "url": str(work / "timm_resnet50.pth")}},
            {"id": "tv2_resnet50", "category": "baseline", "architecture": "resnet50", "normalization": IMAGENET,
             "source": {"kind": "url", "url": str(work / "tv_resnet50.pth")}, "authors_constructor": {"torchvision": "resnet50"}},
        ],
    }  # fmt: skip
    (work / "zoo.yaml").write_text(yaml.safe_dump(zoo, sort_keys=False))
    config = {
        "study": "trials", "zoo": "zoo.yaml", "device": "cpu", "batch_size": BATCH,
        "data": {"kind": "folder", "root": str(images), "subset_size": BATCH, "subset_seed": 0},
        "reset": {"mode": "randomize", "seeds": list(range(TRIALS)), "seed_scheme": "authors",
                  "layers": {"types": ["Conv2d", "Linear", "BatchNorm2d"], "include": LAYERS}},
    }  # fmt: skip
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    run_snakemake(work, "--configfile", str(work / "config.yaml"), "--cores", "1", "results/trials/tables/randomize/resets.csv")
    ours = pd.read_csv(work / "results/trials/tables/randomize/resets.csv")

    for model_id, (proc, out) in procs.items():
        assert proc.wait(timeout=900) == 0, (out.parent / f"{out.name}.log").read_text()[-4000:]
        theirs[model_id] = authors_results(out)
    return work, ours, theirs


@pytest.mark.slow
@pytest.mark.parametrize("model_id", MODELS)
def test_every_trial_of_every_layer_equals_the_authors_main_py(both_runs, model_id):
    _, ours, theirs = both_runs
    mine = ours[ours["model"] == model_id].set_index(["layer", "seed"]).sort_index()
    assert len(mine) == len(LAYERS) * TRIALS
    assert (mine["seed_scheme"] == "authors").all()
    reference = theirs[model_id].loc[mine.index]
    for own, their in (("cosine", "pred_cos_sim"), ("l1", "pred_l1_err"), ("l2", "pred_l2_err")):
        gap = (mine[own] - reference[their]).abs()
        assert gap.max() <= 1e-5, f"{model_id} {own}: largest gap {gap.max():.2e} at {gap.idxmax()}"
    assert np.allclose(mine["top1"], reference["top1_acc"], atol=1e-6)
    # the comparison says something: resets change the outputs, differently per trial
    assert (mine["cosine"] < 0.9).sum() >= 3, mine["cosine"].unstack("seed")
    spread = mine["cosine"].unstack("seed")
    assert (spread.max(axis=1) - spread.min(axis=1)).max() > 1e-3


def published_csv(work: Path, swap_trials_of: str) -> Path:
    """The authors' main.py outputs as their released results.csv (what their
    convert_pt_checkpoints_to_csv makes: one row per model, module and trial, recovered_acc
    against the clean top-1; the release holds the Conv2d and Linear modules only), with two
    trials of one model swapped: the same distribution over trials, other draws per trial."""
    tables = []
    for path in sorted((work / "authors").glob("*/*.pt")):
        record = torch.load(path, weights_only=False)
        table = pd.DataFrame(record["trials"])
        clean = table.loc[table["layer"] == "original", "top1_acc"].item()
        table["recovered_acc"] = table["top1_acc"] / clean if clean else np.nan
        table["model_id"] = record["args"]["model"]
        tables.append(table[(table["layer"] != "original") & ~table["layer"].str.contains("bn|downsample.1", regex=True)])
    published = pd.concat(tables, ignore_index=True)
    swap = published["model_id"] == swap_trials_of
    published.loc[swap, "trial"] = published.loc[swap, "trial"].map({0: 0, 1: 2, 2: 1})
    published["batch_acc"] = None
    out = work / "published.csv"
    published[["top1_acc", "top5_acc", "loss", "batch_acc", "layer", "pred_cos_sim", "pred_l1_err", "pred_l2_err",
               "pred_ce_loss", "trial", "recovered_acc", "model_id"]].to_csv(out, index=False)  # fmt: skip
    return out


@pytest.mark.slow
def test_the_trial_by_trial_replication_leaves_float_noise_and_names_a_model_whose_trials_differ(both_runs):
    """With the authors' results as the published ones, the per-trial comparison finds float noise
    for the model as drawn, and names the model whose published trials 1 and 2 were swapped,
    which the comparison of means over trials cannot see."""
    import hashlib

    work, _, _ = both_runs
    csv = published_csv(work, swap_trials_of="tv2_resnet50")
    config = yaml.safe_load((work / "config.yaml").read_text())
    digest = hashlib.sha256(csv.read_bytes()).hexdigest()
    config["published"] = {"url": str(csv), "sha256": digest, "zoo": str(work / "zoo.yaml"), "trial_tolerance": 0.01}
    path = work / "config_published.yaml"
    path.write_text(yaml.safe_dump(config))
    run_snakemake(work, "--configfile", str(path), "--cores", "1", "replication")

    tables = work / "results/trials/tables/randomize"
    by_model = pd.read_csv(tables / "replication_trials.csv").set_index("model")
    assert bool(by_model.loc["tv2_resnet50", "beyond_tolerance"]) and not bool(by_model.loc["resnet50.a1_in1k", "beyond_tolerance"])
    assert by_model.loc["resnet50.a1_in1k", "max_abs_residual"] <= 1e-3  # 100 × a cosine gap of ≤ 1e-5
    assert by_model.loc["tv2_resnet50", "max_abs_residual"] > 0.1
    assert by_model.index[0] == "tv2_resnet50"  # largest residual first
    points = pd.read_csv(tables / "replication_trials_layers.csv")
    # the Conv2d/Linear layers compared (the published study's), each for 3 trials, per model
    assert len(points) == 2 * TRIALS * len([l for l in LAYERS if "bn" not in l])
    # the mean over trials is the same: the model-level comparison finds agreement for both
    means = pd.read_csv(tables / "replication.csv").set_index("model")
    assert (means["mean_abs_difference"] < 1e-3).all()
    figure = work / "results/trials/figures/randomize/replication_trials.png"
    assert figure.stat().st_size > 10_000
    log = (work / "results/trials/logs/figures/randomize/replication_trials.log").read_text()
    assert "1 model(s) beyond the tolerance 0.01: ['tv2_resnet50']" in log


@pytest.mark.slow
def test_the_authors_main_py_covers_every_module_and_the_workflow_a_chosen_subset(both_runs):
    _, _, theirs = both_runs
    for table in theirs.values():
        layers = table.index.get_level_values("layer").unique()
        assert len(layers) == 107 and set(LAYERS) <= set(layers)  # conv, BatchNorm and fc of ResNet-50


def test_the_independent_scheme_is_unchanged_and_the_authors_scheme_is_sequential():
    """independent: seed s is the first model after manual_seed(s), as before the schemes;
    authors: trial t is the (t + 2)-th model after manual_seed(0). The global stream is left alone."""
    from layercrit.models.seed_schemes import fresh_model
    from layercrit.study import Architecture

    arch = Architecture("small", "resnet10t", {"num_classes": 10})
    torch.manual_seed(123)
    before = torch.get_rng_state()
    independent = fresh_model(arch, 1)
    authors = [fresh_model(arch, t, "authors") for t in range(3)]
    assert torch.equal(torch.get_rng_state(), before)

    import timm

    torch.manual_seed(1)
    assert torch.equal(independent.state_dict()["fc.weight"], timm.create_model("resnet10t", num_classes=10).state_dict()["fc.weight"])
    torch.manual_seed(0)
    built = [timm.create_model("resnet10t", num_classes=10) for _ in range(4)]
    for t in range(3):
        for name, tensor in authors[t].state_dict().items():
            assert torch.equal(tensor, built[t + 1].state_dict()[name]), (t, name)
    with pytest.raises(ValueError, match="unknown seed scheme 'sequential'"):
        fresh_model(arch, 0, "sequential")


def test_the_verified_versions_are_the_locked_ones():
    """The comparison with the authors' code runs under the lock file's versions; a re-lock must
    carry seed_schemes.VERIFIED_VERSIONS along, after that comparison passed under it."""
    from layercrit.models.seed_schemes import VERIFIED_VERSIONS

    lock = (REPO / "requirements/lock.txt").read_text()
    for package, version in VERIFIED_VERSIONS.items():
        assert re.search(rf"^{package}=={re.escape(version)}(\+\w+)? ", lock, flags=re.M), (package, version)


def test_versions_other_than_the_verified_ones_are_named(monkeypatch):
    """The installed versions are the checked ones; another one is named with both versions (what
    a reset job under the authors' scheme logs)."""
    import layercrit.models.seed_schemes as schemes
    from importlib.metadata import version

    assert schemes.unverified_versions() == {}
    monkeypatch.setitem(schemes.VERIFIED_VERSIONS, "timm", "0.9.2")
    assert schemes.unverified_versions() == {"timm": (version("timm").split("+")[0], "0.9.2")}


def test_a_dry_run_of_the_paper_config_with_the_authors_scheme_plans_the_same_reset_jobs(workdir):
    """The scheme changes which fresh model a seed stands for, not the jobs. Three of the paper's
    models (ResNet-50's 54 layers, 3 seeds); the whole study's 8,262 reset jobs are pinned by
    test_finished_studies."""
    val = standin_imagenet(workdir / "val")
    paper_models = [m["id"] for m in yaml.safe_load((REPO / "config/zoo/paper.yaml").read_text())["models"]]
    counts = {}
    for scheme in ("independent", "authors"):
        config = yaml.safe_load((REPO / "config/config.yaml").read_text())
        config["imagenet_val"] = str(val)
        config["models"] = paper_models[:3]
        config["reset"]["seed_scheme"] = scheme
        path = workdir / f"{scheme}.yaml"
        path.write_text(yaml.safe_dump(config))
        proc = run_snakemake(workdir, "--configfile", str(path), "-n", "--quiet", "rules")
        counts[scheme] = dict(re.findall(r"^(\w+)\s+(\d+)$", proc.stdout, flags=re.M))
    assert int(counts["authors"]["reset"]) == 3 * 54 * 3
    # the same jobs, and the comparison with the published results trial by trial
    added = {"compare_trials_with_published": "1", "total": str(int(counts["independent"]["total"]) + 1)}
    assert counts["authors"] == counts["independent"] | added


def test_an_unknown_seed_scheme_is_refused_at_parse_time(workdir):
    val = standin_imagenet(workdir / "val")
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    config.update(imagenet_val=str(val))
    config["reset"]["seed_scheme"] = "sequential"
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    message = plan_error(workdir, path)
    assert "config key 'reset.seed_scheme': 'sequential' is not allowed; allowed: ['independent', 'authors']" in message


AUTHORS_FIRST_DRAWS = """
import hashlib, json, sys
import torch
from models import get_normalized_model

draws = {}
for model_id in sys.argv[1:]:
    torch.manual_seed(0)
    model = get_normalized_model(model_id, pretrained=False)  # no download: every loading step is skipped
    state = {k.removeprefix("model."): v for k, v in model.state_dict().items() if k not in ("mean", "std")}
    draws[model_id] = [hashlib.sha256(b"".join(state[k].numpy().tobytes() for k in sorted(state))).hexdigest(),
                       hashlib.sha256(torch.get_rng_state().numpy().tobytes()).hexdigest()]
print(json.dumps(draws))
"""


@pytest.mark.slow
def test_each_paper_model_is_drawn_by_the_constructor_the_authors_loader_uses_for_it(tmp_path):
    """Their get_normalized_model has a branch per source (robust_*, DINO, SwAV, URLs, tv2,
    shape/texture-debiased, diffusion noise, SupCon, SimCLRv2, file://, Google Drive, timm ids);
    each builds one model, whose construction draws from the global stream before any weights
    are loaded. For all 51 paper models: after torch.manual_seed(0) their loader (weights not
    loaded) and the workflow's constructor under the authors' scheme give the same tensors and
    leave the stream in the same state, so trial t, the (t + 2)-th construction, is the same."""
    import hashlib

    from layercrit.study import PUBLISHED_STUDY, build_study, load_zoo
    from layercrit.models.zoo import build_architecture

    zoo_path = REPO / "config/zoo/paper.yaml"
    study = build_study(PUBLISHED_STUDY, load_zoo(zoo_path), zoo_path.parent)
    assert study.seed_scheme == "authors" and len(study.models) == 51
    torch_hub_with_torchvision(tmp_path / "torch", torchvision_state={})
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "torch"), "PYTHONPATH": str(HARNESS.parent / "authors_code")}
    proc = subprocess.run([sys.executable, "-c", AUTHORS_FIRST_DRAWS, *study.models], capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    theirs = json.loads(proc.stdout.strip().splitlines()[-1])
    for model_id in study.models:
        torch.manual_seed(0)
        state = build_architecture(study.fresh_architecture(model_id)).state_dict()
        ours = [hashlib.sha256(b"".join(state[k].numpy().tobytes() for k in sorted(state))).hexdigest(),
                hashlib.sha256(torch.get_rng_state().numpy().tobytes()).hexdigest()]  # fmt: skip
        assert ours == theirs[model_id], model_id
