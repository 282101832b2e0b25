"""Issue 30 H2: `training.retrain: true` after a run that fetched the zoo's recorded checkpoints
trains the models here, and through them re-makes their baselines and reset results; the tables
refuse a checkpoint that the study says was trained here but was fetched."""

import pytest
import torch
import yaml

from conftest import REPO, run_snakemake, tiny_study
from test_config_errors import break_config
from test_workflow import planned_jobs


@pytest.mark.slow
def test_switching_to_retrain_after_fetching_the_recorded_checkpoints_trains_them(workdir):
    from layercrit.study import relocatable_zoo

    path = tiny_study(workdir)
    # the demo's own recipes: its recorded checkpoints are theirs (tiny_study shortens them)
    (workdir / "zoo.yaml").write_text(yaml.safe_dump(relocatable_zoo(REPO / "config/zoo/demo.yaml"), sort_keys=False))
    break_config(path, lambda c: (c.update(models=["demo_baseline"], training={**c["training"], "retrain": False}),
                                  c["reset"].update(seeds=[0], layers={"include": ["fc"]})))  # fmt: skip
    run_snakemake(workdir, "--configfile", str(path), "--cores", "2")
    assert planned_jobs(workdir, path) == {}
    break_config(path, lambda c: c["training"].update(retrain=True))
    jobs = planned_jobs(workdir, path)
    assert jobs["train_model"] == 1 and jobs["baseline"] == 1 and jobs["reset"] == 1 and jobs["synthetic_data"] == 1, jobs
    assert "download_model" not in jobs


def save(path, metadata):
    from layercrit.zoo import save_checkpoint

    save_checkpoint(path, {"w": torch.ones(2)}, None, metadata)


def test_the_tables_refuse_a_fetched_checkpoint_of_a_model_trained_here(tmp_path):
    from layercrit.readback import check_trained_checkpoints

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
