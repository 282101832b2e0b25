"""Switching a setting re-makes what it changes, or says that it does not.

Issue 30 H2: `training.retrain: true` after a run that fetched the zoo's recorded checkpoints
trains the models here, and through them re-makes their baselines and reset results; the tables
refuse a checkpoint that the study says was trained here but was fetched. L6: with
`--rerun-triggers mtime` a changed seed scheme re-runs nothing, and the plan says so."""

import shutil

import pytest
import torch
import yaml

from conftest import REPO, run_snakemake, tiny_study
from support.config_cases import break_config
from test_workflow import planned_jobs


@pytest.fixture(scope="module")
def fetched_study(tmp_path_factory):
    """A finished tiny study of one model fetched from the demo zoo's recorded checkpoint (one
    layer, one seed); returns a function giving a copy of its config changed by ``mutate``."""
    from layercrit.study import relocatable_zoo

    workdir = tmp_path_factory.mktemp("fetched")
    path = tiny_study(workdir)
    # the demo's own recipes: its recorded checkpoints are theirs (tiny_study shortens them)
    (workdir / "zoo.yaml").write_text(yaml.safe_dump(relocatable_zoo(REPO / "config/zoo/demo.yaml"), sort_keys=False))
    break_config(path, lambda c: (c.update(models=["demo_baseline"], training={**c["training"], "retrain": False}),
                                  c["reset"].update(seeds=[0], layers={"include": ["fc"]})))  # fmt: skip
    run_snakemake(workdir, "--configfile", str(path), "--cores", "2")
    assert planned_jobs(workdir, path) == {}

    def changed(name, mutate):
        copy = workdir / f"{name}.yaml"
        shutil.copy(path, copy)
        break_config(copy, mutate)
        return workdir, copy

    return changed


@pytest.mark.slow
def test_switching_to_retrain_after_fetching_the_recorded_checkpoints_trains_them(fetched_study):
    workdir, path = fetched_study("retrain", lambda c: c["training"].update(retrain=True))
    jobs = planned_jobs(workdir, path)
    assert jobs["train_model"] == 1 and jobs["baseline"] == 1 and jobs["reset"] == 1 and jobs["synthetic_data"] == 1, jobs
    assert "download_model" not in jobs


@pytest.mark.slow
def test_a_seed_scheme_switched_under_rerun_triggers_mtime_is_named_in_a_warning(fetched_study):
    workdir, path = fetched_study("authors", lambda c: c["reset"].update(seed_scheme="authors"))
    assert planned_jobs(workdir, path)["reset"] == 1  # the default triggers re-run it
    proc = run_snakemake(workdir, "--configfile", str(path), "-n", "--rerun-triggers", "mtime")
    assert "Nothing to be done" in proc.stdout + proc.stderr
    warning = "--rerun-triggers leaves out params, so Snakemake re-runs nothing for the settings changed since"
    output = proc.stdout + proc.stderr
    assert warning in output and "reset.seed_scheme: 'independent' then, 'authors' now" in output
    assert "--forcerun reset for reset.seed_scheme" in output
    proc = run_snakemake(workdir, "--configfile", str(path), "-n", "--rerun-triggers", "mtime", "params")
    assert warning not in proc.stdout + proc.stderr


def save(path, metadata):
    from layercrit.models.zoo import save_checkpoint

    save_checkpoint(path, {"w": torch.ones(2)}, None, metadata)


def test_the_tables_refuse_a_fetched_checkpoint_of_a_model_trained_here(tmp_path):
    from layercrit.analysis.readback import check_trained_checkpoints

    recipe = {"epochs": 2, "lr": 0.1}
    records = {"m": (str(tmp_path / "m.training.json"), {"model": "m", "seed": 7, "recipe": recipe})}
    checkpoint = tmp_path / "m.safetensors"
    save(checkpoint, {"model": "m", "architecture": "a", "seed": 7, "recipe": recipe, "weights": "trained"})
    check_trained_checkpoints(records, {"m": checkpoint})
    # what download_model writes for the zoo's recorded checkpoint: its provenance, the training's inside
    save(checkpoint, {"model": "m", "source": {"kind": "train"}, "files": [{"recorded": {"seed": 7, "weights": "trained"}}]})
    with pytest.raises(ValueError, match=r"m.safetensors was fetched \(source kind 'train'\), not trained here, but the study trains 'm' here .*"
                                         r"snakemake --forcerun .*m.safetensors"):  # fmt: skip
        check_trained_checkpoints(records, {"m": checkpoint})
