"""Figures: data ordering, labels, correlations, the registry of figures, and that every figure
renders to PNG + PDF."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from layercrit import figures, statistics
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
    assert list(corr.columns) == ["accuracy", "subset", "n", "spearman_r", "spearman_p", "kendall_tau", "kendall_p",
                                  "n_dropped", "dropped"]  # fmt: skip
    assert (corr["accuracy"] == "measured").all()  # no reported accuracies in this table
    corr = corr.set_index("subset")
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
    def study(baseline, *models):
        return Study("s", {}, {}, {m.id: m for m in models}, [], baseline)

    always = ("criticality_heatmap", "criticality_vs_accuracy", "seed_std_heatmap")
    adversarial = {"norm": "l2", "epsilon": 1.0}
    assert study(None, _model("a"), _model("b")).figures == always
    assert study("a", _model("a"), _model("b")).figures == (*always, "difference_heatmap")
    assert study("a", _model("a"), _model("b", in_figures=False)).figures == always  # nothing to compare with
    assert study(None, _model("a"), _model("e", adversarial)).figures == (*always, "criticality_vs_epsilon")
    assert study(None, _model("a"), _model("e", adversarial, in_figures=False)).figures == always
    assert study("a", _model("a"), _model("e", adversarial)).figures == tuple(FIGURE_NAMES)


def test_rank_correlation_is_scipys_where_defined_and_nan_elsewhere():
    x, y = np.array([1.0, 2.0, 3.0, 5.0]), np.array([2.0, 1.0, 4.0, 3.0])
    assert statistics.rank_correlation(x, y, "spearman") == (
        pytest.approx(stats.spearmanr(x, y).statistic), pytest.approx(stats.spearmanr(x, y).pvalue)
    )
    assert statistics.rank_correlation(x, y, "kendall")[0] == pytest.approx(stats.kendalltau(x, y).statistic)
    for a, b in ((x[:2], y[:2]), (x, np.ones(4)), (np.array([1.0, 2.0, np.nan, 4.0]), y)):
        assert all(np.isnan(statistics.rank_correlation(a, b)))


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
    assert titles == ["Norm", size_title]


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
    title = _drawn_figure(monkeypatch, lambda: figures.criticality_vs_accuracy(own, CATEGORIES, tmp_path / "f")).axes[0]
    text = title.get_title(loc="left")
    assert text.index("vs reported ImageNet top-1 (x axis; as in the paper)") < text.index("vs measured top-1 on the evaluation set")
    assert text.count("Spearman ρ") == 4


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


def test_seed_std_heatmap_uses_the_papers_0_to_100_scale(demo, monkeypatch, tmp_path):
    summary, models = demo
    fig = _drawn_figure(monkeypatch, lambda: figures.seed_std_heatmap(summary, models, CATEGORIES, tmp_path / "f"))
    assert fig.axes[0].images[0].get_clim() == (0, 100)
    right = _axes_by_label(fig, "over layers")
    assert 0 < right.get_xlim()[1] <= 100  # data-driven margins: spreads of a few percent stay visible


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
    legend_texts = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    assert legend_texts[:2] == ["L2", "L∞ (ε in 1/255)"]
    assert legend_texts[2:] == ["54.53%", "63.87%", "75.81%"]  # real values, reported format
    FigureCanvasAgg(fig)
    renderer = fig.canvas.get_renderer()
    fig.draw(renderer)
    boxes = [t.get_window_extent(renderer) for t in ax.get_xticklabels() if t.get_text()]
    assert [t.get_text() for t in ax.get_xticklabels()][0] == "0"
    assert len(boxes) >= 5
    assert all(a.x1 < b.x0 for a, b in zip(boxes, boxes[1:])), "x tick labels overlap"
    lo, hi = ax.get_xlim()
    assert lo < 0 < 8 < hi  # every point inside


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
