"""Issue 21, through the workflow: evaluation data replaced behind Snakemake's back (D1, D2), a
display name changed (D14), a study that no longer makes a figure (D15). One small study (two
models, two layers, one seed), changed step by step: the tests run in this order."""

import json
import os

import pandas as pd
import pytest
import yaml

from conftest import copy_trained, run_snakemake, tiny_study
from test_workflow import planned_jobs

pytestmark = pytest.mark.slow

MODELS = ["demo_baseline", "demo_cutout"]


@pytest.fixture(scope="module")
def study(tmp_path_factory, trained_tiny_zoo):
    workdir = tmp_path_factory.mktemp("bad_input")
    config = tiny_study(workdir, models=MODELS, seeds=(0,))
    copy_trained(trained_tiny_zoo, workdir)
    cfg = yaml.safe_load(config.read_text())
    cfg["reset"]["layers"] = {"include": ["conv1", "fc"]}
    config.write_text(yaml.safe_dump(cfg))
    run_snakemake(workdir, "--configfile", str(config), "--cores", "2")
    return workdir, config, workdir / "results/tiny"


def run(study, *args, check=True):
    workdir, config, _ = study
    return run_snakemake(workdir, "--configfile", str(config), "--cores", "2", *args, check=check)


def test_evaluation_data_replaced_with_its_old_mtime_never_mixes_models_in_the_tables(study):  # D1, D2
    from layercrit.data import ImageSet, load_image_set, save_image_set

    workdir, _, results = study
    data = results / "data/eval.safetensors"
    old = load_image_set(data)
    stamp = data.stat().st_mtime_ns
    save_image_set(ImageSet(old.images[:32].clone(), old.labels[:32].clone()), data)
    os.utime(data, ns=(stamp, stamp))  # Snakemake sees nothing new
    (results / "resets/randomize/demo_cutout/fc/seed0.json").unlink()

    failed = run(study, check=False)
    assert failed.returncode != 0
    job_log = (results / "logs/resets/randomize/demo_cutout/fc/seed0.log").read_text()
    assert "eval.safetensors has changed since the baseline" in job_log
    assert "snakemake --forcerun baseline  (the evaluation data is shared between models" in job_log

    # Recomputing only that model's baseline (the advice before issue 21) must not give tables
    # that mix models evaluated on 64 and on 32 images: the tables check every baseline's files.
    baseline = "results/tiny/baselines/demo_cutout.json"
    partial = run(study, "--forcerun", baseline, check=False)
    assert partial.returncode != 0
    tables_log = (results / "logs/tables/randomize.log").read_text()
    assert "is not the eval data that the baseline(s) of ['demo_baseline'] evaluated" in tables_log
    assert "snakemake --forcerun baseline " in tables_log
    assert not (results / "tables/randomize/resets.csv").exists()  # Snakemake removed the old ones; none mixed

    run(study, "--forcerun", "baseline")
    resets = pd.read_csv(results / "tables/randomize/resets.csv")
    assert set(resets["n_images"]) == {32} and len(resets) == len(MODELS) * 2


def test_forcing_the_tables_checks_the_files_on_disk(study):  # D2
    workdir, _, results = study
    checkpoint = results / "models/demo_cutout.safetensors"
    original, stamp = checkpoint.read_bytes(), checkpoint.stat().st_mtime_ns
    try:
        checkpoint.write_bytes((results / "models/demo_baseline.safetensors").read_bytes())
        os.utime(checkpoint, ns=(stamp, stamp))
        proc = run(study, "--forcerun", "aggregate_tables", check=False)
        assert proc.returncode != 0
        tables_log = (results / "logs/tables/randomize.log").read_text()
        assert "models/demo_cutout.safetensors is not the checkpoint that the baseline(s) of ['demo_cutout']" in tables_log
        assert "snakemake --forcerun results/tiny/baselines/demo_cutout.json" in tables_log
    finally:
        checkpoint.write_bytes(original)
        os.utime(checkpoint, ns=(stamp, stamp))
    run(study, "--forcerun", "aggregate_tables")


def test_renaming_a_models_display_name_remakes_only_tables_and_figures(study):  # D14
    workdir, config, results = study
    zoo = workdir / "zoo.yaml"
    content = yaml.safe_load(zoo.read_text())
    entry = next(m for m in content["models"] if m["id"] == "demo_cutout")
    entry["name"] = "Cutout (renamed)"
    zoo.write_text(yaml.safe_dump(content, sort_keys=False))
    jobs = planned_jobs(workdir, config)
    assert not {"train_model", "download_model", "baseline", "reset"} & set(jobs), jobs
    assert jobs["aggregate_tables"] == 1
    run(study)
    models = pd.read_csv(results / "tables/randomize/models.csv")
    assert "Cutout (renamed)" in set(models["display_name"])


def test_a_figure_the_study_no_longer_makes_is_moved_aside_and_the_index_says_why(study):  # D15
    workdir, config, results = study
    figures = results / "figures/randomize"
    assert (figures / "difference_heatmap.png").exists()
    index = json.loads((figures / "index.json").read_text())
    assert "difference_heatmap" in index["figures"] and "criticality_vs_epsilon" in index["left_out"]
    without_baseline = workdir / "config_without_baseline.yaml"
    cfg = yaml.safe_load(config.read_text())
    cfg["models"] = ["demo_cutout"]
    without_baseline.write_text(yaml.safe_dump(cfg))
    run_snakemake(workdir, "--configfile", str(without_baseline), "--cores", "2")
    assert not (figures / "difference_heatmap.png").exists() and not (figures / "difference_heatmap.pdf").exists()
    assert (figures / "outdated/difference_heatmap.png").exists()
    index = json.loads((figures / "index.json").read_text())
    assert "difference_heatmap" not in index["figures"] and "no baseline model" in index["left_out"]["difference_heatmap"]
    assert (figures / "criticality_heatmap.png").exists()
