"""A result enters the tables only if it is what its path says and was computed from the files
its model's baseline evaluated."""

import pandas as pd
import pytest

from layercrit.aggregation import check_against_baselines, read_reset_results
from layercrit.io import write_json
from layercrit.study import reset_result_identity, reset_result_path

HASHES = {"checkpoint_sha256": "c" * 64, "eval_data_sha256": "e" * 64, "logits_sha256": "l" * 64}


def result(model="m", layer="layer1.0.conv1", seed=0, mode="randomize", **extra):
    return {"model": model, "layer": layer, "seed": seed, "mode": mode, "criticality": 1.0, **HASHES, **extra}


def test_result_paths_and_their_identity_round_trip():
    path = "results/s/" + reset_result_path("zero", "m.v2", "layer1.0.conv1", 7)
    assert path == "results/s/resets/zero/m.v2/layer1.0.conv1/seed7.json"
    assert reset_result_identity(path) == {"model": "m.v2", "layer": "layer1.0.conv1", "seed": 7, "mode": "zero"}


def test_a_result_read_from_another_path_than_its_own_is_refused(tmp_path):
    good = tmp_path / reset_result_path("randomize", "m", "fc", 1)
    write_json(good, result(layer="fc", seed=1))
    assert len(read_reset_results([good])) == 1
    # a `zero` result where a `randomize` one belongs (what a model id ".." once made possible)
    misplaced = tmp_path / reset_result_path("randomize", "m", "conv1", 0)
    write_json(misplaced, result(layer="conv1", mode="zero"))
    with pytest.raises(ValueError, match=r"records .*'mode': 'zero'.* but its path says .*'mode': 'randomize'"):
        read_reset_results([good, misplaced])


def test_a_result_computed_from_other_inputs_than_the_baseline_is_refused():
    resets = pd.DataFrame([result(seed=0), result(seed=1, checkpoint_sha256="d" * 64)])
    baselines = {"m": {"model": "m", **HASHES}}
    with pytest.raises(ValueError, match=r"1 reset result\(s\) of 'm' .*seed 1.* another checkpoint .*--forcerun b/m.json"):
        check_against_baselines(resets, baselines, {"m": "b/m.json"})
    check_against_baselines(resets.iloc[:1], baselines, {"m": "b/m.json"})  # the consistent one passes


def test_results_without_recorded_inputs_are_refused():
    resets = pd.DataFrame([{k: v for k, v in result().items() if not k.endswith("_sha256")}])
    with pytest.raises(ValueError, match="older version"):
        check_against_baselines(resets, {"m": {"model": "m"}}, {"m": "b/m.json"})


def published_study():
    from conftest import REPO
    from layercrit.study import PUBLISHED_STUDY
    from layercrit.study import build_study, load_zoo

    zoo = REPO / "config/zoo/paper.yaml"
    return build_study(PUBLISHED_STUDY, load_zoo(zoo), zoo.parent), zoo


def published_rows(models, seeds=(0, 1, 2), layers=("conv1", "fc")):
    """Tidy rows as published.published_to_tidy makes them from the authors' file."""
    return pd.DataFrame(
        [
            {"model": m, "layer": l, "seed": s, "mode": "randomize", "criticality": 10.0 * s + i, "cosine": 0.9,
             "top1": 50.0, "source": "published"}
            for i, m in enumerate(models) for l in layers for s in seeds
        ]
    )  # fmt: skip


def test_the_published_tables_hold_the_models_of_the_results_in_zoo_order():
    from layercrit.aggregation import published_tables

    study, zoo = published_study()
    assert study.seeds == [0, 1, 2] and "tv_resnet50" in study.models
    tables = published_tables(study, published_rows(["resnet50_dino", "tv_resnet50"]), zoo)
    # the zoo's other models are not in the results: they are not in the tables either
    assert tables.models["model"].tolist() == ["tv_resnet50", "resnet50_dino"]
    assert tables.summary["model"].unique().tolist() == ["tv_resnet50", "resnet50_dino"]
    assert (tables.summary["n_seeds"] == 3).all() and (tables.models["top1_source"] == "reported").all()


def test_published_results_of_other_models_or_trials_are_refused():
    from layercrit.aggregation import published_tables

    study, zoo = published_study()
    with pytest.raises(ValueError, match=r"not in the zoo .*paper.yaml: \['my_model'\]"):
        published_tables(study, published_rows(["tv_resnet50", "my_model"]), zoo)
    with pytest.raises(ValueError, match=r"trials \(seeds\) \[0, 1\], but the published study has the seeds \[0, 1, 2\]"):
        published_tables(study, published_rows(["tv_resnet50"], seeds=(0, 1)), zoo)
