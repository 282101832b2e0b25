"""Jobs side by side: a result depends on its model, layer and seed, never on what runs beside it.

The README's headline command runs several evaluations at once, as threads of one Snakemake
process, one per GPU. Emulated GPUs (``LAYERCRIT_EMULATED_GPUS=N``: N CPU devices in the device
pool, one evaluation thread each) run that path on a machine without a GPU: a study of three
models (two architectures) × three seeds, activation reuse on, under both seed schemes, with
downloads and baselines of other models running beside the resets (4 devices, --resources
gpu=4) and with 8 devices under --resources gpu=1; every reset result must be bitwise the one
a serial evaluation in this process computes (one thread, the full forward pass, a fresh cache).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import REPO, run_snakemake

pytestmark = pytest.mark.slow

MODELS = ["demo_baseline", "demo_linf_1", "demo_vit"]
SEEDS = [0, 1, 2]
# a few layers of each architecture, in different segments (the stem, blocks, the head)
LAYERS = ["conv1", "layer1.0.conv2", "layer3.0.conv1", "fc", "patch_embed.proj", "blocks.1.attn.qkv", "blocks.3.mlp.fc2", "head"]
# the metrics of a reset result (provenance, which says where and when, aside)
METRICS = ("cosine", "criticality", "criticality_se_images", "top1", "top5", "recovered_acc", "kl", "n_nonfinite")


def write_study(workdir: Path, name: str, seed_scheme: str) -> Path:
    from layercrit.study import relocatable_zoo

    zoo = relocatable_zoo(REPO / "config/zoo/demo.yaml")
    for model in zoo["models"]:  # the demo's recorded checkpoints, found from this directory
        recorded = model["source"].get("checkpoint")
        if recorded and "://" not in recorded["url"]:
            recorded["url"] = str(REPO / recorded["url"])
    (workdir / "zoo.yaml").write_text(yaml.safe_dump(zoo, sort_keys=False))
    config = yaml.safe_load((REPO / "config/demo.yaml").read_text())
    config.update(study=name, zoo="zoo.yaml", models=MODELS, device="auto", activation_cache_mb=64)
    config["data"]["eval_images"] = 64
    config["reset"].update(seeds=SEEDS, seed_scheme=seed_scheme, layers={"types": ["Conv2d", "Linear"], "include": LAYERS})
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def reset_results(workdir: Path, name: str) -> dict[tuple[str, str, int], dict]:
    results = {}
    for path in (workdir / "results" / name / "resets").rglob("*.json"):
        r = json.loads(path.read_text())
        results[r["model"], r["layer"], r["seed"]] = r
    return results


def serial_results(workdir: Path, name: str, config_path: Path) -> dict[tuple[str, str, int], dict]:
    """Every reset of the study evaluated here, one after another on one CPU thread, with the full
    forward pass, from the checkpoints and baselines the workflow made."""
    from layercrit.evaluation import EvaluationCache, ResetInputs, evaluate_reset
    from layercrit.evaluation.forward import EvalSettings
    from layercrit.study import load_study, validated

    config = validated(yaml.safe_load(config_path.read_text()), "config", "config")
    config["zoo"] = str(workdir / config["zoo"])
    study = load_study(config)
    settings = EvalSettings(device="cpu", batch_size=config["batch_size"], activation_cache_mb=0, cpu_threads=1)
    cache, out, results = EvaluationCache(), workdir / "serial", {}
    root = workdir / "results" / name
    for model, layer, seed in study.reset_jobs():
        files = ResetInputs(
            checkpoint=root / f"models/{model}.safetensors",
            eval=root / "data/eval.safetensors",
            logits=root / f"baselines/{model}.logits.safetensors",
            baseline=root / f"baselines/{model}.json",
        )
        results[model, layer, seed] = evaluate_reset(
            model_id=model,
            arch=study.architectures[study.models[model].architecture],
            files=files,
            layer=layer,
            seed=seed,
            mode="randomize",
            settings=settings,
            out=out / f"{model}-{layer}-{seed}.json",
            seed_scheme=study.seed_scheme,
            fresh_arch=study.fresh_architecture(model),
            cache=cache,
        )
    return results


def assert_bitwise_equal(side_by_side: dict, serial: dict) -> None:
    assert set(side_by_side) == set(serial) and len(serial) == 3 * 3 * 4
    differ = [
        f"{key}: criticality {side_by_side[key]['criticality']!r} side by side, {serial[key]['criticality']!r} serial"
        for key in serial
        if any(side_by_side[key][m] != serial[key][m] for m in METRICS if m in serial[key])
    ]
    assert not differ, f"{len(differ)} of {len(serial)} results differ from the serial run:\n" + "\n".join(differ[:12])
    assert all(r["criticality"] > 0 for r in serial.values())  # a reset that reads 0 is no reset


def devices_used(results: dict) -> set[str]:
    return {r["device"].split()[0] for r in results.values()}


def overlapping(workdir: Path, name: str) -> tuple[int, int]:
    """How many reset jobs ran while another reset ran, and while a baseline ran (from the
    results' provenance: the time each was written and how long its job took)."""
    from datetime import datetime, timedelta

    def span(path: Path) -> tuple[datetime, datetime]:
        record = json.loads(path.read_text())
        end = datetime.fromisoformat(record["created"])
        return end - timedelta(seconds=record["wall_s"]), end

    root = workdir / "results" / name
    resets = [span(p) for p in (root / "resets").rglob("*.json")]
    baselines = [span(p) for p in (root / "baselines").glob("*.json")]

    def beside(s, among):
        return any(o is not s and o[0] < s[1] and s[0] < o[1] for o in among)

    return sum(beside(r, resets) for r in resets), sum(beside(r, baselines) for r in resets)


@pytest.mark.parametrize("seed_scheme", ["independent", "authors"])
def test_emulated_gpus_side_by_side_give_the_serial_results(tmp_path, seed_scheme):
    name = f"side_{seed_scheme}"
    config = write_study(tmp_path, name, seed_scheme)

    def run(*args: str, gpus: int):
        return run_snakemake(tmp_path, *args, "--configfile", str(config), env={"LAYERCRIT_EMULATED_GPUS": str(gpus)})

    # 4 GPUs: the first model's baseline first, so that its resets run while the other models
    # download and evaluate their baselines (tables and figures aside: --until reset)
    run(f"results/{name}/baselines/{MODELS[0]}.json", "--cores", "6", "--resources", "gpu=4", gpus=4)
    proc = run("--until", "reset", "--cores", "6", "--resources", "gpu=4", gpus=4)
    assert "GPUs are emulated" in proc.stderr
    side_by_side = reset_results(tmp_path, name)
    serial = serial_results(tmp_path, name, config)
    assert_bitwise_equal(side_by_side, serial)
    assert devices_used(side_by_side) == {f"cpu:{i}" for i in range(4)}  # all four worked
    with_resets, with_baselines = overlapping(tmp_path, name)
    assert with_resets >= 8, f"only {with_resets} reset jobs ran beside another: the test saw no concurrency"
    assert with_baselines >= 1, "no reset job ran beside a baseline of another model"
    if seed_scheme == "authors":
        return
    # 8 GPUs, one granted: every job on the same one (which holds the model and its activations)
    shutil.rmtree(tmp_path / "results" / name / "resets")
    run("--until", "reset", "--cores", "2", "--resources", "gpu=1", gpus=8)
    one_at_a_time = reset_results(tmp_path, name)
    assert_bitwise_equal(one_at_a_time, serial)
    assert devices_used(one_at_a_time) == {"cpu:0"}


def one_reset_study(workdir: Path) -> Path:
    """One demo model, one layer, one seed: a run of seconds."""
    config = yaml.safe_load(write_study(workdir, "tiny", "independent").read_text())
    config["models"] = MODELS[:1]
    config["reset"].update(seeds=[0], layers={"include": ["fc"]})
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_what_a_run_grants_fits_the_machine_it_runs_on(tmp_path):
    """M3, N2 and the finish step of layercrit-slurm, on this machine without a GPU (device auto)."""
    config = one_reset_study(tmp_path)
    result = tmp_path / "results/tiny/resets/randomize/demo_baseline/fc/seed0.json"
    log = tmp_path / "results/tiny/logs/resets/randomize/demo_baseline/fc/seed0.log"

    def run(*args: str, check: bool = True, **env: str):
        return run_snakemake(tmp_path, *args, "--until", "reset", "--configfile", str(config), check=check, env=env)

    # M3: no GPU here and none granted: evaluations run on the CPU (before: every one refused)
    run("--cores", "2", "--resources", "gpu=0")
    assert json.loads(result.read_text())["device"].startswith("cpu (")
    # N2: GPUs granted that the machine lacks, more cores than it has: said, and the job's log
    # says what ran where
    proc = run("--cores", "64", "--resources", "gpu=4", "--forcerun", str(result.relative_to(tmp_path)))
    assert "--resources gpu=4, but no GPU here: evaluations run on the CPU, one at a time" in proc.stderr
    assert re.search(r"--cores 64, but this process may use \d+ CPUs: evaluations use \d+ threads", proc.stderr)
    assert "demo_baseline fc seed 0 (randomize) on cpu (" in log.read_text()
    made = result.stat().st_mtime_ns
    # the finish step of layercrit-slurm evaluates nothing: it stops before its first job
    proc = run("--cores", "2", "--resources", "gpu=0", "--forcerun", str(result.relative_to(tmp_path)), check=False, LAYERCRIT_EVALUATIONS="none")
    assert proc.returncode != 0 and "This run has 1 reset job(s) to evaluate, but this step evaluates nothing" in proc.stderr
    # GPUs here but none granted: stops before its first job, naming the fix
    proc = run("--cores", "2", "--resources", "gpu=0", "--forcerun", str(result.relative_to(tmp_path)), check=False, LAYERCRIT_EMULATED_GPUS="2")
    assert proc.returncode != 0
    assert "it needs a GPU (device: auto, 2 GPU(s) here), but this run grants none (--resources gpu=0)" in proc.stderr
    assert result.stat().st_mtime_ns == made
