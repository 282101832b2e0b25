"""Activation reuse for causal language models (issue 34): a pass that starts from the clean
hidden states at a decoder layer's input gives the full pass's logits bit for bit, for GPT-NeoX,
Llama and Qwen2 (tied output head), and a reset job's results are the same with and without it."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from layercrit.evaluation.forward import EvalSettings
from test_language_models import FAMILIES, TINY

STACKS = {"gpt_neox": "gpt_neox.layers", "llama": "model.layers", "qwen2": "model.layers"}
SUBLAYERS = {  # a Linear of attention and of the MLP, and the block's first norm, per family
    "gpt_neox": ("attention.query_key_value", "mlp.dense_4h_to_h", "input_layernorm"),
    "llama": ("self_attn.q_proj", "mlp.down_proj", "input_layernorm"),
    "qwen2": ("self_attn.k_proj", "mlp.down_proj", "post_attention_layernorm"),
}
FINAL = {"gpt_neox": ("gpt_neox.embed_in", "gpt_neox.final_layer_norm"), "llama": ("model.embed_tokens", "model.norm"), "qwen2": ("model.embed_tokens", "model.norm")}
N_LAYERS, VOCAB = 4, 300


def lm_architecture(model_type: str):
    from transformers import AutoConfig

    from layercrit.study import Architecture

    config = AutoConfig.for_model(model_type, vocab_size=VOCAB, **(TINY | {"num_hidden_layers": N_LAYERS}), **FAMILIES[model_type])
    config.architectures = [f"{type(config).__name__.removesuffix('Config')}ForCausalLM"]
    return Architecture(id=model_type, name=f"owner/{model_type}", library="transformers", extra={"task": "causal-lm", "config": config.to_dict()})


def trained_lm(arch) -> torch.nn.Module:
    """A seeded draw with its norms away from ones (so that resetting one changes something)."""
    from layercrit.models.zoo import build_architecture

    model = build_architecture(arch, seed=11).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                param.uniform_(0.5, 1.5)
    return model


def token_windows(n: int = 6, length: int = 24) -> torch.Tensor:
    return torch.randint(0, VOCAB, (n, length), generator=torch.Generator().manual_seed(3))


def reset_layers(model_type: str) -> dict[str, int | None]:
    """Layers to reset, with the boundary their passes start from (None: the full pass)."""
    stack, (embedding, final_norm) = STACKS[model_type], FINAL[model_type]
    expected = {embedding: None, final_norm: N_LAYERS, "lm_head": None if model_type == "qwen2" else N_LAYERS}  # qwen2's head is its embedding
    for k in range(N_LAYERS):
        for sub in SUBLAYERS[model_type]:
            expected[f"{stack}.{k}.{sub}"] = k or None
    return expected


@pytest.mark.parametrize("model_type", list(FAMILIES))
def test_a_pass_from_the_kept_hidden_states_is_the_full_pass_bit_for_bit(model_type):
    from layercrit.evaluation.hidden_states import CleanHiddenStates
    from layercrit.evaluation.language import next_token_logits, window_batches
    from layercrit.evaluation.metrics import next_token_record
    from layercrit.evaluation.reset import reset_layer
    from layercrit.models.zoo import build_architecture

    arch = lm_architecture(model_type)
    model, fresh = trained_lm(arch), build_architecture(arch, seed=0).state_dict()
    settings = EvalSettings(device="cpu", batch_size=4)
    batches = window_batches(token_windows(), settings, "cpu")  # 4 + 2 windows
    full_clean = [next_token_logits(model, b, settings, "cpu") for b in batches]
    baseline = torch.cat([next_token_record(logits, b)["target_logprob"] for logits, b in zip(full_clean, batches)])
    states = CleanHiddenStates(model, budget_bytes=2**30)
    states.record(batches, settings, "cpu", baseline)
    assert states.exact and states.stack_name == STACKS[model_type] and sorted(states.kept) == [1, 2, 3, 4]

    first_mlp_calls = []
    model.get_submodule(f"{STACKS[model_type]}.0.mlp").register_forward_hook(lambda *_: first_mlp_calls.append(1))
    for layer, start in reset_layers(model_type).items():
        assert states.start_for(layer) == start, layer
        for i, batch in enumerate(batches):
            with reset_layer(model, layer, "randomize", fresh):
                full = next_token_logits(model, batch, settings, "cpu")
            first_mlp_calls.clear()
            with states.resumed(start, i):
                clean = next_token_logits(model, batch, settings, "cpu")
                with reset_layer(model, layer, "randomize", fresh):
                    reset = next_token_logits(model, batch, settings, "cpu")
            assert torch.equal(clean, full_clean[i]) and torch.equal(reset, full), (layer, i)
            assert not torch.equal(reset, clean), layer  # the reset reached the resumed pass
            assert len(first_mlp_calls) == (2 if start is None else 0), layer  # decoder layer 0 skipped when resumed
    assert torch.equal(next_token_logits(model, batches[0], settings, "cpu"), full_clean[0])  # nothing left skipped


def test_within_a_small_budget_the_deepest_hidden_states_are_kept_and_others_start_before_or_run_in_full():
    from layercrit.evaluation.hidden_states import CleanHiddenStates
    from layercrit.evaluation.language import next_token_logits, window_batches
    from layercrit.evaluation.metrics import next_token_record

    model = trained_lm(lm_architecture("llama"))
    settings = EvalSettings(device="cpu", batch_size=4)
    tokens = token_windows()
    batches = window_batches(tokens, settings, "cpu")
    baseline = torch.cat([next_token_record(next_token_logits(model, b, settings, "cpu"), b)["target_logprob"] for b in batches])
    per_boundary = tokens.numel() * TINY["hidden_size"] * 4  # d_model x 4 bytes per token
    states = CleanHiddenStates(model, budget_bytes=2 * per_boundary + per_boundary // 2)
    states.record(batches, settings, "cpu", baseline)
    assert sorted(states.kept) == [3, 4] and states.nbytes == 2 * per_boundary
    assert [states.start_for(f"model.layers.{k}.mlp.up_proj") for k in range(4)] == [None, None, None, 3]
    assert states.start_for("model.norm") == 4
    too_small = CleanHiddenStates(model, budget_bytes=per_boundary - 1)
    too_small.record(batches, settings, "cpu", baseline)
    assert not too_small.kept and too_small.start_for("model.norm") is None
    off_by_one_ulp = baseline.clone()
    off_by_one_ulp[0, 0] = torch.nextafter(baseline[0, 0], torch.tensor(0.0))
    other = CleanHiddenStates(model, budget_bytes=2**30)
    other.record(batches, settings, "cpu", off_by_one_ulp)  # a baseline from another device: no reuse
    assert not other.exact and not other.kept and other.start_for("model.norm") is None


def write_token_file(path, tokens: torch.Tensor) -> None:
    record = {"kind": "text", "tokenizer": {"repo": "owner/tokenizer"}, "windows": tokens.shape[0], "window_tokens": tokens.shape[1]}
    save_file({"tokens": tokens.contiguous()}, str(path), metadata={"text_windows": json.dumps(record)})


@pytest.mark.parametrize("model_type", list(FAMILIES))
def test_a_reset_job_gives_the_same_results_with_and_without_reuse(model_type, tmp_path):
    from layercrit.evaluation import EvaluationCache, ResetInputs
    from layercrit.evaluation.language import evaluate_lm_baseline, evaluate_lm_reset
    from layercrit.io import provenance
    from layercrit.models.zoo import save_checkpoint

    arch = lm_architecture(model_type)
    state = {name: t.clone() for name, t in trained_lm(arch).state_dict().items()}  # qwen2 ties its head to its embeddings
    save_checkpoint(tmp_path / "model.safetensors", state, None)
    write_token_file(tmp_path / "tokens.safetensors", token_windows(6, 32))
    settings = EvalSettings(device="cpu", batch_size=4)
    evaluate_lm_baseline(
        model_id="m", arch=arch, weights=tmp_path / "model.safetensors", eval_data=tmp_path / "tokens.safetensors",
        settings=settings, logits_out=tmp_path / "record.safetensors", summary_out=tmp_path / "baseline.json", cache=EvaluationCache(),
    )  # fmt: skip
    files = ResetInputs(tmp_path / "model.safetensors", tmp_path / "tokens.safetensors", tmp_path / "record.safetensors", tmp_path / "baseline.json")
    stack, (_, final_norm) = STACKS[model_type], FINAL[model_type]
    layers = {f"{stack}.0.{SUBLAYERS[model_type][1]}": "input", f"{stack}.2.{SUBLAYERS[model_type][0]}": f"{stack}.2", final_norm: f"{stack}.{N_LAYERS}"}
    varying = {"forward_s", "wall_s", "tokens_per_s", "lease_wait_s", "forward_from", *provenance()}
    reusing = EvaluationCache()  # one per run, as the process of a study keeps one
    for layer, starts_at in layers.items():
        results = {}
        for budget, cache in ((0, EvaluationCache()), (64, reusing)):
            job = dict(model_id="m", arch=arch, files=files, layer=layer, seed=1, mode="randomize", cache=cache)
            results[budget] = evaluate_lm_reset(**job, settings=EvalSettings(device="cpu", batch_size=4, activation_cache_mb=budget), out=tmp_path / f"{budget}.json")
        assert results[0]["forward_from"] == "input" and results[64]["forward_from"] == starts_at
        assert {k: v for k, v in results[0].items() if k not in varying} == {k: v for k, v in results[64].items() if k not in varying}, layer
        assert results[64]["criticality"] > 0 and results[64]["clean_max_logprob_diff"] == 0.0
