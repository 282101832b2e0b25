"""The figures of language-model studies (issue 34): criticality by block × sublayer kind, the
depth profile along the blocks, criticality against clean perplexity within each tokenizer.
Drawn here from synthetic tables shaped like the aggregation step's; the end-to-end run of a text
study that draws them is in tests/test_language_models.py."""

from __future__ import annotations

import math

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
    resets, summary, models = fabricate([("llama_base", "base", llama_layers(4), 12.0), ("neox_step", "base", neox_layers(3), 30.0)])
    study = StudyInfo(categories=CATEGORIES, tokenizers={"llama_base": "owner/llama", "neox_step": "owner/neox"})
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
