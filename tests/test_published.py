"""`snakemake published` rebuilds the paper's figures from the authors' raw results file.

The test fabricates a file in the authors' exact column format and checks the tables against
values computed by hand here."""

import hashlib

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from conftest import REPO, run_snakemake, tiny_study
from layercrit.analysis.published import published_to_tidy
from layercrit.study import read_layer_table

pytestmark = pytest.mark.slow

MODELS = {  # id: (category, per-model criticality offset)
    "tv_resnet50": 0.0,
    "robust_resnet50_l2_eps1": 10.0,
    "robust_resnet50_linf_eps4.0": 20.0,
    "resnet50_dino": 5.0,
    "resnet50.a1_in1k": 2.0,
    "resnet50_trained_on_SIN": 8.0,
}
# the authors reset ResNet-50's 54 Conv2d/Linear layers (the layer list also holds its BatchNorms)
LAYERS = [l.name for l in read_layer_table(REPO / "config/architectures/resnet50.tsv") if l.type in ("Conv2d", "Linear")]


def fabricate(path):
    rng = np.random.default_rng(0)
    rows = []
    for model, offset in MODELS.items():
        for i, layer in enumerate(LAYERS):
            for trial in (0.0, 1.0, 2.0):
                crit = offset + i / 2 + rng.uniform(0, 3)
                rows.append({
                    "top1_acc": rng.uniform(0, 80), "top5_acc": rng.uniform(80, 95), "loss": rng.uniform(1, 5),
                    "batch_acc": None, "layer": f"model.{layer}", "pred_cos_sim": 1 - crit / 100,
                    "pred_l1_err": rng.uniform(0, 1), "pred_l2_err": rng.uniform(0, 1), "pred_ce_loss": 123.0,
                    "trial": trial, "recovered_acc": rng.uniform(0, 1), "model_id": model,
                })  # fmt: skip
    raw = pd.DataFrame(rows)
    raw.to_csv(path, index=False)
    return raw


def test_conversion_of_the_authors_columns():
    raw = pd.DataFrame([{"top1_acc": 50.0, "top5_acc": 70.0, "loss": 2.0, "batch_acc": None, "layer": "model.layer1.0.conv1",
                         "pred_cos_sim": 0.75, "pred_l1_err": 0.3, "pred_l2_err": 0.2, "pred_ce_loss": 9.0, "trial": 2.0,
                         "recovered_acc": 0.6, "model_id": "m"}])  # fmt: skip
    tidy = published_to_tidy(raw)
    row = tidy.iloc[0]
    assert row["layer"] == "layer1.0.conv1" and row["seed"] == 2 and row["model"] == "m"
    assert row["criticality"] == pytest.approx(25.0)
    assert row["top1"] == 50.0 and row["l1"] == 0.3
    assert "pred_ce_loss" not in tidy.columns and "batch_acc" not in tidy.columns
    with pytest.raises(ValueError, match="pred_cos_sim"):
        published_to_tidy(raw.drop(columns="pred_cos_sim"))


def test_published_target_builds_figures_and_tables_from_a_local_file(workdir):
    raw = fabricate(workdir / "results.csv")
    config = tiny_study(workdir)
    cfg = yaml.safe_load(config.read_text())
    digest = hashlib.sha256((workdir / "results.csv").read_bytes()).hexdigest()
    cfg["published"] = {"url": f"file://{workdir / 'results.csv'}", "sha256": digest, "zoo": str(REPO / "config/zoo/paper.yaml")}
    config.write_text(yaml.safe_dump(cfg))
    run_snakemake(workdir, "--configfile", str(config), "--cores", "2", "published")

    tables = workdir / "results/published/tables/randomize"
    summary = pd.read_csv(tables / "summary.csv")
    assert len(summary) == len(MODELS) * 54 and (summary["n_seeds"] == 3).all()
    # by hand: criticality = 100 (1 - cos), mean and std over the 3 trials
    sel = raw[(raw["model_id"] == "resnet50_dino") & (raw["layer"] == "model.layer3.2.conv2")]
    crit = 100 * (1 - sel["pred_cos_sim"])
    row = summary[(summary["model"] == "resnet50_dino") & (summary["layer"] == "layer3.2.conv2")].iloc[0]
    assert row["criticality_mean"] == pytest.approx(crit.mean())
    assert row["criticality_std"] == pytest.approx(crit.std(ddof=1))

    models = pd.read_csv(tables / "models.csv").set_index("model")
    assert list(models.index) == [m for m in yaml.safe_load((REPO / "config/zoo/paper.yaml").read_text())["models"]
                                  for m in [m["id"]] if m in MODELS]  # fmt: skip
    by_hand = {m: (100 * (1 - raw[raw["model_id"] == m]["pred_cos_sim"])).mean() for m in MODELS}
    for m, value in by_hand.items():
        assert models.loc[m, "mean_criticality"] == pytest.approx(value)
    assert models.loc["resnet50_dino", "top1"] == 75.28  # the zoo's reported accuracy stands in
    assert (models["top1_source"] == "reported").all()

    corr = pd.read_csv(tables / "correlations.csv").set_index("subset")
    x = models["top1"].to_numpy()
    y = models["mean_criticality"].to_numpy()
    assert corr.loc["all", "spearman_r"] == pytest.approx(stats.spearmanr(x, y).statistic)
    assert corr.loc["all", "kendall_tau"] == pytest.approx(stats.kendalltau(x, y).statistic)
    clean = ~models.index.str.startswith("robust_")
    assert corr.loc["without_adversarial", "n"] == clean.sum()
    assert corr.loc["without_adversarial", "spearman_r"] == pytest.approx(stats.spearmanr(x[clean], y[clean]).statistic)

    figures = workdir / "results/published/figures/randomize"
    for name in ["criticality_heatmap", "difference_heatmap", "seed_std_heatmap", "criticality_vs_epsilon", "criticality_vs_accuracy"]:
        assert (figures / f"{name}.png").stat().st_size > 10_000, name


def test_wrong_checksum_of_the_published_file_is_an_error(workdir):
    fabricate(workdir / "results.csv")
    config = tiny_study(workdir)
    cfg = yaml.safe_load(config.read_text())
    cfg["published"] = {"url": str(workdir / "results.csv"), "sha256": "0" * 64}
    config.write_text(yaml.safe_dump(cfg))
    proc = run_snakemake(workdir, "--configfile", str(config), "--cores", "1", "published", check=False)
    assert proc.returncode != 0
    log = (workdir / "results/published/logs/download.log").read_text()
    assert "sha256 mismatch" in log and "expected " + "0" * 64 + " (published.sha256)" in log
    assert not (workdir / "resources/published/results.csv").exists()
