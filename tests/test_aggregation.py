import math
"""A result enters the tables only if it is what its path says and was computed from the files
its model's baseline evaluated."""

import numpy as np
import pandas as pd
import pytest

from layercrit.analysis.readback import check_against_baselines, read_reset_results
from layercrit.io import write_json
from layercrit.study import reset_result_identity, reset_result_path

HASHES = {"checkpoint_sha256": "c" * 64, "eval_data_sha256": "e" * 64, "logits_sha256": "b" * 64}


def result(model="m", layer="layer1.0.conv1", seed=0, mode="randomize", **extra):
    """A reset result as a reset job writes it (the keys its schema requires)."""
    metrics = {"criticality": 1.0, "cosine": 0.99, "top1": 50.0, "top5": 80.0, "n_images": 64, "n_nonfinite": 0}
    return {"model": model, "layer": layer, "seed": seed, "mode": mode, **metrics, "original_top1": 60.0, **HASHES, **extra}


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
    baselines = {"m": {"model": "m", "top1": 60.0, "n_images": 64, **HASHES}}
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
    from layercrit.analysis.aggregation import published_tables

    study, zoo = published_study()
    assert study.seeds == [0, 1, 2] and "tv_resnet50" in study.models
    tables = published_tables(study, published_rows(["resnet50_dino", "tv_resnet50"]), zoo)
    # the zoo's other models are not in the results: they are not in the tables either
    assert tables.models["model"].tolist() == ["tv_resnet50", "resnet50_dino"]
    assert tables.summary["model"].unique().tolist() == ["tv_resnet50", "resnet50_dino"]
    assert (tables.summary["n_seeds"] == 3).all() and (tables.models["top1_source"] == "reported").all()


def test_published_results_of_other_models_or_trials_are_refused():
    from layercrit.analysis.aggregation import published_tables

    study, zoo = published_study()
    with pytest.raises(ValueError, match=r"not in the zoo .*paper.yaml: \['my_model'\]"):
        published_tables(study, published_rows(["tv_resnet50", "my_model"]), zoo)
    with pytest.raises(ValueError, match=r"trials \(seeds\) \[0, 1\], but the published study has the seeds \[0, 1, 2\]"):
        published_tables(study, published_rows(["tv_resnet50"], seeds=(0, 1)), zoo)


def _summary_rows(rows):
    from layercrit.analysis.aggregation import summarize

    resets = pd.DataFrame(
        [
            {"model": m, "layer": l, "layer_index": i, "layer_type": "Conv2d", "kernel": "3x3", "seed": s,
             "criticality": c, "criticality_se_images": se, "n_images": 1000, "cosine": 1 - c / 100}
            for m, l, i, s, c, se in rows
        ]
    )  # fmt: skip
    return summarize(resets)


def test_the_interval_combines_seeds_and_images_as_documented():
    """Seeds 10, 12, 11 (std 1) with image SEs 0.5, 0.6, 0.7: se² = 1²/3 + 0.6², Welch–
    Satterthwaite df = se⁴ / ((1/3)²/2 + 0.36²/999), 95 % t interval — computed here by hand."""
    from scipy import stats

    row = _summary_rows([("a", "x", 0, s, c, se) for s, c, se in [(0, 10.0, 0.5), (1, 12.0, 0.6), (2, 11.0, 0.7)]]).iloc[0]
    se2 = 1 / 3 + 0.36
    df = se2**2 / ((1 / 3) ** 2 / 2 + 0.36**2 / 999)
    half = stats.t.ppf(0.975, df) * se2**0.5
    assert row["criticality_se_images"] == pytest.approx(0.6)
    assert row["criticality_se"] == pytest.approx(se2**0.5)
    assert row["criticality_df"] == pytest.approx(df)
    assert (row["criticality_ci_low"], row["criticality_ci_high"]) == pytest.approx((11 - half, 11 + half))


def test_the_interval_stays_within_criticalitys_bounds_0_to_100():
    """Criticality lies in [0, 100]: the t interval is cut at the bounds (issue 31: the demo's
    summary.csv had lower bounds down to −8). Where it lies inside, it is unchanged."""
    from scipy import stats

    seeds = [(0.1, 0.05), (0.0, 0.05), (0.6, 0.05)]  # mean 0.233, std 0.321: the t interval reaches below 0
    near_zero, near_hundred, inside = (
        _summary_rows([("a", "x", 0, s, c, se) for s, (c, se) in enumerate(rows)]).iloc[0]
        for rows in (seeds, [(100 - c, se) for c, se in seeds], [(40 + c, se) for c, se in seeds])
    )
    se2 = np.var([0.1, 0.0, 0.6], ddof=1) / 3 + 0.05**2
    df = se2**2 / ((np.var([0.1, 0.0, 0.6], ddof=1) / 3) ** 2 / 2 + 0.05**4 / 999)
    half = stats.t.ppf(0.975, df) * se2**0.5
    assert half > 0.7 / 3  # by hand: the unclipped interval leaves [0, 100] on one side
    assert near_zero["criticality_ci_low"] == 0.0
    assert near_zero["criticality_ci_high"] == pytest.approx(0.7 / 3 + half)
    assert near_hundred["criticality_ci_high"] == 100.0
    assert near_hundred["criticality_ci_low"] == pytest.approx(100 - 0.7 / 3 - half)
    assert (inside["criticality_ci_low"], inside["criticality_ci_high"]) == pytest.approx((40 + 0.7 / 3 - half, 40 + 0.7 / 3 + half))
    assert near_zero["criticality_se"] == pytest.approx(se2**0.5)  # the standard error itself is unchanged


def test_a_models_mean_criticality_gets_an_interval_from_its_per_seed_means_and_image_errors():
    """Two layers, three seeds: the per-seed means over layers are 20, 22.5, 23.5 (std 1.80); the
    image SE is the mean of the layers' (0.4 and 0.6: 0.5). By hand as for a layer."""
    from scipy import stats

    from layercrit.analysis.aggregation import model_intervals

    rows = [("a", "x", 0, s, c, 0.4) for s, c in enumerate([10.0, 12.0, 11.0])]
    rows += [("a", "y", 1, s, c, 0.6) for s, c in enumerate([30.0, 33.0, 36.0])]
    rows += [("b", "x", 0, s, 50.0 + s, math.nan) for s in range(3)]  # no image SE: no interval
    summary = _summary_rows(rows)
    resets = pd.DataFrame([{"model": m, "layer": l, "seed": s, "criticality": c} for m, l, _, s, c, _ in rows])
    table = model_intervals(resets, summary)
    seed_var = np.var([20.0, 22.5, 23.5], ddof=1) / 3
    se2 = seed_var + 0.5**2
    df = se2**2 / (seed_var**2 / 2 + 0.5**4 / 999)
    half = stats.t.ppf(0.975, df) * se2**0.5
    assert table.loc["a", "se"] == pytest.approx(se2**0.5)
    assert (table.loc["a", "ci_low"], table.loc["a", "ci_high"]) == pytest.approx((22 - half, 22 + half))
    assert table.loc["b", ["se", "ci_low", "ci_high"]].isna().all()


def test_no_interval_without_a_seed_spread_or_an_image_error():
    one_seed = _summary_rows([("a", "x", 0, 0, 10.0, 0.5)]).iloc[0]
    assert math.isnan(one_seed["criticality_ci_low"]) and math.isnan(one_seed["criticality_se"])
    published_like = _summary_rows([("a", "x", 0, s, 10.0 + s, math.nan) for s in range(3)]).iloc[0]
    assert math.isnan(published_like["criticality_ci_high"])


def test_the_difference_from_the_baseline_is_significant_only_beyond_its_uncertainty():
    from layercrit.analysis.statistics import difference_from_baseline

    rows = []
    for s in range(3):
        rows += [("base", "x", 0, s, 20.0 + 0.1 * s, 0.3), ("base", "y", 1, s, 50.0 + 0.1 * s, 0.3)]
        rows += [("m", "x", 0, s, 30.0 + 0.1 * s, 0.3), ("m", "y", 1, s, 50.2 + 0.1 * s, 0.3)]  # +10 vs +0.2
        rows += [("other_arch", "head", 0, s, 10.0, 0.3)]  # another layer list: not comparable
        rows += [("partial", "y", 1, s, 50.0, 0.3)]  # the baseline's architecture, some results missing
    summary = _summary_rows(rows)
    summary["kernel"] = float("nan")  # as a linear layer's kernel comes back from CSV
    diff = difference_from_baseline(summary, "base").set_index(["model", "layer"])
    assert set(diff.index) == {("base", "x"), ("base", "y"), ("m", "x"), ("m", "y"), ("partial", "y")}
    assert diff.loc[("m", "x"), "difference"] == pytest.approx(10.0)
    assert diff.loc[("m", "x"), "significant"] and not diff.loc[("m", "y"), "significant"]
    assert not diff.loc[("base", "x"), "significant"]
    # by hand for (m, y): se² = 2 · (0.1²/3 + 0.3²) (each model: seed std 0.1, image SE 0.3)
    assert diff.loc[("m", "y"), "difference_se"] == pytest.approx((2 * (0.01 / 3 + 0.09)) ** 0.5)
