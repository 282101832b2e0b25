"""Issue 30 M1: every figure the workflow draws into figures/<mode>/ is one the figure index
knows, so a figure the study no longer makes is moved to outdated/, whichever it is."""

import json
import re

import pytest
import yaml

from conftest import REPO, run_snakemake, standin_imagenet
from layercrit.figures.index import KNOWN_FIGURES, write_figure_index


def test_the_trial_by_trial_replication_is_moved_aside_when_the_study_stops_making_it(tmp_path):
    """reset.seed_scheme back to independent: replication_trials.png|pdf of the earlier run."""
    figures = tmp_path / "figures/randomize"
    figures.mkdir(parents=True)
    for name in ("replication", "replication_trials"):
        for ext in ("png", "pdf"):
            (figures / f"{name}.{ext}").write_bytes(b"figure")
    reason = "reset.seed_scheme is 'independent': its seeds are not the authors' trials"
    moved = write_figure_index(figures, ["replication"], {"replication_trials": reason}, figures / "index.json")
    assert sorted(p.name for p in moved) == ["replication_trials.pdf", "replication_trials.png"]
    assert not (figures / "replication_trials.png").exists() and (figures / "outdated/replication_trials.png").exists()
    assert (figures / "replication.png").exists()
    assert json.loads((figures / "index.json").read_text())["left_out"] == {"replication_trials": reason}


@pytest.mark.parametrize("name", KNOWN_FIGURES)
def test_every_known_figure_is_moved_aside_when_left_out(tmp_path, name):
    (tmp_path / f"{name}.png").write_bytes(b"figure")
    assert write_figure_index(tmp_path, [], {name: "why"}, tmp_path / "index.json") == [tmp_path / "outdated" / f"{name}.png"]


def test_every_figure_a_study_plans_is_one_the_index_knows(workdir):
    """The paper's study under the authors' seed scheme plans every kind of figure there is (the
    study's, Table 1, the replication of means and of trials): each is in the one list."""
    val = standin_imagenet(workdir / "val")
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    config.update(zoo=str(REPO / config["zoo"]), imagenet_val=str(val))
    config["reset"]["seed_scheme"] = "authors"
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = run_snakemake(workdir, "--configfile", str(path), "-n", "--logger-layercrit-jobs")
    planned = set(re.findall(r"results/paper/figures/randomize/(\w+)\.png", proc.stdout))
    assert {"criticality_heatmap", "model_table", "replication", "replication_trials"} <= planned
    assert planned <= set(KNOWN_FIGURES), planned - set(KNOWN_FIGURES)
