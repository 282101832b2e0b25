"""Issue 34, first slice: causal language models from transformers, text as evaluation data,
next-token metrics, offline.

Tiny GPT-NeoX, Llama and Qwen2 models and tokenizers trained here with the ``tokenizers``
library on generated text are saved as transformers publishes them and served on 127.0.0.1 as
Hub repositories through HF_ENDPOINT (FakeHosts), GPT-NeoX's at a branch (a Pythia-like
``step100``), not main.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import REPO, run_snakemake
from layercrit.study import LANGUAGE_FIGURE_NAMES
from layercrit.study.workflow import load_workflow_study
from layercrit.testing.fake_hosts import FakeHosts
from support.hub import hosts, layer_command  # noqa: F401 (hosts: a fixture)

WORDS = "the a cat dog bird sees eats runs over under big small red blue green house tree river and then".split()
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, max_position_embeddings=128)
FAMILIES = {  # model type: its extra config (grouped-query attention where the family has it)
    "gpt_neox": {},
    "llama": {"num_key_value_heads": 2},
    "qwen2": {"num_key_value_heads": 2, "tie_word_embeddings": True},
}
EOS = "<|endoftext|>"


def documents(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(15, 40))) + " ." for _ in range(n)]


def write_text(path: Path, docs: list[str]) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps({"text": d, "id": i}) + "\n" for i, d in enumerate(docs)))
    else:
        path.write_text("\n\n".join(docs) + "\n")
    return path


def train_tokenizer(vocab_size: int, seed: int):
    """A byte-level BPE tokenizer trained on generated text, with an end-of-text token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(documents(200, seed), trainer)
    return tokenizer


def tiny_lm(model_type: str, vocab_size: int, seed: int = 7) -> torch.nn.Module:
    """The 'trained' model: a seeded draw (what matters is that the workflow evaluates exactly
    these weights). Its seed must be none of the study's reset seeds: randomize with seed s
    draws the model built under seed s, which would be this one."""
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    config = AutoConfig.for_model(model_type, vocab_size=vocab_size, **TINY, **FAMILIES[model_type])
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():  # norms away from their init (ones), so that resetting one changes something
        for name, param in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                param.uniform_(0.5, 1.5)
    return model


def serve_lm(hosts: FakeHosts, repo: str, model, tokenizer, folder: Path, revision: str = "main", with_tokenizer: bool = True) -> str:
    """``model`` saved with save_pretrained and ``tokenizer`` as tokenizer.json (+ its config),
    served as Hub repository ``repo`` at ``revision``; returns the commit."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    if with_tokenizer:
        tokenizer.save(str(folder / "tokenizer.json"))
        (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": EOS, "tokenizer_class": "PreTrainedTokenizerFast"}))
    (commit,) = {hosts.add_hf_file(repo, f.name, f.read_bytes(), revision=revision) for f in sorted(folder.iterdir())}
    return commit


def arch_entry(repo: str, revision: str, layers: str) -> dict:
    return {"transformers": repo, "revision": revision, "layers": layers}


def model_entry(model_id: str, arch: str, repo: str, revision: str) -> dict:
    return {"id": model_id, "name": model_id, "category": "base", "architecture": arch,
            "source": {"kind": "huggingface", "repo": repo, "file": "model.safetensors", "revision": revision}}  # fmt: skip


def write_zoo(path: Path, architectures: dict, models: list[dict], **extra) -> Path:
    zoo = {"architectures": architectures, "categories": [{"id": "base", "label": "Base"}], "models": models, **extra}
    path.write_text(yaml.safe_dump(zoo, sort_keys=False))
    return path


def one_lm_zoo(hosts, tmp_path: Path, model_type: str = "llama", revision: str = "main", with_tokenizer: bool = True, served: str | None = None):
    tokenizer = train_tokenizer(300, seed=0)
    model = tiny_lm(model_type, tokenizer.get_vocab_size())
    serve_lm(hosts, "owner/tiny-lm", model, tokenizer, tmp_path / "repo", revision=served or revision, with_tokenizer=with_tokenizer)
    zoo = write_zoo(tmp_path / "zoo.yaml", {"lm": arch_entry("owner/tiny-lm", revision, "lm.tsv")}, [model_entry("m", "lm", "owner/tiny-lm", revision)])
    return zoo, model, tokenizer


def zoo_architecture(zoo: Path, arch_id: str = "lm"):
    from layercrit.study.architectures import _layer_list

    spec = yaml.safe_load(zoo.read_text())
    return _layer_list(zoo.parent, arch_id, spec["architectures"][arch_id], spec)


def test_the_layer_list_of_a_causal_lm_records_its_task_tokenizer_and_every_layer(hosts, tmp_path):
    from layercrit.figures.heatmaps.labels import layer_label

    zoo, _, _ = one_lm_zoo(hosts, tmp_path)
    layer_command(zoo, "lm", tmp_path)
    arch = zoo_architecture(zoo)
    repo = tmp_path / "repo"
    assert arch.extra["task"] == "causal-lm"
    assert arch.extra["tokenizer"] == {f: hashlib.sha256((repo / f).read_bytes()).hexdigest() for f in ("tokenizer.json", "tokenizer_config.json")}
    assert arch.input["tokens"] and arch.input["max_positions"] == 128 and arch.input["vocab_size"] == 300
    types = {layer.name: layer.type for layer in arch.layers}
    for block in (0, 1):
        for sub in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"):
            assert types[f"model.layers.{block}.{sub}"] == "Linear"
        assert types[f"model.layers.{block}.input_layernorm"] == "LlamaRMSNorm"
    assert types["model.embed_tokens"] == "Embedding" and types["model.norm"] == "LlamaRMSNorm" and types["lm_head"] == "Linear"
    assert len(arch.layers) == 2 * 9 + 3
    assert layer_label("model.layers.1.mlp.down_proj", "Linear", "") == "[1] mlp.down_proj"
    assert layer_label("gpt_neox.layers.12.attention.dense", "Linear", "") == "[12] attn.dense"  # as a ViT's attention
    assert layer_label("model.layers.0.input_layernorm", "LlamaRMSNorm", "") == "[0] input_layernorm (RMS)"


def test_a_fresh_lm_is_transformers_own_init_drawn_from_torchs_global_rng(hosts, tmp_path):
    from transformers import AutoModelForCausalLM

    from layercrit.models.seed_schemes import fresh_model
    from layercrit.models.zoo import build_architecture

    zoo, trained, _ = one_lm_zoo(hosts, tmp_path, "qwen2")
    layer_command(zoo, "lm", tmp_path)
    arch = zoo_architecture(zoo)
    torch.manual_seed(123)  # the global stream as it stands must not matter
    for seed in (0, 3):
        drawn = fresh_model(arch, seed).state_dict()
        torch.manual_seed(seed)
        by_hand = AutoModelForCausalLM.from_config(trained.config).state_dict()
        assert list(drawn) == list(by_hand) and all(torch.equal(drawn[k], by_hand[k]) for k in by_hand), seed
    torch.manual_seed(0)  # seed scheme authors: trial t is the (t + 2)-th model built after seeding 0 once
    by_hand = [AutoModelForCausalLM.from_config(trained.config).state_dict() for _ in range(3)][2]
    drawn = fresh_model(arch, 1, "authors").state_dict()
    assert all(torch.equal(drawn[k], by_hand[k]) for k in by_hand)
    model = build_architecture(arch, seed=0)
    x = torch.randint(0, 300, (2, 10))
    logits = model(x)
    assert logits.shape == (2, 10, 300)  # the next-token logits, per position


def test_a_repo_without_tokenizer_or_an_unknown_revision_is_refused_by_the_layer_command(hosts, tmp_path):
    zoo, _, _ = one_lm_zoo(hosts, tmp_path, with_tokenizer=False)
    proc = layer_command(zoo, "lm", tmp_path, check=False)
    assert proc.returncode and "causal language model but has no tokenizer.json at this revision" in proc.stderr
    zoo, _, _ = one_lm_zoo(hosts, tmp_path, revision="step999", served="step100")
    proc = layer_command(zoo, "lm", tmp_path, check=False)
    assert proc.returncode and "owner/tiny-lm at revision 'step999'" in proc.stderr and "no config.json" in proc.stderr
    assert not (tmp_path / "lm.tsv").exists()


def text_config(tmp_path: Path, zoo: Path, text: Path, **data) -> dict:
    return {
        "study": "lm", "zoo": str(zoo), "device": "cpu", "batch_size": 4, "activation_cache_mb": 0,
        "data": {"kind": "text", "path": str(text), "windows": 6, "window_tokens": 32, **data},
        "reset": {"mode": "randomize", "seeds": [0], "layers": {"types": ["Linear", "Embedding", "LlamaRMSNorm"]}},
    }  # fmt: skip


def test_bad_text_input_stops_at_parse_time_with_what_to_do(hosts, tmp_path):
    from layercrit.study import ConfigError, build_study

    zoo, _, _ = one_lm_zoo(hosts, tmp_path)
    layer_command(zoo, "lm", tmp_path)

    def problem(config):
        from layercrit.study.workflow import load_workflow_study

        with pytest.raises(ConfigError) as e:
            load_workflow_study(config, [], Path(__file__).parents[1])
        return str(e.value)

    text = write_text(tmp_path / "docs.txt", documents(20, 1))
    assert "does not exist" in problem(text_config(tmp_path, zoo, tmp_path / "none.txt"))
    assert "too short for data.windows x data.window_tokens = 100 x 64 = 6400 tokens" in problem(text_config(tmp_path, zoo, text, windows=100, window_tokens=64))
    assert "takes at most 128 positions" in problem(text_config(tmp_path, zoo, text, windows=1, window_tokens=256))
    (tmp_path / "bad.jsonl").write_text('{"body": "x"}\n' * 500)
    assert "no string field 'text'" in problem(text_config(tmp_path, zoo, tmp_path / "bad.jsonl"))
    assert "windos" in problem(text_config(tmp_path, zoo, text, windos=3))  # an unknown key: the schema's message
    assert "data.path" in problem(text_config(tmp_path, zoo, tmp_path / "docs.csv"))
    removal = text_config(tmp_path, zoo, text) | {"reset": {"mode": "remove", "seeds": [0], "blocks": {"types": ["LlamaDecoderLayer"]}}}
    assert "architectures.lm.blocks: reset mode 'remove' needs the architecture's block list" in problem(removal)
    image_study = text_config(tmp_path, zoo, text) | {"data": {"kind": "synthetic"}}
    assert "are causal language models, evaluated on text: set data.kind: text" in problem(image_study)
    del build_study


def test_token_windows_take_the_same_seeded_documents_and_say_when_the_text_is_too_short(tmp_path):
    from layercrit.text_windows import TextTooShort, document_order, read_documents, token_windows

    docs = documents(30, 2)
    assert read_documents(write_text(tmp_path / "d.txt", docs)) == docs == read_documents(write_text(tmp_path / "d.jsonl", docs))
    order = document_order(len(docs), 5)
    assert sorted(order) == list(range(30)) and order != list(range(30)) and order == document_order(30, 5)
    small, large = train_tokenizer(270, seed=0), train_tokenizer(400, seed=1)
    eos = {"eos_token": EOS}
    a, used_a = token_windows(small, eos, docs, order, 4, 16, "here")
    b, used_b = token_windows(large, eos, docs, order, 4, 16, "here")
    assert a.shape == b.shape == (4, 16) and a.dtype == torch.int64
    first = small.encode(docs[order[0]], add_special_tokens=False).ids
    assert a.flatten()[: len(first)].tolist() == first[:64]  # both start with the same document
    for tokenizer, windows in ((small, a), (large, b)):
        assert docs[order[0]].startswith(tokenizer.decode(windows.flatten()[:8].tolist()))
    with pytest.raises(TextTooShort, match=r"the text gives \d+ tokens \(30 documents\), fewer than .* 100 x 64 = 6400"):
        token_windows(small, eos, docs, order, 100, 64, "here")


@pytest.mark.slow
def test_a_text_its_tokenizer_makes_too_few_tokens_of_stops_the_token_job(hosts, tmp_path):
    """Long enough in bytes (the parse-time bound), too short in tokens: known only once the
    tokenizer has run, so the token job, the study's first, stops with what to change."""
    zoo, _, _ = one_lm_zoo(hosts, tmp_path)
    layer_command(zoo, "lm", tmp_path)
    text = write_text(tmp_path / "short.txt", documents(12, 1))
    config = text_config(tmp_path, zoo, text, windows=8, window_tokens=128) | {"downloads": str(tmp_path / "downloads")}
    assert 8 * 128 <= text.stat().st_size
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    proc = run_snakemake(tmp_path, "--configfile", str(tmp_path / "config.yaml"), "--cores", "1", check=False)
    assert proc.returncode
    log = "".join(path.read_text() for path in (tmp_path / "results/lm/logs/data").glob("tokens-*.log"))
    assert re.search(r"the text gives \d+ tokens \(12 documents\), fewer than data.windows x data.window_tokens = 8 x 128 = 1024", log)
    assert not (tmp_path / "results/lm/baselines").exists()


def plain_transformers_criticality(repo: Path, tokens: torch.Tensor, layer: str, fresh_seed: int) -> tuple[float, float]:
    """One layer's criticality and the clean perplexity as a plain transformers script computes
    them (no layercrit code): the model from its folder, the layer's parameters replaced by those
    of a model built from the config under the seed, 100 x (1 - mean cosine of the softmaxes) over
    every predicted position."""
    from transformers import AutoConfig, AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(repo, dtype=torch.float32).eval()
    torch.manual_seed(fresh_seed)
    fresh = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(repo))
    with torch.no_grad():
        clean = model(input_ids=tokens).logits[:, :-1].double()
        for name, param in model.get_submodule(layer).named_parameters(recurse=False):
            param.copy_(fresh.get_submodule(layer).get_parameter(name))
        reset = model(input_ids=tokens).logits[:, :-1].double()
    cosine = torch.nn.functional.cosine_similarity(clean.softmax(-1), reset.softmax(-1), dim=-1)
    nll = torch.nn.functional.cross_entropy(clean.reshape(-1, clean.shape[-1]), tokens[:, 1:].reshape(-1))
    return 100 * (1 - float(cosine.mean())), math.exp(float(nll))


@pytest.mark.slow
def test_three_lm_families_are_fetched_verified_evaluated_and_aggregated(hosts, tmp_path):
    """GPT-NeoX at a branch, Llama and Qwen2 (sharing one tokenizer, so one token file; Qwen2's
    weights from a local file as saved by save_pretrained), and GPT-NeoX at a later branch (other
    weights, one architecture), compared with the first; a randomize study of a few layers
    each, two seeds: baseline, resets, tables, heatmap, the language-model figures."""
    import pandas as pd

    from layercrit.text_windows import read_token_windows

    neox_tok, shared_tok = train_tokenizer(300, seed=0), train_tokenizer(350, seed=1)
    repos = {"neox": ("gpt_neox", neox_tok, "step100"), "llama": ("llama", shared_tok, "main"), "qwen": ("qwen2", shared_tok, "main")}
    architectures, models, trained = {}, [], {}
    for name, (model_type, tok, revision) in repos.items():
        trained[name] = tiny_lm(model_type, tok.get_vocab_size(), seed=len(name))
        serve_lm(hosts, f"owner/{name}", trained[name], tok, tmp_path / "repos" / name, revision=revision)
        architectures[name] = arch_entry(f"owner/{name}", revision, f"{name}.tsv")
        models.append(model_entry(f"{name}_lm", name, f"owner/{name}", revision))
    models[2]["source"] = {"kind": "url", "url": str(tmp_path / "repos/qwen/model.safetensors")}  # a local checkpoint
    later = tiny_lm("gpt_neox", neox_tok.get_vocab_size(), seed=11)  # a later training step: the neox architecture
    serve_lm(hosts, "owner/neox", later, neox_tok, tmp_path / "repos/neox_step200", revision="step200")
    models.append(model_entry("neox_step200_lm", "neox", "owner/neox", "step200"))
    comparisons = [{"model": "neox_step200_lm", "reference": "neox_lm"}]  # step vs step
    zoo = write_zoo(tmp_path / "zoo.yaml", architectures, models, comparisons=comparisons)
    for name in repos:
        layer_command(zoo, name, tmp_path)
    text = write_text(tmp_path / "corpus.jsonl", documents(60, 3))
    config = text_config(tmp_path, zoo, text) | {"downloads": str(tmp_path / "downloads")}
    config["reset"] = {"mode": "randomize", "seeds": [0, 1], "layers": {"types": ["Linear", "Embedding", "LlamaRMSNorm", "Qwen2RMSNorm"], "include": [
        "gpt_neox.embed_in", "gpt_neox.layers.1.mlp.dense_4h_to_h", "model.layers.0.self_attn.q_proj",
        "model.layers.1.mlp.down_proj", "model.layers.1.post_attention_layernorm", "model.norm"]}}  # fmt: skip
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    run_snakemake(tmp_path, "--configfile", str(tmp_path / "config.yaml"), "--cores", "2")

    results = tmp_path / "results/lm"
    token_files = sorted((results / "data").glob("tokens-*.safetensors"))
    assert len(token_files) == 2  # one per distinct tokenizer
    windows = {read_token_windows(f)[1]["tokenizer"]["repo"]: read_token_windows(f) for f in token_files}
    (neox_tokens, neox_record), (shared_tokens, shared_record) = windows["owner/neox"], windows.get("owner/llama") or windows["owner/qwen"]
    assert neox_tokens.shape == shared_tokens.shape == (6, 32)
    assert neox_record["order_head"] == shared_record["order_head"]  # the same documents, in one seeded order

    resets = pd.read_csv(results / "tables/randomize/resets.csv")
    assert len(resets) == (2 + 4 + 4 + 2) * 2 and set(resets["model"]) == {"neox_lm", "llama_lm", "qwen_lm", "neox_step200_lm"}
    assert resets["criticality"].between(0, 100).all() and (resets["criticality"] > 0).all()
    assert (resets["n_images"] == 6 * 31).all() and (resets["clean_max_logprob_diff"] <= 1e-4).all()
    assert (resets["perplexity"] > 0).all() and resets["kl"].ge(0).all()
    for model_id, tokens, repo in (("neox_lm", neox_tokens, "neox"), ("llama_lm", shared_tokens, "llama"), ("qwen_lm", shared_tokens, "qwen")):
        baseline = json.loads((results / f"baselines/{model_id}.json").read_text())
        row = resets[(resets["model"] == model_id) & (resets["seed"] == 1)].iloc[-1]
        expected, clean_ppl = plain_transformers_criticality(tmp_path / "repos" / repo, tokens, row["layer"], 1)
        assert row["criticality"] == pytest.approx(expected, rel=1e-4, abs=1e-8), (model_id, row["layer"])
        assert baseline["perplexity"] == pytest.approx(clean_ppl, rel=1e-5) == row["clean_perplexity"]
    for path in sorted((results / "resets/randomize").rglob("*.json")):
        record = json.loads(path.read_text())
        print(f"{path.relative_to(results)}: wall_s={record['wall_s']:.3f} forward_s={record['forward_s']:.3f} tokens/s={record['tokens_per_s']:.0f}")
    assert (results / "figures/randomize/criticality_heatmap.png").is_file()
    # the language-model figures; perplexities compared within a tokenizer: Llama's and Qwen2's is one
    index = json.loads((results / "figures/randomize/index.json").read_text())
    assert set(LANGUAGE_FIGURE_NAMES) <= set(index["figures"])
    assert all((results / f"figures/randomize/{name}.{ext}").is_file() for name in LANGUAGE_FIGURE_NAMES for ext in ("png", "pdf"))
    study = load_workflow_study(config, [], REPO, tmp_path).study
    assert study.comparisons == (("neox_step200_lm", "neox_lm"),)
    assert study.tokenizers() == {"neox_lm": "owner/neox@step100", "llama_lm": "owner/llama", "qwen_lm": "owner/llama",
                                  "neox_step200_lm": "owner/neox@step100"}  # fmt: skip


README_SECTION = re.search(r"### Language models\n(.*?)\n(?=#### |### |## )", (REPO / "README.md").read_text(), re.S)


@pytest.mark.slow
def test_the_readme_language_model_study_runs_as_written(hosts, tmp_path):
    """The README's zoo, layer command and study config as written, against a stand-in of its
    repository (a tiny Llama and a trained tokenizer under the README's repository id) and a
    generated corpus at the README's path: every layer, both seeds, tables and heatmap."""
    import pandas as pd

    text = README_SECTION.group(1)
    zoo_text, config_text, removal_text = re.findall(r"```yaml\n(.*?)```", text, re.S)[:3]  # the 4th: test_language_training
    command = re.search(r"```bash\n(python -m layercrit\.zoo layers [^\n]*)\n```", text).group(1)
    zoo, config = yaml.safe_load(zoo_text), yaml.safe_load(config_text)
    (arch_id, spec), = zoo["architectures"].items()
    tokenizer = train_tokenizer(350, seed=4)
    serve_lm(hosts, spec["transformers"], tiny_lm("llama", tokenizer.get_vocab_size(), seed=7), tokenizer, tmp_path / "repo", revision=spec["revision"])
    (tmp_path / zoo_text.splitlines()[0].removeprefix("# ")).parent.mkdir(parents=True)
    (tmp_path / "config/architectures").mkdir()
    (tmp_path / config["zoo"]).write_text(zoo_text)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # the environment, activated
    proc = subprocess.run(command.split(), cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    (tmp_path / "data").mkdir()
    write_text(tmp_path / config["data"]["path"], documents(1500, 5))
    config_path = tmp_path / config_text.splitlines()[0].removeprefix("# ")
    config_path.write_text(config_text)
    run_snakemake(tmp_path, "--configfile", str(config_path), "--cores", "2")

    results = tmp_path / "results" / config["study"]
    resets = pd.read_csv(results / "tables/randomize/resets.csv")
    n_layers = len(pd.read_csv(tmp_path / "config/architectures" / Path(spec["layers"]).name, sep="\t", comment="#"))
    assert n_layers == 21 and len(resets) == n_layers * 2
    assert (resets["n_images"] == 64 * 127).all() and (resets["criticality"] > 0).all()
    assert (resets["clean_perplexity"] == resets["clean_perplexity"].iloc[0]).all()
    timing = resets.groupby("layer_type")[["wall_s", "forward_s", "tokens_per_s"]].median()
    print(timing.to_string())
    assert (results / "figures/randomize/criticality_heatmap.png").is_file()
    index = json.loads((results / "figures/randomize/index.json").read_text())
    drawn = [name for name in LANGUAGE_FIGURE_NAMES if name != "block_difference_heatmap"]  # one model: nothing to compare
    assert set(drawn) <= set(index["figures"]) and "zoo `comparisons`" in index["left_out"]["block_difference_heatmap"]
    assert all(f"`{name}`" in text for name in LANGUAGE_FIGURE_NAMES)  # the README names them all
    assert all((results / f"figures/randomize/{name}.png").is_file() for name in drawn)
    assert set(resets["forward_from"]) == {"input", "model.layers.1", "model.layers.2"}  # activation reuse, on by default

    removal = yaml.safe_load(removal_text)  # block removal of the same model: each decoder layer in turn
    removal_path = tmp_path / removal_text.splitlines()[0].removeprefix("# ")
    removal_path.write_text(removal_text)
    run_snakemake(tmp_path, "--configfile", str(removal_path), "--cores", "2")
    removed = pd.read_csv(tmp_path / "results" / removal["study"] / "tables/remove/resets.csv")
    assert sorted(removed["layer"]) == ["model.layers.0", "model.layers.1"] and (removed["criticality"] > 0).all()
