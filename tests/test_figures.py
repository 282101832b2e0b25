"""Figures: data ordering, labels, correlations, the registry of figures, and that every figure
renders to PNG + PDF."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.text
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from layercrit import figures
from layercrit.analysis import statistics
from layercrit.study import FIGURE_NAMES, Model, Study

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
    corr = statistics.accuracy_correlations(models)
    assert list(corr.columns) == ["accuracy", "subset", "n", "spearman_r", "spearman_p", "spearman_p_method",
                                  "kendall_tau", "kendall_p", "kendall_p_method", "n_dropped", "dropped"]  # fmt: skip
    assert (corr["accuracy"] == "measured").all()  # no reported accuracies in this table
    corr = corr.set_index("subset")
    assert (corr["n_dropped"] == 0).all()
    fig_models = models[models.in_figures]
    exact = stats.PermutationMethod(n_resamples=math.factorial(7))  # every pairing of 7 models or fewer
    for subset, sel in (
        ("all", fig_models),
        ("without_adversarial", fig_models[fig_models.category != "adversarial"]),
    ):
        rho = stats.spearmanrho(sel.top1, sel.mean_criticality, method=exact)
        tau = stats.kendalltau(sel.top1, sel.mean_criticality, method="exact")
        assert corr.loc[subset, "n"] == len(sel)
        assert corr.loc[subset, "spearman_r"] == pytest.approx(rho.statistic)
        assert corr.loc[subset, "spearman_p"] == pytest.approx(rho.pvalue)
        assert corr.loc[subset, "kendall_tau"] == pytest.approx(tau.statistic)
        assert corr.loc[subset, "kendall_p"] == pytest.approx(tau.pvalue)
        assert corr.loc[subset, "spearman_p_method"] == corr.loc[subset, "kendall_p_method"] == "exact"
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
    corr = statistics.accuracy_correlations(models).set_index("subset")
    assert corr.loc["without_adversarial", "n"] == 5
    assert corr.loc["without_adversarial", "spearman_r"] == pytest.approx(-1.0)
    assert corr.loc["without_adversarial", "kendall_tau"] == pytest.approx(-1.0)
    # Kendall's exact p for n=5, τ=−1: 2/5! (two-sided).
    assert corr.loc["without_adversarial", "kendall_p"] == pytest.approx(2 / 120)
    assert corr.loc["all", "n"] == 6
    assert corr.loc["all", "spearman_r"] == pytest.approx(stats.spearmanr(models.top1, models.mean_criticality)[0])
    # Too few points → NaN, not an exception.
    tiny = statistics.accuracy_correlations(models.iloc[:2]).set_index("subset")
    assert np.isnan(tiny.loc["all", "spearman_r"])


def test_adversarial_mask():
    models = pd.DataFrame({"category": ["adversarial", "other", "other", "other"], "epsilon": [0.0, 0.5, 0.0, np.nan]})
    assert statistics.adversarial_mask(models).tolist() == [True, True, False, False]


def test_the_registry_draws_every_figure_a_study_can_have(demo, tmp_path):
    assert tuple(figures.FIGURES) == FIGURE_NAMES  # the names the workflow's targets and wildcard read
    summary, models = demo
    study = figures.StudyInfo(categories=CATEGORIES, baseline="base")
    for name in FIGURE_NAMES:
        _assert_written(figures.draw(name, summary, models, study, tmp_path / "sub" / f"{name}.v1"))
        assert (tmp_path / "sub" / f"{name}.v1.png").is_file()  # dots in the base name survive
    _assert_written(figures.criticality_heatmap(summary, models, CATEGORIES, tmp_path / "fig1", title="Demo"))
    with pytest.raises(ValueError, match="unknown figure 'fig9'"):
        figures.draw("fig9", summary, models, study, tmp_path / "fig9")


def _model(model_id: str, adversarial: dict | None = None, in_figures: bool = True) -> Model:
    return Model(model_id, model_id, "c", "a", {"kind": "train"}, adversarial=adversarial, in_figures=in_figures)


def test_which_figures_a_study_has():
    def study(baseline, *models, seeds=(0, 1)):
        return Study("s", {"reset": {"seeds": list(seeds)}}, {}, {m.id: m for m in models}, [], baseline)

    always = ("criticality_heatmap", "criticality_vs_accuracy", "seed_std_heatmap")
    adversarial = {"norm": "l2", "epsilon": 1.0}
    assert study(None, _model("a"), _model("b")).figures == always
    assert study("a", _model("a"), _model("b")).figures == (*always, "difference_heatmap")
    assert study("a", _model("a"), _model("b", in_figures=False)).figures == always  # nothing to compare with
    assert study(None, _model("a"), _model("e", adversarial)).figures == (*always, "criticality_vs_epsilon")
    assert study(None, _model("a"), _model("e", adversarial, in_figures=False)).figures == always
    assert study("a", _model("a"), _model("e", adversarial)).figures == tuple(FIGURE_NAMES)
    # one seed: no spread to draw (issue 22: it was drawn all hatched), and the reason is given
    one_seed = study("a", _model("a"), _model("e", adversarial), seeds=[0])
    assert "seed_std_heatmap" not in one_seed.figures and "one seed" in one_seed.figures_left_out["seed_std_heatmap"]
    assert "baseline" in study(None, _model("a"), _model("b")).figures_left_out["difference_heatmap"]


def test_a_mixed_study_leaves_the_difference_heatmap_out_where_no_model_shares_the_baselines_layers():
    """Issue 31: a ResNet baseline with only a ViT beside it drew a difference heatmap of the
    baseline's all-zero row alone. Now it is left out, with the reason (which index.json and the
    log record); a model of another architecture id with the same layers still compares."""
    from layercrit.study import Layer

    resnet = (Layer("conv1", "Conv2d", (8, 3, 3, 3), 0), Layer("fc", "Linear", (10, 8), 1))
    vit = (Layer("patch_embed.proj", "Conv2d", (8, 3, 4, 4), 0), Layer("head", "Linear", (10, 8), 1))
    layers = {"resnet": resnet, "vit": vit, "resnet_other_source": resnet}

    def study(*models):
        return Study("s", {"reset": {"seeds": [0, 1]}}, {}, {m.id: m for m in models}, [], "base", selected_layers=layers)

    def model(model_id, architecture, in_figures=True):
        return Model(model_id, model_id, "c", architecture, {"kind": "train"}, in_figures=in_figures)

    mixed = study(model("base", "resnet"), model("vit_a", "vit"), model("control", "resnet", in_figures=False))
    assert "difference_heatmap" not in mixed.figures
    reason = mixed.figures_left_out["difference_heatmap"]
    assert "shares its layers" in reason and "'base' (resnet)" in reason and "vit" in reason
    assert "difference_heatmap" in study(model("base", "resnet"), model("vit_a", "vit"), model("r", "resnet")).figures
    same_layers = study(model("base", "resnet"), model("vit_a", "vit"), model("r2", "resnet_other_source"))
    assert "difference_heatmap" in same_layers.figures


def test_the_difference_heatmap_refuses_to_draw_the_baseline_alone(tmp_path):
    summary, models = fabricate_mixed()
    alone = models[models.model.isin(["base", *VIT_ROWS])]
    with pytest.raises(ValueError, match="shares the baseline's layers"):
        figures.difference_heatmap(summary, alone, CATEGORIES, "base", tmp_path / "f")
    assert not list(tmp_path.iterdir())


def test_a_zoo_without_adversarial_models_gets_no_w_o_adversarial_correlation(demo):  # issue 22
    _, models = demo
    clean = models[models.category != "adversarial"]
    corr = statistics.accuracy_correlations(clean)
    assert list(corr["subset"]) == ["all"]


def test_rank_correlation_is_scipys_where_defined_and_nan_elsewhere():
    x, y = np.array([1.0, 2.0, 3.0, 5.0]), np.array([2.0, 1.0, 4.0, 3.0])
    assert statistics.rank_correlation(x, y, "spearman").statistic == pytest.approx(stats.spearmanr(x, y).statistic)
    assert statistics.rank_correlation(x, y, "kendall").statistic == pytest.approx(stats.kendalltau(x, y).statistic)
    for a, b in ((x[:2], y[:2]), (x, np.ones(4)), (np.array([1.0, 2.0, np.nan, 4.0]), y)):
        undefined = statistics.rank_correlation(a, b)
        assert np.isnan(undefined.statistic) and np.isnan(undefined.pvalue) and undefined.p_method == ""


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
    corr = statistics.accuracy_correlations(models).set_index("subset")
    assert corr.loc["all", "n"] == 5 and corr.loc["all", "n_dropped"] == 2
    assert corr.loc["all", "dropped"] == "aug_a (top-1 not finite); adv_l2_1 (criticality not finite)"
    assert corr.loc["without_adversarial", "dropped"] == "aug_a (top-1 not finite)"
    kept = models[models.in_figures & models.model.ne("aug_a") & models.model.ne("adv_l2_1")]
    assert corr.loc["all", "spearman_r"] == pytest.approx(stats.spearmanr(kept.top1, kept.mean_criticality).statistic)


def _drawn_figure(monkeypatch, draw):
    """The matplotlib Figure a plotting function builds, not saved (so not cleared)."""
    drawn = []
    monkeypatch.setattr(figures.common, "save_figure", lambda fig, out_base: drawn.append(fig))
    draw()
    return drawn[0]


def _drawn_texts(monkeypatch, draw) -> list[str]:
    """Every text a figure shows (tick labels, annotations, legend), drawn but not saved."""
    import matplotlib.text

    fig = _drawn_figure(monkeypatch, draw)
    return [t.get_text() for t in fig.findobj(matplotlib.text.Text) if t.get_visible()]


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


# ---------------------------------------------------------------------------------------------
# Accuracy sources, scales and layout as in the paper
# ---------------------------------------------------------------------------------------------

# The zoo's reported ImageNet top-1 (two decimals as published) of the demo_models() rows.
REPORTED = {"base": 76.15, "aug_a": 77.53, "adv_l2_1": 70.42, "ssl_a": 75.28, "adv_l2_3": 62.83, "adv_linf_4": 63.87,
            "impr_a": 80.10, "control": np.nan}  # fmt: skip


def with_accuracies(models: pd.DataFrame, kind: str) -> pd.DataFrame:
    """``models`` as aggregation.model_table writes them: ``published`` (no measured accuracy, the
    reported one stands in for top1) or ``own`` (measured top1 plus the zoo's reported_top1)."""
    m = models.copy()
    m["reported_top1"] = m["model"].map(REPORTED)
    if kind == "published":
        m["top1"], m["top1_source"] = m["reported_top1"], "reported"
    else:
        m["top1_source"] = "measured"
    return m


def _axes_by_label(fig, text: str):
    return next(a for a in fig.axes if text in a.get_xlabel() or text in a.get_ylabel())


def test_top1_by_source_reads_models_csv_columns(demo):
    _, models = demo
    own = statistics.top1_by_source(with_accuracies(models, "own")).set_index(models["model"])
    assert own.loc["base", "reported"] == 76.15 and own.loc["base", "measured"] == 76.1
    published = statistics.top1_by_source(with_accuracies(models, "published")).set_index(models["model"])
    assert published.loc["base", "reported"] == 76.15 and published["measured"].isna().all()
    legacy = statistics.top1_by_source(models).set_index(models["model"])  # no top1_source: top1 was measured
    assert legacy.loc["base", "measured"] == 76.1 and legacy["reported"].isna().all()
    assert statistics.accuracy_sources(with_accuracies(models, "own")) == ["reported", "measured"]
    assert statistics.accuracy_sources(with_accuracies(models, "published")) == ["reported"]
    assert statistics.accuracy_sources(models) == ["measured"]


@pytest.mark.parametrize(
    ("kind", "x_label", "size_title"),
    [
        ("published", "Reported ImageNet top-1 [%]", "Reported ImageNet top-1"),
        ("own", "Reported ImageNet top-1 [%]", "Reported ImageNet top-1"),  # the paper's accuracy is the headline
        ("demo", "Measured top-1 on the evaluation set [%]", "Measured top-1\non the evaluation set"),
    ],
)
def test_accuracy_labels_name_their_source(demo, monkeypatch, tmp_path, kind, x_label, size_title):
    _, models = demo
    models = models if kind == "demo" else with_accuracies(models, kind)
    fig3 = _drawn_figure(monkeypatch, lambda: figures.criticality_vs_accuracy(models, CATEGORIES, tmp_path / "f3"))
    assert fig3.axes[0].get_xlabel() == x_label
    fig2 = _drawn_figure(monkeypatch, lambda: figures.criticality_vs_epsilon(models, tmp_path / "f2"))
    titles = [legend.get_title().get_text() for legend in fig2.legends]
    assert titles == ["Norm", size_title, ""]  # the last: the bars and the ε = 0 reference, untitled


def test_correlations_give_the_reported_accuracy_first_then_the_measured(demo, monkeypatch, tmp_path):
    _, models = demo
    own = with_accuracies(models, "own")
    corr = statistics.accuracy_correlations(own)
    assert corr[["accuracy", "subset"]].values.tolist() == [
        ["reported", "all"], ["reported", "without_adversarial"], ["measured", "all"], ["measured", "without_adversarial"],
    ]  # fmt: skip
    fig_models = own[own.in_figures]
    for source, column in (("reported", "reported_top1"), ("measured", "top1")):
        row = corr[(corr.accuracy == source) & (corr.subset == "all")].iloc[0]
        assert row["spearman_r"] == pytest.approx(stats.spearmanr(fig_models[column], fig_models.mean_criticality).statistic)
        assert row["n"] == len(fig_models) and row["n_dropped"] == 0
    assert statistics.accuracy_correlations(with_accuracies(models, "published"))["accuracy"].tolist() == ["reported"] * 2
    # Fig. 3 gives both, the plotted (reported) one first.
    fig = _drawn_figure(monkeypatch, lambda: figures.criticality_vs_accuracy(own, CATEGORIES, tmp_path / "f"))
    (text,) = [t.get_text() for t in fig.findobj(matplotlib.text.Text) if t.get_gid() == "correlations"]
    assert text.index("vs reported ImageNet top-1 (x axis; as in the paper)") < text.index("vs measured top-1 on the evaluation set")
    assert text.count("Spearman ρ") == 2 and text.count("ρ = ") == 4  # named once per accuracy, a value per subset


def test_correlations_drop_models_without_a_reported_accuracy_and_say_so(demo):
    _, models = demo
    own = with_accuracies(models, "own")
    own.loc[own.model == "ssl_a", "reported_top1"] = np.nan  # a model the zoo reports nothing for
    corr = statistics.accuracy_correlations(own).set_index(["accuracy", "subset"])
    assert corr.loc[("reported", "all"), "dropped"] == "ssl_a (top-1 not finite)"
    assert corr.loc[("measured", "all"), "n_dropped"] == 0  # sources are never mixed


def test_row_labels_show_reported_accuracy_with_two_decimals_and_measured_with_one(demo):
    _, models = demo
    reported = figures.ordered_models(with_accuracies(models, "published"), CATEGORIES).set_index("model")["row_label"]
    assert reported["base"] == "Baseline [76.15%]" and reported["impr_a"] == "A1 recipe [80.10%]"
    own = figures.ordered_models(with_accuracies(models, "own"), CATEGORIES).set_index("model")["row_label"]
    assert own["base"] == "Baseline [76.15%]"  # the headline is the reported one, as in the paper
    measured = figures.ordered_models(models, CATEGORIES).set_index("model")["row_label"]
    assert measured["base"] == "Baseline [76.1%]"


def test_heatmap_says_which_accuracy_its_row_labels_show(demo, monkeypatch, tmp_path):
    summary, models = demo
    published = with_accuracies(models, "published")
    texts = _drawn_texts(monkeypatch, lambda: figures.criticality_heatmap(summary, published, CATEGORIES, tmp_path / "f"))
    assert "model [reported ImageNet top-1 %]" in texts and "Baseline [76.15%]" in texts
    texts = _drawn_texts(monkeypatch, lambda: figures.criticality_heatmap(summary, models, CATEGORIES, tmp_path / "g"))
    assert "model [measured top-1 on the evaluation set %]" in texts


def _whisker_ends(ax) -> np.ndarray:
    from matplotlib.collections import LineCollection

    segments = [s for c in ax.collections if isinstance(c, LineCollection) for s in c.get_segments()]
    return np.concatenate(segments)


def test_criticality_heatmap_margins_span_0_to_100_and_whiskers_stop_there(demo, monkeypatch, tmp_path):
    summary, models = demo
    # Near the bound, mean + std exceeds 100 (the old axis then went to 200).
    conv1 = summary.layer.eq("conv1")
    summary.loc[conv1, "criticality_mean"] = np.where(summary.loc[conv1, "model"].eq("base"), 55.0, 100.0)
    hot = summary.model.eq("adv_l2_3")
    summary.loc[hot, "criticality_mean"] = np.where(np.arange(hot.sum()) % 2, 100.0, 70.0)
    fig = _drawn_figure(monkeypatch, lambda: figures.criticality_heatmap(summary, models, CATEGORIES, tmp_path / "f"))
    right, bottom = _axes_by_label(fig, "over layers"), _axes_by_label(fig, "over models")
    assert right.get_xlim() == (0.0, 100.0) and bottom.get_ylim() == (0.0, 100.0)
    assert _whisker_ends(right)[:, 0].max() == pytest.approx(100.0)  # clipped, not cut by the frame
    assert _whisker_ends(bottom)[:, 1].max() == pytest.approx(100.0)
    assert _whisker_ends(right)[:, 0].min() >= 0.0
    assert "85.0 ± 15.4" in [t.get_text() for t in right.texts]  # the printed std is the unclipped one


def test_difference_heatmap_keeps_the_baseline_row_with_symmetric_capped_margins(demo, monkeypatch, tmp_path):
    summary, models = demo
    fig = _drawn_figure(monkeypatch, lambda: figures.difference_heatmap(summary, models, CATEGORIES, "base", tmp_path / "f"))
    heatmap = fig.axes[0]
    values = heatmap.images[0].get_array()
    n_figure_models = int(models.in_figures.sum())
    assert values.shape[0] == n_figure_models  # every figure model, the baseline included
    assert np.allclose(values[0], 0.0)  # the baseline comes first (category order) and is its own anchor
    band = fig.axes[1]
    assert band.get_yticklabels()[0].get_text() == "Baseline [76.1%]"
    right, bottom = _axes_by_label(fig, "over layers"), _axes_by_label(fig, "over models")
    for lo, hi in (right.get_xlim(), bottom.get_ylim()):
        assert lo == -hi and 0 < hi <= 100
    assert heatmap.images[0].get_clim() == (-100, 100)


def test_seed_std_heatmap_fits_its_colour_scale_to_the_values_and_says_so(demo, monkeypatch, tmp_path):
    """Issue 31: on the paper's 0–100 scale spreads of 0–15 left the figure nearly blank."""
    summary, models = demo
    summary["criticality_std"] = np.linspace(0.0, 3.0, len(summary))
    summary.loc[summary.model.eq("aug_a") & summary.layer.eq("fc"), "criticality_std"] = 13.2
    summary.loc[summary.model.eq("control"), "criticality_std"] = 40.0  # not a figure model: not on the scale
    fig = _drawn_figure(monkeypatch, lambda: figures.seed_std_heatmap(summary, models, CATEGORIES, tmp_path / "f"))
    heatmap, colorbar = fig.axes[0], fig.axes[-1]
    assert heatmap.images[0].get_clim() == (0, 15)  # the largest std, 13.2, rounded up to a tick
    assert "0–15" in colorbar.get_ylabel() and "fit to the values" in colorbar.get_ylabel()
    right = _axes_by_label(fig, "over layers")
    assert 0 < right.get_xlim()[1] <= 100  # data-driven margins: spreads of a few percent stay visible
    fig = _drawn_figure(monkeypatch, lambda: figures.seed_std_heatmap(summary, models, CATEGORIES, tmp_path / "g", vmax=100))
    assert fig.axes[0].images[0].get_clim() == (0, 100) and "0–100" in fig.axes[-1].get_ylabel()  # the paper's, asked for


def _paper_adversarial_models() -> pd.DataFrame:
    """The paper's adversarially trained models (ε, norm, reported top-1) and the baseline."""
    l2 = dict(zip([0, 0.01, 0.03, 0.05, 0.1, 0.25, 0.5, 1, 3, 5],
                  [75.81, 75.67, 75.77, 75.58, 74.79, 74.14, 73.17, 70.42, 62.83, 56.14]))  # fmt: skip
    linf = dict(zip([0.5, 1.0, 2.0, 4.0, 8.0], [73.74, 72.04, 69.09, 63.87, 54.53]))
    rows = [{"model": "tv_resnet50", "category": "baseline", "reported_top1": 76.15, "epsilon": np.nan, "norm": None}]
    rows += [{"model": f"l2_{e}", "category": "adversarial", "reported_top1": a, "epsilon": e, "norm": "l2"} for e, a in l2.items()]
    rows += [{"model": f"linf_{e}", "category": "adversarial", "reported_top1": a, "epsilon": e, "norm": "linf"} for e, a in linf.items()]
    m = pd.DataFrame(rows)
    eps = m["epsilon"].fillna(0)
    return m.assign(top1=m["reported_top1"], top1_source="reported", in_figures=True, display_name=m["model"],
                    mean_criticality=20 + 6 * np.log1p(eps * 3))  # fmt: skip


def test_criticality_vs_epsilon_draws_both_norms_on_one_readable_axis(monkeypatch, tmp_path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    models = _paper_adversarial_models()
    fig = _drawn_figure(monkeypatch, lambda: figures.criticality_vs_epsilon(models, tmp_path / "f"))
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    assert len(ax.collections) == 2 and len(ax.lines) == 2  # one scatter and one ε-ordered line per norm
    l2_line, linf_line = ax.lines
    assert list(l2_line.get_xdata()) == sorted(l2_line.get_xdata()) and l2_line.get_xdata()[0] == 0
    assert list(linf_line.get_xdata()) == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert ax.get_xscale() == "symlog"  # ε = 0 is on the axis
    assert "L2" in ax.get_xlabel() and "1/255" in ax.get_xlabel()
    norm_legend, size_legend, _ = fig.legends
    assert [t.get_text() for t in norm_legend.get_texts()] == ["L2", "L∞ (ε in 1/255)"]
    assert [t.get_text() for t in size_legend.get_texts()] == ["54.53%", "63.87%", "75.81%"]  # real values, reported format
    FigureCanvasAgg(fig)
    renderer = fig.canvas.get_renderer()
    fig.draw(renderer)
    boxes = [t.get_window_extent(renderer) for t in ax.get_xticklabels() if t.get_text()]
    assert [t.get_text() for t in ax.get_xticklabels()][0] == "0"
    assert len(boxes) >= 5
    assert all(a.x1 < b.x0 for a, b in zip(boxes, boxes[1:])), "x tick labels overlap"
    lo, hi = ax.get_xlim()
    assert lo < 0 < 8 < hi  # every point inside


def _with_intervals(models: pd.DataFrame) -> pd.DataFrame:
    """``models`` with the interval columns aggregation.model_table writes: ± 2 points, ± 1.5
    for the baseline."""
    half = np.where(models["category"].eq("baseline"), 1.5, 2.0)
    return models.assign(mean_criticality_se=half / 2, mean_criticality_ci_low=models.mean_criticality - half,
                         mean_criticality_ci_high=models.mean_criticality + half)  # fmt: skip


def test_criticality_vs_epsilon_shows_each_points_interval_and_the_baseline_as_eps_0_reference(monkeypatch, tmp_path):
    """Issue 31: four points joined on a narrow axis, with no uncertainty and no ε = 0 reference."""
    from matplotlib.container import ErrorbarContainer

    models = _with_intervals(_paper_adversarial_models())
    fig = _drawn_figure(monkeypatch, lambda: figures.criticality_vs_epsilon(models, tmp_path / "f", baseline="tv_resnet50"))
    ax = fig.axes[0]
    bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    ends = {(round(x0, 6), round(y0, 6), round(y1, 6)) for c in bars for (x0, y0), (_, y1) in c.lines[2][0].get_segments()}
    adversarial = models[models.epsilon.notna()]
    assert ends == {(round(e, 6), round(lo, 6), round(hi, 6)) for e, lo, hi in
                    zip(adversarial.epsilon, adversarial.mean_criticality_ci_low, adversarial.mean_criticality_ci_high)}  # fmt: skip
    (line,) = [artist for artist in ax.lines if artist.get_gid() == "baseline_reference"]
    base = models.set_index("model").loc["tv_resnet50"]
    assert set(line.get_ydata()) == {base.mean_criticality}
    (band,) = [artist for artist in ax.patches if artist.get_gid() == "baseline_interval"]  # axhspan: y in data units
    assert (band.get_y(), band.get_y() + band.get_height()) == pytest.approx((base.mean_criticality - 1.5, base.mean_criticality + 1.5))
    lo, hi = ax.get_ylim()
    assert lo < base.mean_criticality - 1.5 and hi > adversarial.mean_criticality_ci_high.max()  # all of it in view
    texts = [t.get_text().replace("\n", " ") for legend in fig.legends for t in legend.get_texts()]  # wrapped lines
    assert any(t.startswith("tv_resnet50: the ε = 0 reference") and "band: its 95 % interval" in t for t in texts)
    assert any("95 % interval over reset seeds and images" in t for t in texts)


def test_criticality_vs_epsilon_says_where_the_uncertainty_is_unknown(monkeypatch, tmp_path):
    from matplotlib.container import ErrorbarContainer

    models = _paper_adversarial_models()  # as the published results: no interval columns
    fig = _drawn_figure(monkeypatch, lambda: figures.criticality_vs_epsilon(models, tmp_path / "f", baseline="tv_resnet50"))
    ax = fig.axes[0]
    assert not [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert [artist.get_gid() for artist in ax.lines].count("baseline_reference") == 1  # the mean is still known
    assert not [artist for artist in ax.patches if artist.get_gid() == "baseline_interval"]
    texts = [t.get_text().replace("\n", " ") for legend in fig.legends for t in legend.get_texts()]
    assert any("uncertainty unknown" in t for t in texts)


def test_model_table_formats_each_accuracy_by_its_source(demo, monkeypatch, tmp_path):
    _, models = demo
    own = with_accuracies(models, "own")
    table = figures.model_overview(own, CATEGORIES).set_index("model")
    assert table.loc["base", "Reported top-1 [%]"] == 76.15 and table.loc["base", "Measured top-1 [%]"] == 76.1
    fig = _drawn_figure(monkeypatch, lambda: figures.model_overview_table(own, CATEGORIES, tmp_path / "t"))
    texts = {cell.get_text().get_text() for cell in fig.axes[0].tables[0].get_celld().values()}
    assert {"76.15", "76.1", "80.10", "80.1"} <= texts
    published = figures.model_overview(with_accuracies(models, "published"), CATEGORIES)
    assert published["Measured top-1 [%]"].isna().all()


# ---------------------------------------------------------------------------------------------
# Studies that mix architectures (a ResNet and a ViT): one panel per layer list
# ---------------------------------------------------------------------------------------------


def vit_layers(depth: int = 12) -> list[tuple[str, str, str]]:
    """(name, type, kernel) of a ViT-S-like layer list: patch embedding, 4 per block, head."""
    layers = [("patch_embed.proj", "Conv2d", "16x16")]
    for b in range(depth):
        layers += [(f"blocks.{b}.attn.qkv", "Linear", ""), (f"blocks.{b}.attn.proj", "Linear", ""),
                   (f"blocks.{b}.mlp.fc1", "Linear", ""), (f"blocks.{b}.mlp.fc2", "Linear", "")]  # fmt: skip
    return layers + [("head", "Linear", "")]


VIT_LAYERS = vit_layers()  # 50 layers


def vit_models() -> list[dict]:
    return [
        {"model": "vit_a", "display_name": "ViT-S AugReg", "category": "improved", "top1": 81.4},
        {"model": "vit_adv", "display_name": "ViT-S AT", "category": "adversarial", "top1": 66.0, "epsilon": 4.0,
         "norm": "linf"},
    ]  # fmt: skip


def fabricate_mixed(se: float = 0.5):
    """A study of demo_models() (ResNet, DEMO_LAYERS) and vit_models() (VIT_LAYERS), as the
    aggregation step writes it: architecture ids in ``models``, the uncertainty columns in
    ``summary``."""
    resnet_s, resnet_m = fabricate(demo_models(), DEMO_LAYERS, seed=0)
    vit_s, vit_m = fabricate(vit_models(), VIT_LAYERS, seed=1)
    summary = pd.concat([resnet_s, vit_s], ignore_index=True)
    summary["criticality_se"], summary["criticality_df"] = se, 50.0
    models = pd.concat([resnet_m.assign(architecture="resnet_demo"), vit_m.assign(architecture="vit_small")],
                       ignore_index=True)  # fmt: skip
    return summary, models


RESNET_ROWS = ["base", "adv_l2_1", "adv_l2_3", "adv_linf_4", "aug_a", "ssl_a", "impr_a"]  # figure order
VIT_ROWS = ["vit_adv", "vit_a"]


@pytest.mark.parametrize(
    ("layer", "typ", "kernel", "expected"),
    [
        # ResNet: the paper's labels, its BatchNorms alike
        ("layer2.3.conv2", "Conv2d", "3x3", "[2.3] conv2:3x3"),
        ("fc", "Linear", "", "[Head] fc"),
        ("layer1.0.bn2", "BatchNorm2d", "", "[1.0] bn2 (BN)"),
        ("bn1", "BatchNorm2d", "", "[0.0] bn (BN)"),
        ("layer1.0.downsample.1", "BatchNorm2d", "", "[1.0] downsample (BN)"),
        # ViT
        ("patch_embed.proj", "Conv2d", "16x16", "[Stem] proj:16x16"),
        ("blocks.3.attn.qkv", "Linear", "", "[3] attn.qkv"),
        ("blocks.11.mlp.fc1", "Linear", float("nan"), "[11] mlp.fc1"),
        ("blocks.3.norm1", "LayerNorm", "", "[3] norm1 (LN)"),
        ("head", "Linear", "", "[Head] head"),
        # ConvNeXt
        ("stem.0", "Conv2d", "4x4", "[Stem] stem.0:4x4"),
        ("stem.1", "LayerNorm2d", "", "[Stem] stem.1 (LN)"),
        ("stages.1.blocks.0.conv_dw", "Conv2d", "7x7", "[1.0] conv_dw:7x7"),
        ("stages.1.blocks.0.norm", "LayerNorm2d", "", "[1.0] norm (LN)"),
        ("stages.1.blocks.0.mlp.fc1", "Linear", "", "[1.0] mlp.fc1"),
        ("stages.2.downsample.1", "Conv2d", "2x2", "[2] downsample conv1:2x2"),
        ("stages.2.blocks.4", "ConvNeXtBlock", "", "[2.4] ConvNeXtBlock"),  # the block's own parameters
        ("head.fc", "Linear", "", "[Head] fc"),
        ("head.norm", "LayerNorm2d", "", "[Head] norm (LN)"),
        # nested Sequentials (EfficientNet), a model. prefix, and names of no known pattern
        ("blocks.1.0.conv_dw", "Conv2d", "3x3", "[1.0] conv_dw:3x3"),
        ("model.blocks.3.attn.proj", "Linear", "", "[3] attn.proj"),
        ("features.0", "Conv2d", "3x3", "features.0:3x3"),
        ("norm", "LayerNorm", "", "norm (LN)"),
        # torchvision (issue 22: they read "[0] 0:3x3", "[1.0] 0:3x3", the stem untagged)
        ("features.0.0", "Conv2d", "3x3", "[Stem] stem.0:3x3"),  # MobileNetV3, EfficientNet, ConvNeXt
        ("features.1.block.0.0", "Conv2d", "3x3", "[1] block.0 conv0:3x3"),  # MobileNetV3
        ("features.1.block.0.1", "BatchNorm2d", "", "[1] block.0 bn1 (BN)"),
        ("features.1.0.block.1.fc1", "Conv2d", "1x1", "[1.0] block.1.fc1:1x1"),  # EfficientNet's SE
        ("features.8.0", "Conv2d", "1x1", "[8] conv0:1x1"),
        ("trunk_output.block4.block4-11.f.b.0", "Conv2d", "3x3", "[4.11] f.b conv0:3x3"),  # RegNet
        ("conv_proj", "Conv2d", "16x16", "[Stem] proj:16x16"),  # ViT
        ("encoder.layers.encoder_layer_3.mlp.3", "Linear", "", "[3] mlp linear3"),
        ("heads.head", "Linear", "", "[Head] head"),
        ("stage3.1.branch2.5", "Conv2d", "1x1", "[3.1] branch2 conv5:1x1"),  # ShuffleNetV2
        ("features.denseblock2.denselayer7.conv1", "Conv2d", "1x1", "[2.7] conv1:1x1"),  # DenseNet
        # transformers' ViT (issue 33)
        ("vit.embeddings", "ViTEmbeddings", "32", "[Stem] embeddings"),  # class token, position embedding
        ("vit.embeddings.patch_embeddings.projection", "Conv2d", "16x16", "[Stem] proj:16x16"),
        ("vit.layers.3.attention.q_proj", "Linear", "", "[3] attn.q_proj"),
        ("vit.layers.11.layernorm_before", "LayerNorm", "", "[11] ln_before (LN)"),
        ("vit.layers.11.mlp.fc2", "Linear", "", "[11] mlp.fc2"),
        ("vit.layernorm", "LayerNorm", "", "norm (LN)"),
        ("classifier", "Linear", "", "[Head] classifier"),
    ],
)
def test_layer_label(layer, typ, kernel, expected):
    assert figures.layer_label(layer, typ, kernel) == expected


ARCHITECTURE_TABLES = sorted((Path(__file__).parents[1] / "config/architectures").glob("*.tsv"))


@pytest.mark.parametrize("table", ARCHITECTURE_TABLES, ids=lambda p: p.stem)
def test_layer_labels_of_every_committed_architecture_are_distinct_and_short(table):
    from layercrit.study import read_layer_table

    layers = read_layer_table(table)
    labels = [figures.layer_label(layer.name, layer.type, layer.kernel) for layer in layers]
    assert len(set(labels)) == len(labels), [x for x in labels if labels.count(x) > 1]
    # the column labels' height is set by the longest; a language model's are transformers' own
    # module names ("[3] post_attention_layernorm (RMS)"), for which the heatmap makes room
    language_model = any(layer.type.endswith("RMSNorm") or layer.type == "Embedding" for layer in layers)
    assert max(map(len, labels)) <= (40 if language_model else 24)
    assert all(("(" in x) == bool(figures.norm_kind(layer.type)) for x, layer in zip(labels, layers))


def test_norm_kind():
    kinds = ["BatchNorm2d", "BatchNormAct2d", "LayerNorm", "LayerNorm2d", "GroupNorm", "RmsNorm", "Conv2d", "Linear", ""]
    assert [figures.norm_kind(t) for t in kinds] == ["BN", "BN", "LN", "LN", "GN", "RMS", "", "", ""]


def test_heatmap_panels_split_models_by_layer_list():
    summary, models = fabricate_mixed()
    panels = figures.heatmap_panels(summary.sample(frac=1.0, random_state=2), models, CATEGORIES)
    assert [p.matrix.index.tolist() for p in panels] == [RESNET_ROWS, VIT_ROWS]  # first category's panel first
    assert [p.matrix.columns.tolist() for p in panels] == [[n for n, _, _ in DEMO_LAYERS], [n for n, _, _ in VIT_LAYERS]]
    assert [p.title for p in panels] == ["resnet_demo (18 layers)", "vit_small (50 layers)"]
    want = summary.set_index(["model", "layer"])["criticality_mean"]
    assert panels[1].matrix.loc["vit_a", "blocks.3.attn.qkv"] == pytest.approx(want["vit_a", "blocks.3.attn.qkv"])
    # one layer list: one panel, the heatmap_matrix
    summary1, models1 = fabricate(demo_models(), DEMO_LAYERS)
    (single,) = figures.heatmap_panels(summary1, models1, CATEGORIES)
    pd.testing.assert_frame_equal(single.matrix, figures.heatmap_matrix(summary1, models1, CATEGORIES))


def test_layer_list_groups_share_identical_lists_and_absorb_gaps():
    lists = {"a": ("x", "y", "z"), "b": ("x", "y", "z"), "c": ("p", "q"), "d": ("x", "z"), "e": (), "f": ("x", "y")}
    arch = {"a": "tv_resnet50", "b": "timm_resnet50", "c": "vit", "d": "tv_resnet50", "e": "vit", "f": "other"}
    # identical lists share a group whatever the ids; a partial list joins its architecture's full one
    # (d), a model without results its architecture's group (e); another architecture's subset stays (f)
    assert figures.layer_list_groups(list("abcdef"), lists, arch) == [["a", "b", "d"], ["c", "e"], ["f"]]


def test_models_without_results_or_with_gaps_join_their_architecture_panel():
    summary, models = fabricate_mixed()
    summary = summary[~((summary.model == "vit_a") & summary.layer.isin(["head", "blocks.0.attn.qkv"]))]
    summary = summary[summary.model != "impr_a"]  # e.g. its jobs have not run yet
    panels = figures.heatmap_panels(summary, models, CATEGORIES)
    assert [p.matrix.index.tolist() for p in panels] == [RESNET_ROWS, VIT_ROWS]
    assert panels[0].matrix.loc["impr_a"].isna().all()
    assert panels[1].matrix.loc["vit_a", ["head", "blocks.0.attn.qkv"]].isna().all()
    assert len(panels[1].matrix.columns) == len(VIT_LAYERS)


def _panel_axes(fig) -> list[tuple]:
    """(heatmap, band, row margin, column margin) per panel, in the order the figure draws them
    (then comes the one colour bar)."""
    *panels, colorbar = fig.axes
    assert len(panels) % 4 == 0 and not colorbar.images and colorbar.get_ylabel()
    return [tuple(panels[k : k + 4]) for k in range(0, len(panels), 4)]


def test_mixed_heatmap_has_a_panel_per_layer_list_with_its_own_columns(monkeypatch, tmp_path):
    summary, models = fabricate_mixed()
    fig = _drawn_figure(monkeypatch, lambda: figures.criticality_heatmap(summary, models, CATEGORIES, tmp_path / "f"))
    panels = _panel_axes(fig)
    assert len(panels) == 2
    labels = {r.layer: r.label for r in figures.heatmaps.layer_table(summary).itertuples()}
    rows = figures.ordered_models(models, CATEGORIES).set_index("model")["row_label"]
    for (heat, band, right, bottom), names, members in zip(panels, (DEMO_LAYERS, VIT_LAYERS), (RESNET_ROWS, VIT_ROWS)):
        assert heat.images[0].get_array().shape == (len(members), len(names))
        assert [t.get_text() for t in bottom.get_xticklabels()] == [labels[n] for n, _, _ in names]
        assert [t.get_text() for t in band.get_yticklabels()] == rows[members].tolist()
        assert heat.images[0].get_clim() == (0, 100)  # one colour scale
        assert right.get_xlim() == (0.0, 100.0)
    vit_labels = [t.get_text() for t in panels[1][3].get_xticklabels()]
    assert vit_labels[:3] == ["[Stem] proj:16x16", "[0] attn.qkv", "[0] attn.proj"] and vit_labels[-1] == "[Head] head"
    assert [heat.get_title(loc="left") for heat, *_ in panels] == ["resnet_demo (18 layers)", "vit_small (50 layers)"]
    # stacked, as the layout engine places them: the ViT panel below the ResNet one, left-aligned
    # with it, the same cell width in both (the ResNet panel narrower), its row margin right after it
    fig.draw_without_rendering()
    (h1, _, r1, _), (h2, _, r2, _) = panels
    b1, b2 = h1.get_position(), h2.get_position()
    assert b2.y1 < b1.y0 and b1.x0 == pytest.approx(b2.x0)
    assert b1.width / len(DEMO_LAYERS) == pytest.approx(b2.width / len(VIT_LAYERS), rel=0.02)  # one cell width
    gaps = [(r.get_position().x0 - b.x1) * fig.get_figwidth() for r, b in ((r1, b1), (r2, b2))]
    assert gaps == pytest.approx([0.25, 0.25], abs=0.05)  # inches: room for the margin's first tick label
    # one colour bar (the last axes, _panel_axes checks) and one legend for the whole figure
    assert len(fig.axes) == 2 * 4 + 1
    assert len(_legends(fig)) == 1 and not any(a.get_legend() for a in fig.axes)


def test_single_architecture_heatmap_has_no_panel_titles(demo, monkeypatch, tmp_path):
    summary, models = demo
    models = models.assign(architecture="resnet_demo")
    fig = _drawn_figure(monkeypatch, lambda: figures.criticality_heatmap(summary, models, CATEGORIES, tmp_path / "f"))
    assert len(_panel_axes(fig)) == 1 and len(fig.axes) == 5
    assert not any("layers)" in t.get_text() for t in fig.findobj(matplotlib.text.Text))


def test_identical_layer_lists_of_two_architectures_share_a_panel_named_after_both(monkeypatch, tmp_path):
    summary, models = fabricate(demo_models(), DEMO_LAYERS)
    models["architecture"] = ["tv_resnet"] * 3 + ["timm_resnet"] * (len(models) - 3)
    fig = _drawn_figure(monkeypatch, lambda: figures.seed_std_heatmap(summary, models, CATEGORIES, tmp_path / "f"))
    assert len(_panel_axes(fig)) == 1
    (panel,) = figures.heatmap_panels(summary, models, CATEGORIES)
    assert panel.title == "tv_resnet, timm_resnet (18 layers)"


def _marked_cells(fig) -> set[tuple[int, int]]:
    """(row, column) of every significance mark drawn on the figure's heatmap."""
    marks = [c for a in fig.axes for c in a.collections if c.get_gid() == figures.heatmaps.SIGNIFICANCE_GID]
    return {(int(round(y)), int(round(x))) for c in marks for x, y in c.get_offsets()}


def _legend_texts(fig) -> list[str]:
    return [t.get_text() for legend in _legends(fig) for t in legend.get_texts()]


def test_difference_heatmap_leaves_other_layer_lists_out_and_says_so(monkeypatch, tmp_path, caplog):
    summary, models = fabricate_mixed()
    with caplog.at_level("WARNING", logger="layercrit.figures.heatmaps.difference"):
        fig = _drawn_figure(
            monkeypatch, lambda: figures.difference_heatmap(summary, models, CATEGORIES, "base", tmp_path / "f")
        )
    panels = _panel_axes(fig)
    assert len(panels) == 1
    heat, band, _, bottom = panels[0]
    assert [t.get_text() for t in band.get_yticklabels()][0] == "Baseline [76.1%]"
    assert heat.images[0].get_array().shape == (len(RESNET_ROWS), len(DEMO_LAYERS))
    assert [t.get_text() for t in bottom.get_xticklabels()][-1] == "[Head] fc"
    note = _legends(fig)[0].get_title().get_text().replace("\n", " ")  # above the entries, wrapped over lines
    assert "Not compared" in note and "ViT-S AT, ViT-S AugReg" in note and "vit_small, 50 layers" in note
    assert "resnet_demo, 18 layers" in note  # the baseline's list, which theirs is not
    warnings_ = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings_) == 1 and "ViT-S AT, ViT-S AugReg" in warnings_[0]


def _known_differences():
    """A ResNet + ViT study whose differences from the baseline are known: ``adv_l2_1`` differs
    by 10 pp (se 0.5, far beyond its interval) in every even layer and by 0.1 pp in every odd
    one, ``aug_a`` by 10 pp in ``fc`` only; all other models equal the baseline."""
    summary, models = fabricate_mixed(se=0.5)
    base = summary[summary.model == "base"].set_index("layer")["criticality_mean"].clip(5, 85)
    resnet = summary.model.isin(RESNET_ROWS)
    summary.loc[resnet, "criticality_mean"] = summary.loc[resnet, "layer"].map(base)
    index = summary["layer"].map({name: i for i, (name, _, _) in enumerate(DEMO_LAYERS)})
    adv = summary.model.eq("adv_l2_1")
    summary.loc[adv, "criticality_mean"] += np.where(index[adv] % 2 == 0, 10.0, 0.1)
    summary.loc[summary.model.eq("aug_a") & summary.layer.eq("fc"), "criticality_mean"] += 10.0
    expected = {(RESNET_ROWS.index("adv_l2_1"), j) for j in range(0, len(DEMO_LAYERS), 2)}
    expected.add((RESNET_ROWS.index("aug_a"), len(DEMO_LAYERS) - 1))
    return summary, models, expected


def test_difference_heatmap_marks_exactly_the_cells_that_differ_beyond_the_interval(monkeypatch, tmp_path):
    summary, models, expected = _known_differences()
    tested = statistics.difference_from_baseline(summary, "base")
    significant = tested[tested.significant & tested.model.isin(RESNET_ROWS)]  # not the control
    layer_pos = {name: j for j, (name, _, _) in enumerate(DEMO_LAYERS)}
    assert {(RESNET_ROWS.index(m), layer_pos[l]) for m, l in zip(significant.model, significant.layer)} == expected
    fig = _drawn_figure(monkeypatch, lambda: figures.difference_heatmap(summary, models, CATEGORIES, "base", tmp_path / "f"))
    assert _marked_cells(fig) == expected
    legend = _legend_texts(fig)
    label = figures.heatmaps.significance_label(statistics.MIN_DIFFERENCE)
    assert label in legend
    assert "95 %" in label and "seeds and images" in label
    assert not any("uncertainty unknown" in t for t in legend)
    # the mark's legend handle is a dot like the marks
    (legend_obj,) = _legends(fig)
    handle = legend_obj.legend_handles[legend.index(label)]
    assert handle.get_marker() == "o" and handle.get_markerfacecolor() == "black"


def test_difference_heatmap_marks_only_differences_of_the_stated_size(monkeypatch, tmp_path):
    """With a tiny uncertainty the 0.1-point differences of ``adv_l2_1`` are significant too
    (issue 31: the demo marked −0.4 points); the marks need at least ``min_difference`` points
    as well, and the legend says how many."""
    summary, models, expected = _known_differences()
    summary["criticality_se"] = 0.001
    tested = statistics.difference_from_baseline(summary, "base")
    small = tested[tested.model.eq("adv_l2_1") & (tested.difference.abs() < 1)]
    assert len(small) and small.significant.all()  # significant, but not what a mark should claim

    def marks_and_legend(**kwargs):
        fig = _drawn_figure(
            monkeypatch, lambda: figures.difference_heatmap(summary, models, CATEGORIES, "base", tmp_path / "f", **kwargs)
        )
        return _marked_cells(fig), _legend_texts(fig)

    marked, legend = marks_and_legend()  # the documented default, statistics.MIN_DIFFERENCE
    assert marked == expected
    label = figures.heatmaps.significance_label(statistics.MIN_DIFFERENCE)
    assert label in legend and f"≥ {statistics.MIN_DIFFERENCE:g} points" in label
    marked, legend = marks_and_legend(min_difference=0.05)
    assert marked > expected and figures.heatmaps.significance_label(0.05) in legend  # the small ones too
    marked, _ = marks_and_legend(min_difference=10.5)
    assert marked == set()  # no difference here reaches 10.5 points


def test_difference_heatmap_marks_nothing_where_the_uncertainty_is_unknown(monkeypatch, tmp_path):
    summary, models, _ = _known_differences()
    for unknown in (summary.assign(criticality_se=np.nan), summary.drop(columns=["criticality_se", "criticality_df"])):
        fig = _drawn_figure(
            monkeypatch, lambda: figures.difference_heatmap(unknown, models, CATEGORIES, "base", tmp_path / "f")
        )
        assert _marked_cells(fig) == set()
        legend = _legend_texts(fig)
        assert figures.heatmaps.significance_label(statistics.MIN_DIFFERENCE) not in legend
        assert any(t.startswith("uncertainty unknown") for t in legend)


def test_difference_heatmap_of_one_architecture_has_no_note(demo, monkeypatch, tmp_path, caplog):
    summary, models = demo
    with caplog.at_level("WARNING", logger="layercrit.figures.heatmaps.difference"):
        fig = _drawn_figure(
            monkeypatch, lambda: figures.difference_heatmap(summary, models, CATEGORIES, "base", tmp_path / "f")
        )
    assert not _legends(fig)[0].get_title().get_text()  # where the note goes
    assert not caplog.records


def _legends(fig) -> list:
    """The figure's legends, those of its subfigures too (Fig. 3 draws its own in one)."""
    return [*fig.legends, *(legend for sub in fig.subfigs for legend in _legends(sub))]


def _marker_shape(collection) -> tuple:
    return tuple(np.round(collection.get_paths()[0].vertices, 3).ravel())


def test_scatters_give_each_architecture_a_marker_when_there_are_several(monkeypatch, tmp_path):
    _, models = fabricate_mixed()
    fig3 = _drawn_figure(monkeypatch, lambda: figures.criticality_vs_accuracy(models, CATEGORIES, tmp_path / "f3"))
    fig2 = _drawn_figure(monkeypatch, lambda: figures.criticality_vs_epsilon(models, tmp_path / "f2"))
    for fig in (fig3, fig2):
        (arch_legend,) = [legend for legend in _legends(fig) if legend.get_title().get_text() == "Architecture"]
        assert [t.get_text() for t in arch_legend.get_texts()] == ["resnet_demo", "vit_small"]
        markers = [h.get_marker() for h in arch_legend.legend_handles]
        assert len(set(markers)) == 2
        # the points are drawn in two shapes, those of the legend
        assert len({_marker_shape(c) for c in fig.axes[0].collections}) == 2
    # Fig. 2: lines join the points of one norm and one architecture: ResNet L∞ (1 model), ViT L∞ (1), ResNet L2 (2)
    assert sorted(len(line.get_xdata()) for line in fig2.axes[0].lines) == [1, 1, 2]
    # Fig. 3: one category legend entry per category, not per category × architecture
    (cat_legend,) = [legend for legend in _legends(fig3) if legend.get_title().get_text() == "Category"]
    assert len(cat_legend.get_texts()) == len(set(models.loc[models.in_figures, "category"]))


def test_scatters_of_one_architecture_have_no_architecture_legend(demo, monkeypatch, tmp_path):
    _, models = demo
    models = models.assign(architecture="resnet_demo")
    fig3 = _drawn_figure(monkeypatch, lambda: figures.criticality_vs_accuracy(models, CATEGORIES, tmp_path / "f3"))
    fig2 = _drawn_figure(monkeypatch, lambda: figures.criticality_vs_epsilon(models, tmp_path / "f2"))
    for fig in (fig3, fig2):
        assert "Architecture" not in [legend.get_title().get_text() for legend in _legends(fig)]
        assert len({_marker_shape(c) for c in fig.axes[0].collections}) == 1


def test_model_table_has_an_architecture_column_only_with_several(monkeypatch, tmp_path):
    _, models = fabricate_mixed()
    table = figures.model_overview(models, CATEGORIES).set_index("model")
    assert list(table.columns[:3]) == ["Category", "Model", "Architecture"]
    assert table.loc["vit_a", "Architecture"] == "vit_small" and table.loc["base", "Architecture"] == "resnet_demo"
    fig = _drawn_figure(monkeypatch, lambda: figures.model_overview_table(models, CATEGORIES, tmp_path / "t"))
    texts = {cell.get_text().get_text() for cell in fig.axes[0].tables[0].get_celld().values()}
    assert {"Architecture", "vit_small", "resnet_demo"} <= texts
    one = models[models.architecture == "resnet_demo"]
    assert "Architecture" not in figures.model_overview(one, CATEGORIES).columns
    assert "Architecture" not in figures.model_overview(one.drop(columns=["architecture"]), CATEGORIES).columns


def test_every_figure_draws_a_mixed_study_and_tables_without_the_new_columns(tmp_path):
    summary, models = fabricate_mixed()
    study = figures.StudyInfo(categories=CATEGORIES, baseline="base")
    old_summary = summary.drop(columns=["criticality_se", "criticality_df"])
    old_models = models.drop(columns=["architecture"]).iloc[: len(demo_models())]
    old_summary = old_summary[old_summary.model.isin(old_models.model)]
    for name in FIGURE_NAMES:
        _assert_written(figures.draw(name, summary, models, study, tmp_path / f"mixed_{name}"))
        _assert_written(figures.draw(name, old_summary, old_models, study, tmp_path / f"old_{name}"))


def test_a_mixed_zoo_gets_a_correlation_per_architecture_and_says_the_pooled_one_is_pooled(tmp_path, monkeypatch):  # issue 22
    _, models = fabricate_mixed()
    corr = statistics.accuracy_correlations(models)
    archs = list(dict.fromkeys(statistics.figure_models(models)["architecture"]))
    assert len(archs) > 1
    assert [f"architecture {a}" for a in archs] == [s for s in corr["subset"] if s.startswith("architecture ")]
    for arch in archs:
        row = corr.set_index("subset").loc[f"architecture {arch}"]
        assert row["n"] == (statistics.figure_models(models)["architecture"] == arch).sum()
    from layercrit.figures.scatter import _correlation_text

    text = _correlation_text(corr)
    assert f"all models, pooled over {len(archs)} architectures" in text and f"{archs[0]} only" in text


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "efficientnet_b0", "regnet_x_400mf", "vit_b_16", "convnext_tiny", "swin_t", "shufflenet_v2_x0_5"])
def test_labels_of_torchvisions_models_are_distinct_and_short(name):  # issue 22
    import torchvision

    from layercrit.models.zoo import enumerate_layers

    layers = [l for l in enumerate_layers(torchvision.models.get_model(name, weights=None)) if l.type in ("Conv2d", "Linear")]
    labels = [figures.layer_label(layer.name, layer.type, layer.kernel) for layer in layers]
    assert len(set(labels)) == len(labels), [x for x in labels if labels.count(x) > 1]
    assert max(map(len, labels)) <= 24


def _paper_sized() -> tuple[pd.DataFrame, pd.DataFrame]:
    """A study the size of the paper's: 51 models × the 54 layers of a ResNet-50."""
    rows = [{**m, "model": f"{m['model']}_{k}", "display_name": f"{m['display_name']} v{k}"}
            for k in range(7) for m in demo_models()[:-1]][:51]  # fmt: skip
    return fabricate(rows, PAPER_LAYERS)


def _drawn_texts_extents(fig) -> list[tuple[str, object]]:
    """(text, window extent) of every text the figure draws, after the layout engine has placed it:
    tick labels within their axis' view only (matplotlib keeps others, not drawn)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()  # the figures are built without pyplot: no canvas
    fig.draw_without_rendering()
    texts = []
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            texts += [t for t, x in zip(axis.get_ticklabels(), axis.get_ticklocs()) if lo - 1e-9 <= x <= hi + 1e-9]
            texts.append(axis.label)
        texts += [*ax.texts, ax.title, ax._left_title, ax._right_title]
    texts += [t for legend in _legends(fig) for t in (legend.get_title(), *legend.get_texts())]
    texts += [fig._suptitle] if fig._suptitle else []
    shown = [t for t in texts if t.get_visible() and t.get_text()]
    return [(t.get_text(), t.get_window_extent(renderer)) for t in shown]


@pytest.mark.parametrize(
    ("study", "name"),
    [("demo", "criticality_heatmap"), ("paper", "difference_heatmap"), ("mixed", "difference_heatmap"),
     ("mixed", "seed_std_heatmap"), ("mixed", "titled_difference_heatmap")],  # fmt: skip
)
def test_heatmap_text_lies_inside_the_figure_and_overlaps_no_other_text(study, name, monkeypatch, tmp_path):
    """The layout engine makes room for every label (row and column labels, titles, the colour
    bar's, the legend with Fig. 4's note): after layout each lies inside the figure, none clipped
    and none over another, for a demo-sized study, a paper-sized one and a mix of layer lists."""
    summary, models = {"demo": lambda: fabricate(demo_models(), DEMO_LAYERS), "paper": _paper_sized,
                       "mixed": fabricate_mixed}[study]()  # fmt: skip
    info = figures.StudyInfo(categories=CATEGORIES, baseline=models["model"].iloc[0])
    if name.startswith("titled_"):  # a title above the legend (the workflow draws none)
        draw = lambda: figures.difference_heatmap(summary, models, CATEGORIES, "base", tmp_path / "f", title="Fig. 4")
    else:
        draw = lambda: figures.draw(name, summary, models, info, tmp_path / "f")
    fig = _drawn_figure(monkeypatch, draw)
    extents = _drawn_texts_extents(fig)
    inside = fig.bbox.padded(1)  # pixels
    outside = [text for text, e in extents if not (inside.contains(e.x0, e.y0) and inside.contains(e.x1, e.y1))]
    assert not outside
    x0, y0, x1, y1 = (np.array([getattr(e, k) for _, e in extents]) for k in ("x0", "y0", "x1", "y1"))
    overlap = (np.minimum(x1[:, None], x1) - np.maximum(x0[:, None], x0) > 1) & (
        np.minimum(y1[:, None], y1) - np.maximum(y0[:, None], y0) > 1
    )
    np.fill_diagonal(overlap, False)
    assert not [(extents[i][0], extents[j][0]) for i, j in zip(*np.nonzero(overlap)) if i < j]
    colorbar = fig.axes[-1]
    assert colorbar.get_ylabel() and colorbar.get_position().x0 > max(a.get_position().x1 for a in fig.axes[:-1])
