"""The pure parts of the workflow's rules (layercrit.study.jobs): params and priorities, from the
study alone. (That their values are unchanged for finished studies: test_finished_studies.)"""

import pytest
import yaml

from conftest import REPO


@pytest.fixture(scope="module")
def demo():
    from layercrit.study import load_workflow_study

    return load_workflow_study(yaml.safe_load((REPO / "config/demo.yaml").read_text()), root=REPO)


def test_a_checkpoints_params_are_the_fields_that_make_it_and_training_leaves_out_its_result(demo):
    from layercrit.study.jobs import CHECKPOINT_FIELDS, checkpoint_entry, training_entry

    entry = checkpoint_entry(demo.study, "demo_baseline")
    assert tuple(entry) == CHECKPOINT_FIELDS and "name" not in entry and "display_name" not in entry
    assert "checkpoint" in entry["source"]  # the demo records its trained checkpoints
    trained = training_entry(demo.study, "demo_baseline")
    assert "checkpoint" not in trained["source"] and {k: v for k, v in entry["source"].items() if k != "checkpoint"} == trained["source"]


def test_the_longest_training_comes_first():
    from layercrit.study import Model
    from layercrit.study.jobs import training_priority

    def model(recipe, adversarial=None):
        return Model("m", "m", "c", "a", {"kind": "train", "recipe": recipe}, adversarial=adversarial)

    assert training_priority(model({"epochs": 3})) == 3
    assert training_priority(model({"epochs": 3}, {"norm": "l2", "epsilon": 0.1})) == 9  # 2 attack steps a batch by default
    assert training_priority(model({"epochs": 3, "adversarial_steps": 5}, {"norm": "l2", "epsilon": 0.1})) == 18
    assert training_priority(model({})) == 10


def test_reset_jobs_run_in_the_studys_order_each_model_within_its_rank(demo):
    from layercrit.study.jobs import model_rank, reset_priorities

    priorities = reset_priorities(demo.study)
    jobs = demo.study.reset_jobs()
    ordered = [priorities[m, layer, str(seed)] for m, layer, seed in jobs]
    assert ordered == sorted(ordered, reverse=True) and len(set(ordered)) == len(jobs)
    models = list(demo.study.models)
    for (m, _, _), priority in zip(jobs, ordered):
        assert model_rank(models, m) < priority < model_rank(models, m) + 1


def test_the_data_jobs_params():
    from layercrit.study.jobs import data_params, synthetic_split

    data = {"kind": "synthetic", "seed": 5, "train_images": 8, "eval_images": 4, "n_classes": 3, "image_size": 16, "pipeline": "study"}
    assert synthetic_split(data, "train")["seed"] == 5 and synthetic_split(data, "eval")["seed"] == 6
    assert synthetic_split(data, "eval")["n_images"] == 4
    assert "pipeline" not in data_params(data, False)
    folder = {"kind": "folder", "root": "x", "resize": 36, "crop": 32, "pipeline": "per_model"}
    assert data_params(folder, True) == {"kind": "folder", "root": "x"}
    assert data_params(folder, False) == {"kind": "folder", "root": "x", "resize": 36, "crop": 32}
