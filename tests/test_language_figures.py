"""The figures of language-model studies (issue 34): criticality by block × sublayer kind, the
depth profile along the blocks, criticality against clean perplexity within each tokenizer.
Drawn here from synthetic tables shaped like the aggregation step's; the end-to-end run of a text
study that draws them is in tests/test_language_models.py."""

from __future__ import annotations

import re

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from layercrit import figures
from layercrit.analysis.aggregation import summarize
from layercrit.figures import StudyInfo
from layercrit.figures.language import (
    LANGUAGE_FIGURES,
    block_layout,
    block_matrix,
    block_profile_table,
    clean_perplexities,
    draw_language,
)
from layercrit.study import LANGUAGE_FIGURE_NAMES
from test_figures import _drawn_texts_extents  # every text the layout engine placed, tick labels in view only

CATEGORIES = [{"id": "base", "label": "Base", "color": "#1f77b4"}, {"id": "instruct", "label": "Instruct", "color": "#d62728"}]
LLAMA_KINDS = [("self_attn.q_proj", "Linear"), ("self_attn.k_proj", "Linear"), ("self_attn.v_proj", "Linear"),
               ("self_attn.o_proj", "Linear"), ("mlp.gate_proj", "Linear"), ("mlp.up_proj", "Linear"),
               ("mlp.down_proj", "Linear"), ("input_layernorm", "LlamaRMSNorm"), ("post_attention_layernorm", "LlamaRMSNorm")]  # fmt: skip
NEOX_KINDS = [("input_layernorm", "LayerNorm"), ("post_attention_layernorm", "LayerNorm"), ("attention.query_key_value", "Linear"),
              ("attention.dense", "Linear"), ("mlp.dense_h_to_4h", "Linear"), ("mlp.dense_4h_to_h", "Linear")]  # fmt: skip


def llama_layers(n_blocks: int) -> list[tuple[str, str]]:
    """(name, type) of a Llama's layers in module order, as its layer list has them."""
    inside = [(f"model.layers.{b}.{kind}", typ) for b in range(n_blocks) for kind, typ in LLAMA_KINDS]
    return [("model.embed_tokens", "Embedding"), *inside, ("model.norm", "LlamaRMSNorm"), ("lm_head", "Linear")]


def neox_layers(n_blocks: int) -> list[tuple[str, str]]:
    inside = [(f"gpt_neox.layers.{b}.{kind}", typ) for b in range(n_blocks) for kind, typ in NEOX_KINDS]
    return [("gpt_neox.embed_in", "Embedding"), *inside, ("gpt_neox.final_layer_norm", "LayerNorm"), ("embed_out", "Linear")]


def criticality(name: str, seed: int, model_index: int) -> float:
    """A value that depends on the layer, the seed and the model, known to the test."""
    return float(np.clip(5 + 3 * len(name) % 70 + 4 * seed + 7 * model_index, 0, 100))


def fabricate(specs: list[tuple[str, str, list[tuple[str, str]], float]], seeds=(0, 1)):
    """``resets``, ``summary`` and ``models`` of models (id, category, layers, clean perplexity)."""
    rows = []
    for m_i, (model, _, layers, ppl) in enumerate(specs):
        for l_i, (name, typ) in enumerate(layers):
            for seed in seeds:
                rows.append({"model": model, "layer": name, "layer_index": l_i, "layer_type": typ, "kernel": "", "seed": seed,
                             "mode": "randomize", "criticality": criticality(name, seed, m_i), "n_images": 100,
                             "n_nonfinite": 0, "clean_perplexity": ppl})  # fmt: skip
    resets = pd.DataFrame(rows)
    summary = summarize(resets)
    models = pd.DataFrame(
        [{"model": m, "display_name": m.replace("_", " "), "category": c, "architecture": m.split("_")[0], "top1": 40.0,
          "top1_source": "measured", "in_figures": True} for m, c, _, _ in specs]
    )  # fmt: skip
    per_model = summary.groupby("model", sort=False)["criticality_mean"].mean()
    models["mean_criticality"] = models["model"].map(per_model)
    return resets, summary, models


def test_the_registry_draws_every_language_figure(tmp_path):
    assert tuple(LANGUAGE_FIGURES) == LANGUAGE_FIGURE_NAMES  # the names the workflow's targets and wildcard read
    resets, summary, models = fabricate([("llama_base", "base", llama_layers(4), 12.0), ("neox_step", "base", neox_layers(3), 30.0),
                                         ("llama_instruct", "instruct", llama_layers(4), 10.0)])  # fmt: skip
    study = StudyInfo(categories=CATEGORIES, tokenizers={"llama_base": "owner/llama", "neox_step": "owner/neox"},
                      comparisons=[("llama_instruct", "llama_base")])  # fmt: skip
    for name in LANGUAGE_FIGURE_NAMES:
        paths = draw_language(name, resets, summary, models, study, tmp_path / name)
        assert [p.name for p in paths] == [f"{name}.png", f"{name}.pdf"] and all(p.stat().st_size > 1000 for p in paths)
        assert matplotlib.image.imread(paths[0]).shape[0] > 200
    with pytest.raises(ValueError, match="unknown language-model figure 'criticality_heatmap'"):
        draw_language("criticality_heatmap", resets, summary, models, study, tmp_path / "x")
    assert not set(LANGUAGE_FIGURE_NAMES) & set(figures.FIGURES)  # a rule each: the names must not overlap


def test_layers_split_into_blocks_and_kinds_for_each_family():
    """Kinds named as the heatmaps' columns name them (norms marked), the embeddings, final norm
    and lm_head apart; every cell is its layer's mean over seeds."""
    llama = [k for k, _ in LLAMA_KINDS[:7]] + ["input_layernorm (RMS)", "post_attention_layernorm (RMS)"]
    neox = ["input_layernorm (LN)", "post_attention_layernorm (LN)", "attn.query_key_value", "attn.dense",
            "mlp.dense_h_to_4h", "mlp.dense_4h_to_h"]  # fmt: skip
    for layers, n_blocks, kinds, outside in (
        (llama_layers(3), 3, llama, ["embed_tokens", "norm (RMS)", "lm_head"]),
        (neox_layers(2), 2, neox, ["embed_in", "final_layer_norm (LN)", "embed_out"]),
    ):
        _, summary, _ = fabricate([("m", "base", layers, 10.0)])
        layout = block_layout(summary)
        matrix, strip = block_matrix(summary)
        assert matrix.columns.tolist() == kinds and matrix.index.tolist() == list(range(n_blocks))
        assert strip.index.tolist() == outside == layout.loc[layout["block"] < 0, "label"].tolist()
        for name, _ in layers:
            found = layout[layout["layer"] == name].iloc[0]
            value = strip[found["label"]] if found["block"] < 0 else matrix.loc[found["block"], found["kind"]]
            assert value == pytest.approx(summary.loc[summary["layer"] == name, "criticality_mean"].item())


def test_a_block_not_reset_is_a_row_of_gaps_and_a_kind_not_reset_a_gap():
    layers = [layer for layer in llama_layers(4) if ".1." not in layer[0] and "q_proj" not in layer[0]]
    _, summary, _ = fabricate([("m", "base", layers, 10.0)])
    matrix, _ = block_matrix(summary)
    assert matrix.index.tolist() == [0, 1, 2, 3] and matrix.loc[1].isna().all() and matrix.loc[[0, 2, 3]].notna().all().all()
    assert "self_attn.q_proj" not in matrix.columns


def test_the_block_profile_is_the_mean_over_a_blocks_sublayers_per_seed_then_over_seeds():
    resets, _, _ = fabricate([("a", "base", llama_layers(3), 10.0)], seeds=(0, 1, 2))
    table = block_profile_table(resets).set_index("block")
    assert table.index.tolist() == [0, 1, 2] and (table["n_seeds"] == 3).all() and (table["n_sublayers"] == 9).all()
    for block in range(3):
        names = [f"model.layers.{block}.{kind}" for kind, _ in LLAMA_KINDS]
        per_seed = [np.mean([criticality(n, seed, 0) for n in names]) for seed in (0, 1, 2)]
        assert table.loc[block, "mean"] == pytest.approx(np.mean(per_seed))
        assert table.loc[block, "std"] == pytest.approx(np.std(per_seed, ddof=1))
    one_seed = block_profile_table(fabricate([("a", "base", llama_layers(2), 10.0)], seeds=(0,))[0])
    assert one_seed["std"].isna().all()


def test_clean_perplexity_is_read_per_model_from_the_reset_rows():
    resets, _, _ = fabricate([("a", "base", llama_layers(1), 12.5), ("b", "instruct", llama_layers(1), 9.0)])
    assert clean_perplexities(resets) == {"a": 12.5, "b": 9.0}
    assert clean_perplexities(resets.drop(columns="clean_perplexity")) == {}


def _drawn_figure(monkeypatch, draw):
    """The matplotlib Figure a plotting function builds, not saved (so not cleared)."""
    drawn = []
    monkeypatch.setattr(figures.common, "save_figure", lambda fig, out_base: drawn.append(fig))
    draw()
    return drawn[0]


# a study like config/llm.yaml's: SmolLM2 (30 blocks) base and instruct, Pythia at two steps
# (GPT-NeoX, 12 blocks), Qwen2.5 (24 blocks); three tokenizers
LLM_STUDY = [("smollm2", "base", llama_layers(30), 20.0), ("smollm2_instruct", "instruct", llama_layers(30), 24.0),
             ("pythia_step1000", "base", neox_layers(12), 80.0), ("pythia_step143000", "base", neox_layers(12), 22.0),
             ("qwen25", "base", llama_layers(24), 14.0)]  # fmt: skip
LLM_TOKENIZERS = {"smollm2": "HuggingFaceTB/SmolLM2-135M", "smollm2_instruct": "HuggingFaceTB/SmolLM2-135M",
                  "pythia_step1000": "EleutherAI/pythia-160m@step1000", "pythia_step143000": "EleutherAI/pythia-160m@step1000",
                  "qwen25": "Qwen/Qwen2.5-0.5B"}  # fmt: skip

LLM_COMPARISONS = [("smollm2_instruct", "smollm2"), ("pythia_step143000", "pythia_step1000")]


@pytest.mark.parametrize("name", LANGUAGE_FIGURE_NAMES)
def test_language_figure_text_lies_inside_the_figure_and_overlaps_no_other_text(name, monkeypatch, tmp_path):
    resets, summary, models = fabricate(LLM_STUDY)
    study = StudyInfo(categories=CATEGORIES, tokenizers=LLM_TOKENIZERS, comparisons=LLM_COMPARISONS)
    fig = _drawn_figure(monkeypatch, lambda: draw_language(name, resets, summary, models, study, tmp_path / "f"))
    extents = _drawn_texts_extents(fig)
    inside = fig.bbox.padded(1)
    assert not [text for text, e in extents if not (inside.contains(e.x0, e.y0) and inside.contains(e.x1, e.y1))]
    x0, y0, x1, y1 = (np.array([getattr(e, k) for _, e in extents]) for k in ("x0", "y0", "x1", "y1"))
    overlap = (np.minimum(x1[:, None], x1) - np.maximum(x0[:, None], x0) > 1) & (np.minimum(y1[:, None], y1) - np.maximum(y0[:, None], y0) > 1)
    np.fill_diagonal(overlap, False)
    assert not [(extents[i][0], extents[j][0]) for i, j in zip(*np.nonzero(overlap)) if i < j]


def test_the_block_heatmap_has_a_panel_per_model_with_its_kinds_its_blocks_and_the_layers_outside(monkeypatch, tmp_path):
    resets, summary, models = fabricate(LLM_STUDY[2:])  # Pythia twice, then Qwen2.5
    fig = _drawn_figure(monkeypatch, lambda: figures.language.block_sublayer_heatmap(
        summary, models, CATEGORIES, tmp_path / "f", perplexities=clean_perplexities(resets)))  # fmt: skip
    titled = [ax for ax in fig.axes if ax.get_title(loc="left")]
    assert [ax.get_title(loc="left") for ax in titled] == [
        "pythia step1000\nclean perplexity 80", "pythia step143000\nclean perplexity 22", "qwen25\nclean perplexity 14"]
    assert [len(ax.get_yticks()) for ax in titled] == [12, 12, 24]
    assert [t.get_text() for t in titled[0].get_xticklabels()][2:4] == ["attn.query_key_value", "attn.dense"]
    strips = [ax for ax in fig.axes if not ax.get_title(loc="left") and ax.get_yticklabels() and not ax.get_ylabel().startswith("Layer")]
    assert [[t.get_text() for t in ax.get_yticklabels()] for ax in strips][2] == ["embed_tokens", "norm (RMS)", "lm_head"]
    assert fig.axes[-1].get_ylabel().startswith("Layer Criticality [%]")  # the one colour bar, 0-100
    assert fig.axes[-1].get_ylim() == (0.0, 100.0)


def test_criticality_vs_perplexity_gives_each_tokenizer_its_own_panel(monkeypatch, tmp_path):
    resets, summary, models = fabricate(LLM_STUDY)
    draw = lambda tokenizers: _drawn_figure(monkeypatch, lambda: figures.language.criticality_vs_perplexity(
        models, clean_perplexities(resets), tokenizers, CATEGORIES, tmp_path / "f"))  # fmt: skip
    fig = draw(LLM_TOKENIZERS)
    panels = [ax for ax in fig.axes if ax.get_title(loc="left")]
    assert [ax.get_title(loc="left") for ax in panels] == [
        "tokenizer: HuggingFaceTB/SmolLM2-135M", "tokenizer: EleutherAI/pythia-160m@step1000", "tokenizer: Qwen/Qwen2.5-0.5B"]
    points = [ax.collections[-1].get_offsets() for ax in panels]
    assert [len(p) for p in points] == [2, 2, 1]
    means = models.set_index("model")["mean_criticality"]
    assert points[1].tolist() == [[80.0, means["pythia_step1000"]], [22.0, means["pythia_step143000"]]]
    assert panels[1].get_xscale() == "linear"  # 80 / 22 < 10
    # without a tokenizer's name, a model is grouped by its architecture: never across tokenizers
    fig = draw({})
    assert [ax.get_title(loc="left") for ax in fig.axes if ax.get_title(loc="left")] == [
        "tokenizer: architecture smollm2", "tokenizer: architecture pythia", "tokenizer: architecture qwen25"]


def test_the_block_profile_shares_block_indices_only_between_models_of_one_depth(monkeypatch, tmp_path):
    for specs, label in ((LLM_STUDY[2:4], "block"), (LLM_STUDY[::2], "relative depth")):  # 12 and 12; 30, 12 and 24
        resets, _, models = fabricate(specs)
        fig = _drawn_figure(monkeypatch, lambda: figures.language.block_profile(resets, models, CATEGORIES, tmp_path / "f"))
        (ax,) = fig.axes
        assert ax.get_xlabel().startswith(label)
        lines = ax.get_lines()
        assert [line.get_label() for line in lines] == [models.set_index("model").loc[m, "display_name"] for m, *_ in specs]
        table = block_profile_table(resets)
        first = table[table["model"] == specs[0][0]]
        assert lines[0].get_ydata().tolist() == pytest.approx(first["mean"].tolist())
        if label == "block":
            assert lines[0].get_xdata().tolist() == list(range(12))
        else:
            assert lines[0].get_xdata()[-1] == 1.0 and lines[2].get_xdata()[-1] == 1.0


def test_only_a_text_study_has_the_language_figures():
    from layercrit.study import Model, Study

    model = Model("m", "m", "c", "a", {"kind": "train"})
    image = Study("s", {"reset": {"seeds": [0, 1]}, "data": {"kind": "synthetic"}}, {}, {"m": model}, [], None)
    text = Study("s", {"reset": {"seeds": [0, 1]}, "data": {"kind": "text"}}, {}, {"m": model}, [], None)
    assert image.language_figures == () and "block_difference_heatmap" not in image.figures_left_out
    assert text.language_figures == ("block_sublayer_heatmap", "block_profile", "criticality_vs_perplexity")
    assert "zoo `comparisons`" in text.figures_left_out["block_difference_heatmap"]
    text.comparisons = (("m", "m0"),)
    assert text.language_figures == LANGUAGE_FIGURE_NAMES and not set(LANGUAGE_FIGURE_NAMES) & set(text.figures)


def test_the_difference_heatmap_is_each_pairs_model_minus_its_reference_cell_by_cell(monkeypatch, tmp_path):
    _, summary, models = fabricate(LLM_STUDY)
    fig = _drawn_figure(monkeypatch, lambda: figures.language.block_difference_heatmap(summary, models, LLM_COMPARISONS, tmp_path / "f"))
    titled = [ax for ax in fig.axes if ax.get_title(loc="left")]
    assert [ax.get_title(loc="left") for ax in titled] == ["smollm2 instruct\nminus smollm2", "pythia step143000\nminus pythia step1000"]
    shown = titled[1].images[0].get_array()
    model, reference = (block_matrix(summary[summary["model"] == m])[0].to_numpy() for m in LLM_COMPARISONS[1])
    assert np.allclose(shown, model - reference)
    # criticality() adds 7 per model index: pythia_step143000 (3) minus pythia_step1000 (2), all 7 points
    assert np.allclose(shown, 7.0)
    low, high = fig.axes[-1].get_ylim()
    assert low == -high and high == 10.0  # symmetric, the largest difference rounded up to a multiple of 5
    with pytest.raises(ValueError, match="reset in different layers"):
        figures.language.block_difference_heatmap(summary, models, [("qwen25", "smollm2")], tmp_path / "g")
    with pytest.raises(ValueError, match=r"no results of \['gone'\]"):
        figures.language.block_difference_heatmap(summary, models, [("gone", "smollm2")], tmp_path / "g")


def test_the_zoos_comparisons_are_checked_at_parse_time_and_kept_where_the_study_has_both_models(tmp_path):
    import yaml

    from conftest import REPO, tiny_study
    from layercrit.study import ConfigError, load_workflow_study

    config_path = tiny_study(tmp_path)
    zoo_path = tmp_path / "zoo.yaml"
    zoo = yaml.safe_load(zoo_path.read_text())

    def study(comparisons, **config):
        zoo_path.write_text(yaml.safe_dump({**zoo, "comparisons": comparisons}, sort_keys=False))
        return load_workflow_study({**yaml.safe_load(config_path.read_text()), **config}, [], REPO, tmp_path).study

    pair = {"model": "demo_linf_1", "reference": "demo_baseline"}
    assert study([pair]).comparisons == (("demo_linf_1", "demo_baseline"),)
    assert study([pair], models=["demo_linf_1", "demo_cutout"]).comparisons == ()  # its reference is not in the study
    for comparisons, message in (
        ([{"model": "demo_linf_1", "reference": "demo_base"}], "zoo.comparisons[0]: unknown model id(s) ['demo_base']"),
        ([pair, {"model": "demo_cutout", "reference": "demo_cutout"}], "zoo.comparisons[1]: compares 'demo_cutout' with itself"),
        ([{"model": "demo_vit", "reference": "demo_baseline"}], "'demo_vit' (demo_vit) and 'demo_baseline' (demo_resnet) have different layers"),
        ([{"model": "demo_linf_1"}], "reference"),  # the schema's message
    ):  # fmt: skip
        with pytest.raises(ConfigError, match=re.escape(message)):
            study(comparisons)


def test_a_cell_that_rounds_to_zero_reads_0_not_minus_0():
    from layercrit.figures.language.heatmap import cell_text

    assert [cell_text(v) for v in (-0.04, 0.04, -0.06, 12.3, -12.6, 9.96)] == ["0.0", "0.0", "-0.1", "12", "-13", "10"]
