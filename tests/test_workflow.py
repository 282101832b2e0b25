"""The workflow end to end on a tiny demo-like study: one job per (model, layer, seed), tables,
figures, partial re-runs, new seeds, and resuming after kill -9."""

import hashlib
import json
import os
import re
import signal
import stat
import subprocess
import time
import zipfile

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from conftest import REPO, SNAKEMAKE, copy_trained, run_snakemake, snakemake_env, tiny_study

MODELS = ["demo_baseline", "demo_linf_4", "demo_control"]
LAYERS = ["conv1", "layer1.0.conv1", "layer1.0.conv2", "layer1.0.conv3", "layer4.0.downsample.0", "fc"]
SEEDS = [0, 1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def study(tmp_path_factory, trained_tiny_zoo):
    workdir = tmp_path_factory.mktemp("tiny")
    config = tiny_study(workdir, models=MODELS, seeds=SEEDS)
    copy_trained(trained_tiny_zoo, workdir)
    cfg = yaml.safe_load(config.read_text())
    cfg["reset"]["layers"] = {"include": ["conv1", "layer1.*", "layer4.0.downsample.0", "fc"]}
    config.write_text(yaml.safe_dump(cfg))
    run_snakemake(workdir, "--configfile", str(config), "--cores", "2")
    return workdir, config


def results_dir(workdir):
    return workdir / "results" / "tiny"


def reset_files(workdir):
    return sorted((results_dir(workdir) / "resets" / "randomize").glob("*/*/seed*.json"))


def planned_jobs(workdir, config, *extra):
    proc = run_snakemake(workdir, "--configfile", str(config), "-n", "--quiet", "rules", *extra)
    return {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)$", proc.stdout, flags=re.M) if rule != "total"}


def test_one_reset_result_per_model_layer_seed(study):
    workdir, _ = study
    resets = pd.read_csv(results_dir(workdir) / "tables/randomize/resets.csv")
    expected = {(m, l, s) for m in MODELS for l in LAYERS for s in SEEDS}
    assert set(zip(resets["model"], resets["layer"], resets["seed"])) == expected
    assert len(resets) == len(expected) == len(reset_files(workdir))
    assert (resets["n_images"] == 64).all() and (resets["mode"] == "randomize").all()
    assert resets["criticality"].between(-1e-6, 100).all()
    assert resets["device"].str.startswith("cpu").all()
    # the table follows the zoo's model order and module order within a model
    assert list(resets["model"].drop_duplicates()) == MODELS
    assert list(resets.loc[resets["model"] == MODELS[0], "layer"].drop_duplicates()) == LAYERS


def test_summary_models_and_figures(study):
    workdir, _ = study
    tables = results_dir(workdir) / "tables/randomize"
    summary = pd.read_csv(tables / "summary.csv")
    assert len(summary) == len(MODELS) * len(LAYERS)
    assert (summary["n_seeds"] == 2).all()
    resets = pd.read_csv(tables / "resets.csv")
    one = resets[(resets["model"] == "demo_baseline") & (resets["layer"] == "fc")]["criticality"]
    row = summary[(summary["model"] == "demo_baseline") & (summary["layer"] == "fc")].iloc[0]
    assert row["criticality_mean"] == pytest.approx(one.mean())
    assert row["criticality_std"] == pytest.approx(one.std(ddof=1))
    assert row["criticality_sem"] == pytest.approx(one.std(ddof=1) / 2**0.5)
    models = pd.read_csv(tables / "models.csv")
    assert list(models["model"]) == MODELS
    assert models["top1"].between(0, 100).all()
    assert models.set_index("model").loc["demo_linf_4", "norm"] == "linf"
    provenance = json.loads((tables / "provenance.json").read_text())
    assert provenance["config"]["study"] == "tiny" and "torch" in provenance["versions"]
    figures = results_dir(workdir) / "figures/randomize"
    for name in ["criticality_heatmap", "criticality_vs_accuracy", "seed_std_heatmap", "difference_heatmap", "criticality_vs_epsilon"]:
        for ext in ("png", "pdf"):
            assert (figures / f"{name}.{ext}").stat().st_size > 1000, name
    assert (tables / "correlations.csv").exists()
    # trained models keep their initial weights for `reinit`
    assert (results_dir(workdir) / "models/demo_baseline.init.safetensors").exists()
    # every output readable by whoever may read a plain file written here (colleagues on a cluster)
    probe = workdir / "probe.txt"
    probe.write_text("x")
    modes = {f.relative_to(workdir): stat.S_IMODE(f.stat().st_mode) for f in results_dir(workdir).rglob("*") if f.is_file()}
    assert set(modes.values()) == {stat.S_IMODE(probe.stat().st_mode)}, modes


def test_deleting_one_result_reruns_exactly_that_job_and_what_depends_on_it(study):
    workdir, config = study
    files = reset_files(workdir)
    victim = files[5]
    before = {f: f.stat().st_mtime_ns for f in files if f != victim}
    victim.unlink()
    jobs = planned_jobs(workdir, config)
    assert jobs.pop("reset") == 1
    assert jobs.pop("aggregate_tables") == 1
    assert set(jobs) <= {"plot_figure", "correlation_table", "model_table", "figure_index", "all"}, jobs
    run_snakemake(workdir, "--configfile", str(config), "--cores", "2")
    assert victim.exists()
    assert {f: f.stat().st_mtime_ns for f in before} == before


def test_adding_a_seed_runs_only_the_new_jobs(study):
    workdir, config = study
    cfg = yaml.safe_load(config.read_text())
    cfg["reset"]["seeds"] = SEEDS + [7]
    bigger = workdir / "config_more_seeds.yaml"
    bigger.write_text(yaml.safe_dump(cfg))
    jobs = planned_jobs(workdir, bigger)
    assert jobs["reset"] == len(MODELS) * len(LAYERS)
    assert "train_model" not in jobs and "baseline" not in jobs and "synthetic_data" not in jobs


def test_kill_9_then_resume_finishes_without_losing_or_recomputing_results(study):
    workdir, config = study
    for f in reset_files(workdir):
        f.unlink()
    total = len(MODELS) * len(LAYERS) * len(SEEDS)
    cmd = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--configfile", str(config), "--cores", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=snakemake_env())
    deadline = time.monotonic() + 300
    while len(reset_files(workdir)) < 8 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    survivors = {f: f.read_bytes() for f in reset_files(workdir)}
    assert 8 <= len(survivors) < total, "the run was not interrupted mid-sweep"
    for content in survivors.values():  # nothing that looks finished is half-written
        assert "criticality" in json.loads(content)

    run_snakemake(workdir, "--unlock", "--configfile", str(config))
    run_snakemake(workdir, "--configfile", str(config), "--cores", "2")
    assert len(reset_files(workdir)) == total
    recomputed = [f for f, content in survivors.items() if f.read_bytes() != content]
    # Only a job whose output was renamed into place in the instant before the kill, before
    # Snakemake recorded it as finished, may run again: at most one per running job.
    assert len(recomputed) <= 2, recomputed
    resets = pd.read_csv(results_dir(workdir) / "tables/randomize/resets.csv")
    assert len(resets) == total


def test_a_failing_evaluation_fails_only_its_own_jobs(study):
    workdir, config = study
    results = results_dir(workdir)
    others = {f: f.read_bytes() for f in reset_files(workdir) if "/demo_control/" not in str(f)}
    # Corrupt one model's clean outputs: its reset jobs must fail, leaving no result behind.
    (results / "baselines/demo_control.logits.safetensors").write_bytes(b"not a safetensors file")
    for f in (results / "resets/randomize/demo_control").glob("*/seed*.json"):
        f.unlink()
    proc = run_snakemake(workdir, "--configfile", str(config), "--cores", "2", "--rerun-triggers", "mtime", check=False)
    assert proc.returncode != 0
    assert not list((results / "resets/randomize/demo_control").glob("*/seed*.json"))
    assert {f: f.read_bytes() for f in others} == others
    failed_log = next((results / "logs/resets/randomize/demo_control").glob("*/seed0.log")).read_text()
    assert "job failed" in failed_log and "Traceback" in failed_log
    # Repaired (the baseline re-made), the same command finishes the study.
    (results / "baselines/demo_control.logits.safetensors").unlink()
    run_snakemake(workdir, "--configfile", str(config), "--cores", "2")
    assert len(reset_files(workdir)) == len(MODELS) * len(LAYERS) * len(SEEDS)


def published_like(own_resets: pd.DataFrame) -> pd.DataFrame:
    """The tiny study's results as the authors would have published them, changed per model:
    demo_baseline +1.5 points on every layer, demo_linf_4 with its layers' values in reverse
    order, demo_control as measured. Three trials with the same value (their mean is that value)."""
    mean = own_resets.groupby(["model", "layer"], sort=False)["criticality"].mean().reset_index()
    published = []
    for model, sub in mean.groupby("model", sort=False):
        values = sub["criticality"].to_numpy()
        if model == "demo_baseline":
            values = values + 1.5
        elif model == "demo_linf_4":
            values = values[::-1]
        for layer, value in zip(sub["layer"], values):
            for trial in (0.0, 1.0, 2.0):
                published.append({
                    "top1_acc": 10.0, "top5_acc": 50.0, "loss": 2.3, "batch_acc": None, "layer": f"model.{layer}",
                    "pred_cos_sim": 1 - value / 100, "pred_l1_err": 0.1, "pred_l2_err": 0.1, "pred_ce_loss": 0.0,
                    "trial": trial, "recovered_acc": 0.1, "model_id": model,
                })  # fmt: skip
    return pd.DataFrame(published)


def test_replication_against_published_results_and_the_report(study):
    workdir, config = study
    tables = results_dir(workdir) / "tables/randomize"
    own = pd.read_csv(tables / "resets.csv")
    published_like(own).to_csv(workdir / "published.csv", index=False)
    cfg = yaml.safe_load(config.read_text())
    digest = hashlib.sha256((workdir / "published.csv").read_bytes()).hexdigest()
    cfg["published"] = {"url": str(workdir / "published.csv"), "sha256": digest, "zoo": str(workdir / "zoo.yaml")}
    compared = workdir / "config_compared.yaml"
    compared.write_text(yaml.safe_dump(cfg))

    # sharing models with the published zoo puts the comparison into the default target
    assert planned_jobs(workdir, compared).get("compare_with_published") == 1
    run_snakemake(workdir, "--configfile", str(compared), "--cores", "2")

    table = pd.read_csv(tables / "replication.csv").set_index("model")
    assert set(table.index) == set(MODELS) and (table["n_layers"] == len(LAYERS)).all()
    own_mean = own.groupby(["model", "layer"], sort=False)["criticality"].mean()
    for model in MODELS:  # by hand: Spearman over layers and mean |own - published|
        mine = own_mean[model].to_numpy()
        theirs = {"demo_baseline": mine + 1.5, "demo_linf_4": mine[::-1], "demo_control": mine}[model]
        rho = stats.spearmanr(mine, theirs).statistic
        assert table.loc[model, "spearman_r"] == pytest.approx(rho, abs=1e-9), model
        assert table.loc[model, "mean_abs_difference"] == pytest.approx(np.abs(mine - theirs).mean(), abs=1e-6), model
    assert table.loc["demo_baseline", "mean_abs_difference"] == pytest.approx(1.5, abs=1e-6)
    assert table.loc["demo_baseline", "spearman_r"] == pytest.approx(1.0)
    assert table.loc["demo_control", "mean_abs_difference"] == pytest.approx(0.0, abs=1e-6)
    assert table.loc["demo_control", "disagreement_rank"] == 3  # agrees best, listed last
    layers = pd.read_csv(tables / "replication_layers.csv")
    assert len(layers) == len(MODELS) * len(LAYERS)
    figure = results_dir(workdir) / "figures/randomize/replication.png"
    assert figure.stat().st_size > 10_000

    report = workdir / "report.zip"
    run_snakemake(workdir, "--configfile", str(compared), "--report", str(report))
    with zipfile.ZipFile(report) as archive:
        names = archive.namelist()
        html = archive.read(next(n for n in names if n.endswith("report.html"))).decode()
    for figure_name in ["criticality_heatmap", "difference_heatmap", "seed_std_heatmap", "criticality_vs_epsilon",
                        "criticality_vs_accuracy", "model_table", "replication"]:  # fmt: skip
        assert any(n.endswith(f"{figure_name}.png") for n in names), figure_name
    assert "Replication" in html and "mean absolute difference over layers" in html  # category and caption


def test_a_checkpoint_changed_after_its_baseline_fails_loudly_until_the_baseline_is_recomputed(study):
    workdir, config = study
    results = results_dir(workdir)
    checkpoint = results / "models/demo_control.safetensors"
    baseline = results / "baselines/demo_control.json"
    original = checkpoint.read_bytes()
    # Replaced by another model's weights, with a modification time older than the baseline's,
    # so Snakemake sees no reason to re-run anything but the deleted result.
    checkpoint.write_bytes((results / "models/demo_baseline.safetensors").read_bytes())
    stamp = baseline.stat().st_mtime_ns - 10**9
    os.utime(checkpoint, ns=(stamp, stamp))
    victim = results / "resets/randomize/demo_control/fc/seed0.json"
    victim.unlink()
    proc = run_snakemake(workdir, "--configfile", str(config), "--cores", "2", check=False)
    assert proc.returncode != 0
    assert not victim.exists()
    job_log = (results / "logs/resets/randomize/demo_control/fc/seed0.log").read_text()
    command = f"snakemake --forcerun {baseline.relative_to(workdir)}"
    assert "models/demo_control.safetensors has changed since the baseline" in job_log and command in job_log

    # The command the message gives recomputes the baseline and every reset result of the model.
    others = {f: f.stat().st_mtime_ns for f in reset_files(workdir) if "/demo_control/" not in str(f)}
    run_snakemake(workdir, "--configfile", str(config), "--cores", "2", "--forcerun", str(baseline.relative_to(workdir)))
    summary = json.loads(baseline.read_text())
    assert summary["checkpoint_sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    control = [f for f in reset_files(workdir) if "/demo_control/" in str(f)]
    assert len(control) == len(LAYERS) * len(SEEDS)
    assert all(json.loads(f.read_text())["checkpoint_sha256"] == summary["checkpoint_sha256"] for f in control)
    assert {f: f.stat().st_mtime_ns for f in others} == others  # no other model's results recomputed

    # README "Re-run a part": a deleted intermediate is re-made with --forcerun <file>.
    checkpoint.unlink()
    assert "reset" not in planned_jobs(workdir, config)  # deleting alone does nothing (documented)
    forced = planned_jobs(workdir, config, "--forcerun", str(checkpoint.relative_to(workdir)))
    assert forced["train_model"] == 1 and forced["baseline"] == 1 and forced["reset"] == len(LAYERS) * len(SEEDS)
    run_snakemake(workdir, "--configfile", str(config), "--cores", "2", "--forcerun", str(checkpoint.relative_to(workdir)))
    assert checkpoint.read_bytes() == original  # training is deterministic: the model it was


def test_switching_the_seed_scheme_recomputes_the_randomize_results_and_the_default_changes_nothing(study):
    """Results made before seed schemes existed are the default scheme's: naming it plans nothing;
    the authors' scheme stands for other fresh models and re-runs every reset (params changed)."""
    workdir, config = study
    cfg = yaml.safe_load(config.read_text())
    for scheme, expected in (("independent", None), ("authors", len(MODELS) * len(LAYERS) * len(SEEDS))):
        cfg["reset"]["seed_scheme"] = scheme
        path = workdir / f"config_{scheme}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        assert planned_jobs(workdir, path).get("reset") == expected, scheme


def test_a_table_that_mixes_seed_schemes_is_refused():
    from layercrit.analysis.readback import check_seed_scheme

    resets = pd.DataFrame({"model": ["a", "a", "a"], "layer": ["x", "y", "z"], "seed": [0, 0, 0],
                           "mode": ["randomize"] * 3, "seed_scheme": ["authors", None, "authors"]})  # fmt: skip
    check_seed_scheme(resets.iloc[[0, 2]], "authors")
    check_seed_scheme(resets.iloc[[1]], "independent")  # a result from before the schemes: independent
    with pytest.raises(ValueError, match=r"1 randomize result\(s\) \(e.g. a y seed 0\) were drawn under seed scheme 'independent'"):
        check_seed_scheme(resets, "authors")
