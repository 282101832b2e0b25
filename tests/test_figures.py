"""Figures: data ordering, labels, correlations, and that every figure renders to PNG + PDF."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from layercrit import figures

CATEGORIES = [
    {"id": "baseline", "label": "Baseline", "color": "#4c4c4c"},
    {"id": "adversarial", "label": "Adversarial training"},  # no colour → palette
    {"id": "augmentation", "label": "Augmentations", "color": "#2ca02c"},
    {"id": "ssl", "label": "Self-supervised"},
    {"id": "improved", "label": "Improved training", "color": "#9467bd"},
]


def resnet_layers(blocks: tuple[int, ...]) -> list[tuple[str, str, str]]:
    """(name, type, kernel) of every Conv2d/Linear of a bottleneck ResNet, in module order."""
    layers = [("conv1", "Conv2d", "7x7")]
    for stage, n in enumerate(blocks, start=1):
        for b in range(n):
            p = f"layer{stage}.{b}"
            layers += [(f"{p}.conv1", "Conv2d", "1x1"), (f"{p}.conv2", "Conv2d", "3x3"), (f"{p}.conv3", "Conv2d", "1x1")]
            if b == 0:
                layers.append((f"{p}.downsample.0", "Conv2d", "1x1"))
    layers.append(("fc", "Linear", ""))
    return layers


DEMO_LAYERS = resnet_layers((1, 1, 1, 1))  # 18 layers
PAPER_LAYERS = resnet_layers((3, 4, 6, 3))  # 54 layers


def fabricate(model_rows: list[dict], layers: list[tuple[str, str, str]], seed: int = 0):
    """``summary`` and ``models`` tables shaped like the aggregation step's output."""
    rng = np.random.default_rng(seed)
    recs = []
    for m_i, m in enumerate(model_rows):
        level = 10 + 4 * m_i % 60 + (m.get("epsilon") or 0) * 5
        for l_i, (name, typ, kernel) in enumerate(layers):
            mean = float(np.clip(level + 30 * np.sin(l_i + m_i) + rng.normal(0, 5), 0, 100))
            recs.append({
                "model": m["model"], "layer": name, "layer_index": l_i, "layer_type": typ, "kernel": kernel,
                "n_seeds": 3, "criticality_mean": mean, "criticality_std": abs(rng.normal(0, 3)),
                "criticality_sem": 0.0, "n_nonfinite": 0,
            })
    summary = pd.DataFrame(recs)
    summary["criticality_sem"] = summary["criticality_std"] / np.sqrt(3)
    models = pd.DataFrame(model_rows)
    for col, default in (("epsilon", np.nan), ("norm", np.nan), ("in_figures", True), ("reported_top1", np.nan)):
        if col not in models:
            models[col] = default
        models[col] = models[col].fillna(default) if col != "norm" else models[col]
    models["display_name"] = models.get("display_name", models["model"])
    per_model = summary.groupby("model")["criticality_mean"]
    models["mean_criticality"] = models["model"].map(per_model.mean())
    models["std_criticality"] = models["model"].map(per_model.std())
    return summary, models


def demo_models() -> list[dict]:
    # Deliberately not grouped by category in table order, to test row grouping.
    return [
        {"model": "base", "display_name": "Baseline", "category": "baseline", "top1": 76.1},
        {"model": "aug_a", "display_name": "AugMix", "category": "augmentation", "top1": 77.5},
        {"model": "adv_l2_1", "display_name": "L2 ε=1", "category": "adversarial", "top1": 70.4, "epsilon": 1.0, "norm": "l2"},
        {"model": "ssl_a", "display_name": "DINO", "category": "ssl", "top1": 75.3},
        {"model": "adv_l2_3", "display_name": "L2 ε=3", "category": "adversarial", "top1": 62.8, "epsilon": 3.0, "norm": "l2"},
        {"model": "adv_linf_4", "display_name": "L∞ ε=4", "category": "adversarial", "top1": 63.9, "epsilon": 4.0, "norm": "linf"},
        {"model": "impr_a", "display_name": "A1 recipe", "category": "improved", "top1": 80.1},
        {"model": "control", "display_name": "Frozen random", "category": "augmentation", "top1": 0.1, "in_figures": False},
    ]


@pytest.fixture
def demo():
    summary, models = fabricate(demo_models(), DEMO_LAYERS)
    # One non-finite cell must render as "missing", not crash.
    summary.loc[(summary["model"] == "ssl_a") & (summary["layer"] == "layer2.0.conv2"), "criticality_mean"] = np.nan
    return summary, models


def _assert_written(paths: list[Path]) -> None:
    assert sorted(p.suffix for p in paths) == [".pdf", ".png"]
    for p in paths:
        assert p.is_file() and p.stat().st_size > 1000
    png = next(p for p in paths if p.suffix == ".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pdf = next(p for p in paths if p.suffix == ".pdf")
    assert pdf.read_bytes()[:5] == b"%PDF-"


# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("layer", "typ", "kernel", "expected"),
    [
        ("conv1", "Conv2d", "7x7", "[0.0] conv:7x7"),
        ("layer1.0.conv1", "Conv2d", "1x1", "[1.0] conv1:1x1"),
        ("layer2.3.conv2", "Conv2d", "3x3", "[2.3] conv2:3x3"),
        ("layer1.0.conv3", "Conv2d", "1x1", "[1.0] conv3:1x1"),
        ("layer1.0.downsample.0", "Conv2d", "1x1", "[1.0] downsample"),
        ("fc", "Linear", "", "[Head] fc"),
        ("fc", "Linear", float("nan"), "[Head] fc"),
        ("model.layer4.2.conv3", "Conv2d", "1x1", "[4.2] conv3:1x1"),
        ("head.proj", "Linear", "", "head.proj"),
        ("features.0", "Conv2d", "3x3", "features.0"),
    ],
)
def test_paper_layer_label(layer, typ, kernel, expected):
    assert figures.paper_layer_label(layer, typ, kernel) == expected


def test_heatmap_matrix_order_and_values(demo):
    summary, models = demo
    # Shuffle the summary: the order must come from layer_index and the model/category tables.
    shuffled = summary.sample(frac=1.0, random_state=1)
    mat = figures.heatmap_matrix(shuffled, models, CATEGORIES, "criticality_mean")
    assert list(mat.index) == ["base", "adv_l2_1", "adv_l2_3", "adv_linf_4", "aug_a", "ssl_a", "impr_a"]
    assert "control" not in mat.index  # in_figures False
    assert list(mat.columns) == [name for name, _, _ in DEMO_LAYERS]
    for model in mat.index:
        for layer in ("conv1", "layer3.0.downsample.0", "fc"):
            want = summary.loc[(summary.model == model) & (summary.layer == layer), "criticality_mean"].item()
            assert mat.loc[model, layer] == pytest.approx(want)
    assert np.isnan(mat.loc["ssl_a", "layer2.0.conv2"])
    std = figures.heatmap_matrix(summary, models, CATEGORIES, "criticality_std")
    assert std.loc["impr_a", "fc"] == pytest.approx(
        summary.loc[(summary.model == "impr_a") & (summary.layer == "fc"), "criticality_std"].item()
    )


def test_ordered_models_labels_and_unknown_category(demo):
    _, models = demo
    models = pd.concat([models, pd.DataFrame([{"model": "x", "display_name": "X", "category": "new", "top1": np.nan,
                                               "in_figures": True}])], ignore_index=True)
    rows = figures.ordered_models(models, CATEGORIES)
    assert rows["model"].iloc[-1] == "x"  # unknown category appended at the end, not dropped
    assert rows.loc[rows.model == "base", "row_label"].item() == "Baseline [76.1%]"
    assert rows.loc[rows.model == "x", "row_label"].item() == "X [n/a]"
    assert rows["category_color"].map(lambda c: isinstance(c, str) and c.startswith("#")).all()
    assert rows.loc[rows.model == "base", "category_color"].item() == "#4c4c4c"


def test_heatmap_matrix_rejects_duplicates(demo):
    summary, models = demo
    with pytest.raises(ValueError, match="duplicate"):
        figures.heatmap_matrix(pd.concat([summary, summary.iloc[:1]]), models, CATEGORIES)


def test_accuracy_correlations_match_scipy(demo):
    _, models = demo
    corr = figures.accuracy_correlations(models).set_index("subset")
    assert list(corr.columns) == ["n", "spearman_r", "spearman_p", "kendall_tau", "kendall_p", "n_dropped", "dropped"]
    assert (corr["n_dropped"] == 0).all()
    fig_models = models[models.in_figures]
    for subset, sel in (
        ("all", fig_models),
        ("without_adversarial", fig_models[fig_models.category != "adversarial"]),
    ):
        rho = stats.spearmanr(sel.top1, sel.mean_criticality)
        tau = stats.kendalltau(sel.top1, sel.mean_criticality)
        assert corr.loc[subset, "n"] == len(sel)
        assert corr.loc[subset, "spearman_r"] == pytest.approx(rho.statistic)
        assert corr.loc[subset, "spearman_p"] == pytest.approx(rho.pvalue)
        assert corr.loc[subset, "kendall_tau"] == pytest.approx(tau.statistic)
        assert corr.loc[subset, "kendall_p"] == pytest.approx(tau.pvalue)
    assert corr.loc["all", "n"] == 7 and corr.loc["without_adversarial", "n"] == 4


def test_accuracy_correlations_exact():
    # Perfectly monotone decreasing among non-adversarial models → ρ = τ = −1; the adversarial
    # model (identified by ε > 0 despite its category) breaks monotonicity only in "all".
    models = pd.DataFrame({
        "model": list("abcdef"),
        "category": ["x"] * 5 + ["y"],
        "top1": [70.0, 72.0, 74.0, 76.0, 78.0, 60.0],
        "mean_criticality": [50.0, 40.0, 30.0, 20.0, 10.0, 5.0],
        "epsilon": [np.nan] * 5 + [3.0],
        "in_figures": True,
    })
    corr = figures.accuracy_correlations(models).set_index("subset")
    assert corr.loc["without_adversarial", "n"] == 5
    assert corr.loc["without_adversarial", "spearman_r"] == pytest.approx(-1.0)
    assert corr.loc["without_adversarial", "kendall_tau"] == pytest.approx(-1.0)
    # Kendall's exact p for n=5, τ=−1: 2/5! (two-sided).
    assert corr.loc["without_adversarial", "kendall_p"] == pytest.approx(2 / 120)
    assert corr.loc["all", "n"] == 6
    assert corr.loc["all", "spearman_r"] == pytest.approx(stats.spearmanr(models.top1, models.mean_criticality)[0])
    # Too few points → NaN, not an exception.
    tiny = figures.accuracy_correlations(models.iloc[:2]).set_index("subset")
    assert np.isnan(tiny.loc["all", "spearman_r"])


def test_adversarial_mask():
    models = pd.DataFrame({"category": ["adversarial", "other", "other", "other"], "epsilon": [0.0, 0.5, 0.0, np.nan]})
    assert figures.adversarial_mask(models).tolist() == [True, True, False, False]


def test_all_figures_render(demo, tmp_path):
    summary, models = demo
    _assert_written(figures.criticality_heatmap(summary, models, CATEGORIES, tmp_path / "sub" / "fig1", title="Demo"))
    _assert_written(figures.difference_heatmap(summary, models, CATEGORIES, "base", tmp_path / "fig4"))
    _assert_written(figures.seed_std_heatmap(summary, models, CATEGORIES, tmp_path / "fig5"))
    _assert_written(figures.criticality_vs_epsilon(models, tmp_path / "fig2"))
    _assert_written(figures.criticality_vs_accuracy(models, CATEGORIES, tmp_path / "fig3.v1"))
    assert (tmp_path / "fig3.v1.png").is_file()  # dots in the base name survive


def test_difference_heatmap_unknown_baseline(demo, tmp_path):
    summary, models = demo
    with pytest.raises(ValueError, match="baseline"):
        figures.difference_heatmap(summary, models, CATEGORIES, "nope", tmp_path / "x")


def test_criticality_vs_epsilon_needs_adversarial_models(demo, tmp_path):
    _, models = demo
    with pytest.raises(ValueError, match="adversarial"):
        figures.criticality_vs_epsilon(models.assign(epsilon=np.nan), tmp_path / "fig2")
    assert not list(tmp_path.iterdir())


def test_no_pyplot_state_leak(demo, tmp_path):
    import matplotlib as mpl
    summary, models = demo
    before = dict(mpl.rcParams)
    figures.criticality_heatmap(summary, models, CATEGORIES, tmp_path / "f")
    assert dict(mpl.rcParams) == before
    import sys
    if "matplotlib.pyplot" in sys.modules:
        import matplotlib.pyplot as plt
        assert plt.get_fignums() == []


def test_heatmaps_survive_all_nan(demo, tmp_path):
    # E.g. a single-seed run (std undefined) or a model whose outputs were all non-finite.
    summary, models = demo
    summary = summary.assign(criticality_std=np.nan)
    summary.loc[summary.model == "aug_a", "criticality_mean"] = np.inf
    _assert_written(figures.seed_std_heatmap(summary, models, CATEGORIES, tmp_path / "fig5"))
    _assert_written(figures.criticality_heatmap(summary, models, CATEGORIES, tmp_path / "fig1"))


def test_correlations_say_which_models_they_leave_out_and_why(demo):
    _, models = demo
    models = models.copy()
    models.loc[models.model == "aug_a", "top1"] = np.nan  # e.g. a model with NaN clean outputs
    models.loc[models.model == "adv_l2_1", "mean_criticality"] = np.nan
    corr = figures.accuracy_correlations(models).set_index("subset")
    assert corr.loc["all", "n"] == 5 and corr.loc["all", "n_dropped"] == 2
    assert corr.loc["all", "dropped"] == "aug_a (top-1 not finite); adv_l2_1 (criticality not finite)"
    assert corr.loc["without_adversarial", "dropped"] == "aug_a (top-1 not finite)"
    kept = models[models.in_figures & models.model.ne("aug_a") & models.model.ne("adv_l2_1")]
    assert corr.loc["all", "spearman_r"] == pytest.approx(stats.spearmanr(kept.top1, kept.mean_criticality).statistic)


def _drawn_texts(monkeypatch, draw) -> list[str]:
    """Every text a figure shows (tick labels, annotations, legend), drawn but not saved."""
    import matplotlib.text

    drawn = []
    monkeypatch.setattr(figures, "save_figure", lambda fig, out_base: drawn.append(fig))
    draw()
    return [t.get_text() for t in drawn[0].findobj(matplotlib.text.Text) if t.get_visible()]


def test_heatmap_margins_show_how_many_cells_they_average(monkeypatch, tmp_path):
    summary, models = fabricate(demo_models(), DEMO_LAYERS)
    n_models, n_layers = int(models.in_figures.sum()), len(DEMO_LAYERS)
    complete = _drawn_texts(monkeypatch, lambda: figures.criticality_heatmap(summary, models, CATEGORIES, tmp_path / "f"))
    assert not any("(n=" in t for t in complete) and "margin over the finite cells only (n = their number)" not in complete

    summary.loc[(summary.model == "aug_a") & summary.layer.isin(["conv1", "fc"]), "criticality_mean"] = np.nan
    texts = _drawn_texts(monkeypatch, lambda: figures.criticality_heatmap(summary, models, CATEGORIES, tmp_path / "g"))
    assert sum(t.endswith(f" (n={n_models - 1})") for t in texts) == 2  # the conv1 and fc column labels
    assert sum(t.endswith(f" (n={n_layers - 2})") for t in texts) == 1  # the aug_a row's mean ± std
    assert "margin over the finite cells only (n = their number)" in texts
