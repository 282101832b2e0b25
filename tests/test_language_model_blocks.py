"""Block removal for causal language models (issue 34): a removed decoder layer gives the forward
pass of the model with that layer deleted from its ModuleList, bit for bit (the removed layer
still runs, its result unused, and every other operation is the same one on the same tensors),
also from the kept hidden states; end to end, a small text study in mode remove."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from conftest import run_snakemake
from layercrit.evaluation.forward import EvalSettings
from test_language_model_reuse import N_LAYERS, STACKS, lm_architecture, token_windows, trained_lm
from test_language_models import FAMILIES, arch_entry, documents, hosts, layer_command, model_entry, serve_lm, text_config, tiny_lm, train_tokenizer, write_text, write_zoo  # noqa: F401 (hosts: a fixture)


def without_layer(model: torch.nn.Module, stack: str, k: int) -> torch.nn.Module:
    """A copy of ``model`` with decoder layer k deleted from its ModuleList."""
    import copy

    pruned = copy.deepcopy(model)
    del pruned.get_submodule(stack)[k]
    return pruned


@pytest.mark.parametrize("model_type", list(FAMILIES))
def test_a_removed_decoder_layer_is_that_layer_deleted_from_the_module_list_bit_for_bit(model_type):
    from layercrit.evaluation.hidden_states import CleanHiddenStates
    from layercrit.evaluation.language import next_token_logits, window_batches
    from layercrit.evaluation.metrics import next_token_record
    from layercrit.models.blocks import remove_block

    model, stack = trained_lm(lm_architecture(model_type)), STACKS[model_type]
    settings = EvalSettings(device="cpu", batch_size=4)
    batches = window_batches(token_windows(), settings, "cpu")
    clean = [next_token_logits(model, b, settings, "cpu") for b in batches]
    states = CleanHiddenStates(model, budget_bytes=2**30)
    states.record(batches, settings, "cpu", torch.cat([next_token_record(c, b)["target_logprob"] for c, b in zip(clean, batches)]))
    for k in range(N_LAYERS):
        pruned = without_layer(model, stack, k)
        assert states.start_for(f"{stack}.{k}") == (k or None)
        for i, batch in enumerate(batches):
            expected = next_token_logits(pruned, batch, settings, "cpu")
            with remove_block(model, f"{stack}.{k}"):
                removed = next_token_logits(model, batch, settings, "cpu")
            with states.resumed(states.start_for(f"{stack}.{k}"), i), remove_block(model, f"{stack}.{k}"):
                resumed = next_token_logits(model, batch, settings, "cpu")
            assert torch.equal(removed, expected) and torch.equal(resumed, expected), (k, i)
            assert not torch.equal(removed, clean[i])
        assert torch.equal(next_token_logits(model, batches[0], settings, "cpu"), clean[0])  # the hook is gone


def plain_removal_criticality(repo, tokens: torch.Tensor, stack: str, k: int) -> float:
    """100 x (1 - mean cosine of the softmaxes) of the model with decoder layer k deleted from its
    ModuleList against the model, as a plain transformers script computes it (no layercrit code)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(repo, dtype=torch.float32).eval()
    with torch.no_grad():
        clean = model(input_ids=tokens).logits[:, :-1].double()
        del model.get_submodule(stack)[k]
        removed = model(input_ids=tokens).logits[:, :-1].double()
    return 100 * (1 - float(torch.nn.functional.cosine_similarity(clean.softmax(-1), removed.softmax(-1), dim=-1).mean()))


@pytest.mark.slow
def test_a_text_study_removes_decoder_layers_end_to_end(hosts, tmp_path):
    """A tiny Qwen2 (4 decoder layers) with its block list written by the layer command; a study in
    mode remove of its decoder layers, with activation reuse: one result per layer, each the
    criticality of the model with that layer deleted."""
    import pandas as pd

    from layercrit.study.blocks import read_block_list
    from layercrit.text_windows import read_token_windows

    tokenizer = train_tokenizer(300, seed=0)
    model = tiny_lm("qwen2", tokenizer.get_vocab_size())
    serve_lm(hosts, "owner/tiny-lm", model, tokenizer, tmp_path / "repo")
    zoo = write_zoo(tmp_path / "zoo.yaml", {"lm": arch_entry("owner/tiny-lm", "main", "lm.tsv") | {"blocks": "lm.blocks.tsv"}}, [model_entry("m", "lm", "owner/tiny-lm", "main")])
    layer_command(zoo, "lm", tmp_path)
    _, blocks = read_block_list(tmp_path / "lm.blocks.tsv")
    decoder_layers = [b for b in blocks if b.type == "Qwen2DecoderLayer"]
    assert [b.name for b in decoder_layers] == ["model.layers.0", "model.layers.1"] and all(b.removable for b in decoder_layers)
    assert {"Qwen2Attention", "Qwen2MLP"} <= {b.type for b in blocks}
    text = write_text(tmp_path / "docs.txt", documents(60, 3))
    config = text_config(tmp_path, zoo, text) | {"downloads": str(tmp_path / "downloads"), "activation_cache_mb": 64}
    config["reset"] = {"mode": "remove", "seeds": [0], "blocks": {"types": ["Qwen2DecoderLayer"]}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    run_snakemake(tmp_path, "--configfile", str(tmp_path / "config.yaml"), "--cores", "2")

    results = tmp_path / "results/lm"
    resets = pd.read_csv(results / "tables/remove/resets.csv").set_index("layer")
    assert sorted(resets.index) == ["model.layers.0", "model.layers.1"]
    (token_file,) = (results / "data").glob("tokens-*.safetensors")
    tokens, _ = read_token_windows(token_file)
    for k in (0, 1):
        row = resets.loc[f"model.layers.{k}"]
        assert row["criticality"] == pytest.approx(plain_removal_criticality(tmp_path / "repo", tokens, "model.layers", k), rel=1e-6)
        assert row["criticality"] > 0
    forward_from = {json.loads(p.read_text())["layer"]: json.loads(p.read_text())["forward_from"] for p in (results / "resets/remove").rglob("*.json")}
    assert forward_from == {"model.layers.0": "input", "model.layers.1": "model.layers.1"}
