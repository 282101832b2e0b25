"""Issue 34: causal language models trained by the workflow (rule train_language_model) on a
text, fresh or fine-tuned from another model of the zoo (``init_from``), then evaluated.

The architecture is a tiny Llama served as a stand-in Hub repository (tests/support/hub.py);
its tokenizer cuts the training texts, generated here.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from conftest import REPO, run_snakemake
from support.hub import hosts, layer_command  # noqa: F401 (hosts: a fixture)
from test_language_models import README_SECTION, arch_entry, documents, serve_lm, tiny_lm, train_tokenizer, write_text, write_zoo

RECIPE = {"steps": 12, "batch_size": 4, "window_tokens": 32, "heldout_windows": 4, "lr": 0.003, "log_every": 4}


def trained_entry(model_id: str, text: str, seed: int, **recipe) -> dict:
    return {"id": model_id, "name": model_id, "category": "base", "architecture": "lm",
            "source": {"kind": "train", "seed": seed, "recipe": {"text": {"path": text}, **RECIPE, **recipe}}}  # fmt: skip


def llama_zoo(hosts, tmp_path: Path, models: list[dict], extra_architectures: dict | None = None, arch_id: str = "lm") -> Path:
    """A zoo of ``models`` on a tiny Llama (architecture ``arch_id``) with its layer list written."""
    tokenizer = train_tokenizer(300, seed=0)
    serve_lm(hosts, "owner/tiny-lm", tiny_lm("llama", tokenizer.get_vocab_size()), tokenizer, tmp_path / "repo")
    architectures = {arch_id: arch_entry("owner/tiny-lm", "main", f"{arch_id}.tsv"), **(extra_architectures or {})}
    zoo = write_zoo(tmp_path / "zoo.yaml", architectures, models)
    for arch in architectures:
        layer_command(zoo, arch, tmp_path)
    return zoo


def study_config(zoo: Path, **extra) -> dict:
    return {
        "study": "lmtrain", "zoo": str(zoo), "device": "cpu", "batch_size": 4, "activation_cache_mb": 0,
        "downloads": "downloads", "training": {"threads": 1},
        "data": {"kind": "text", "path": "eval.txt", "windows": 4, "window_tokens": 32},
        "reset": {"mode": "randomize", "seeds": [0], "layers": {"types": ["Linear", "LlamaRMSNorm"],
                  "include": ["model.layers.0.self_attn.q_proj", "model.norm"]}},
        **extra,
    }  # fmt: skip


@pytest.mark.slow
def test_language_models_train_on_a_text_fine_tune_from_another_and_are_evaluated(hosts, tmp_path, monkeypatch):
    """A model trained on one text, one fine-tuned from it on another (init_from), and the first
    trained for fewer steps: each trains (the loss falls, the held-out loss is recorded), the
    fine-tuned model starts from its parent's checkpoint, the short run is the long run's earlier
    checkpoint bit for bit (constant schedule), and all three are evaluated."""
    import pandas as pd

    from layercrit.models.training import recipe_of, train_causal_lm
    from layercrit.models.training.language import training_windows
    from layercrit.models.zoo import build_architecture
    from layercrit.study.text_data import tokenizers
    from layercrit.study.workflow import load_workflow_study
    from layercrit.text_windows import fetch_tokenizer, read_documents
    from layercrit.weights.sources import SourceError, fetch_model

    readme_models = yaml.safe_load(re.findall(r"```yaml\n(.*?)```", README_SECTION.group(1), re.S)[3])  # as written
    base_id, tuned_id = (m["id"] for m in readme_models)
    (tmp_path / "data").mkdir()
    write_text(tmp_path / "data/train_a.txt", documents(80, 3))
    write_text(tmp_path / "data/train_b.txt", [d.replace("the ", "a red ") for d in documents(60, 4)])
    write_text(tmp_path / "eval.txt", documents(20, 9))
    short = copy.deepcopy(readme_models[0]) | {"id": "short"}
    short["source"]["recipe"]["steps"] = 4
    models = [*readme_models, short]
    zoo = llama_zoo(hosts, tmp_path, models, arch_id=readme_models[0]["architecture"])
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(study_config(zoo)))
    run_snakemake(tmp_path, "--configfile", str(tmp_path / "config.yaml"), "--cores", "2", "results/lmtrain/tables/randomize/resets.csv")

    results = tmp_path / "results/lmtrain"
    history = {m: json.loads((results / f"models/{m}.training.json").read_text()) for m in (base_id, tuned_id, "short")}
    assert history[base_id]["steps"] == [4, 8, 12] and history[base_id]["loss"][-1] < history[base_id]["loss"][0]
    assert history[base_id]["heldout_loss"] < history[base_id]["heldout_loss_before"]
    assert history[tuned_id]["heldout_loss"] < history[tuned_id]["heldout_loss_before"]
    assert history[base_id]["tokens_per_s"] > 0 and history[base_id]["recipe"]["text"] == {"path": "data/train_a.txt"}
    assert history[base_id]["text_sha256"] == hashlib.sha256((tmp_path / "data/train_a.txt").read_bytes()).hexdigest()
    print({m: (h["steps_per_s"], h["tokens_per_s"]) for m, h in history.items()})
    weights = {m: load_file(results / f"models/{m}.safetensors") for m in history}
    tuned_init = load_file(results / f"models/{tuned_id}.init.safetensors")
    assert weights[base_id].keys() == tuned_init.keys() and all(torch.equal(tuned_init[k], weights[base_id][k]) for k in tuned_init)
    assert not torch.equal(weights[tuned_id]["model.norm.weight"], weights[base_id]["model.norm.weight"])  # it trained on

    # the base model's run again here, its weights after each step kept: step 4 is the short run's
    # checkpoint and step 12 the workflow's, bit for bit; a cosine schedule's step 4 is not
    monkeypatch.chdir(tmp_path)
    study = load_workflow_study(study_config(zoo), [], REPO).study
    arch, source = study.architectures[readme_models[0]["architecture"]], study.models[base_id].source
    (tokenizer_spec,) = tokenizers({arch.id: arch}).values()
    tokenizer, tokenizer_config = fetch_tokenizer(tokenizer_spec, tmp_path / "downloads")

    def states_of_run(**overrides) -> dict[int, dict[str, torch.Tensor]]:
        recipe = recipe_of(source, None, overrides)
        train, heldout = training_windows(tokenizer, tokenizer_config, read_documents("data/train_a.txt"), recipe, 1, "train_a.txt")
        states = {}
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            train_causal_lm(build_architecture(arch, seed=1), train, heldout, recipe, seed=1,
                            after_step=lambda k, m: states.setdefault(k, {n: t.detach().clone() for n, t in m.state_dict().items()}))  # fmt: skip
        finally:
            torch.set_num_threads(threads)
        return states

    constant, cosine = states_of_run(), states_of_run(schedule="cosine")
    assert all(torch.equal(constant[12][k], weights[base_id][k]) for k in weights[base_id])
    assert all(torch.equal(constant[4][k], weights["short"][k]) for k in weights["short"])
    assert not all(torch.equal(cosine[4][k], weights["short"][k]) for k in weights["short"])

    # recorded in the zoo, the checkpoint is fetched and verified instead (no training.retrain),
    # while the zoo still gives the recipe it was trained from
    trained = results / f"models/{base_id}.safetensors"
    recorded = copy.deepcopy(readme_models[0])
    recorded["source"]["checkpoint"] = {"url": str(trained), "sha256": hashlib.sha256(trained.read_bytes()).hexdigest()}
    fetch_model(recorded, arch, cache_dir=tmp_path / "downloads", out=tmp_path / "fetched.safetensors", progress=False)
    assert all(torch.equal(t, weights[base_id][k]) for k, t in load_file(tmp_path / "fetched.safetensors").items())
    recorded["source"]["recipe"]["steps"] = 13
    with pytest.raises(SourceError, match="is not this recipe's model"):
        fetch_model(recorded, arch, cache_dir=tmp_path / "downloads", out=tmp_path / "other.safetensors", progress=False)

    resets = pd.read_csv(results / "tables/randomize/resets.csv")
    assert sorted(set(resets["model"])) == sorted([base_id, tuned_id, "short"]) and len(resets) == 6
    assert (resets["criticality"] > 0).all()


def test_a_bad_init_from_or_recipe_stops_at_parse_time_with_what_to_do(hosts, tmp_path, monkeypatch):
    from layercrit.study import ConfigError
    from layercrit.study.workflow import load_workflow_study

    monkeypatch.chdir(tmp_path)
    write_text(tmp_path / "a.txt", documents(20, 3))
    write_text(tmp_path / "eval.txt", documents(20, 9))
    other = {"lm_copy": arch_entry("owner/tiny-lm", "main", "lm_copy.tsv")}
    zoo = llama_zoo(hosts, tmp_path, [trained_entry("base", "a.txt", seed=1)], other)
    spec = yaml.safe_load(zoo.read_text())

    def problem(*models: dict, **config) -> str:
        (tmp_path / "bad.yaml").write_text(yaml.safe_dump({**spec, "models": list(models)}))
        with pytest.raises(ConfigError) as e:
            load_workflow_study(study_config(tmp_path / "bad.yaml", **config), [], REPO)
        return str(e.value)

    base = trained_entry("base", "a.txt", seed=1)
    assert "init_from: unknown model 'nobody'; name a model of this zoo: ['base', 'tuned']" in problem(
        base, trained_entry("tuned", "a.txt", seed=2, init_from="nobody"))
    cycle = problem(trained_entry("one", "a.txt", seed=1, init_from="two"), trained_entry("two", "a.txt", seed=2, init_from="one"))
    assert "the models start from each other in a cycle (one -> two -> one); one of them must start fresh" in cycle
    copy = trained_entry("tuned", "a.txt", seed=2, init_from="base") | {"architecture": "lm_copy"}
    assert "'base' is of architecture 'lm', 'tuned' of 'lm_copy'" in problem(base, copy)
    assert "'base' is not in this study's models" in problem(base, trained_entry("tuned", "a.txt", seed=2, init_from="base"), models=["tuned"])
    assert "text.path: 'none.txt' does not exist" in problem(trained_entry("m", "none.txt", seed=1))
    assert "allowed: ['constant', 'cosine']" in problem(trained_entry("m", "a.txt", seed=1, schedule="step"))
    image_recipe = base | {"source": {"kind": "train", "recipe": {"epochs": 2}}}
    assert "architecture 'lm' is a causal language model, which trains on a text" in problem(image_recipe)
    assert "warmup_steps: 12, but the training has 12 steps" in problem(trained_entry("m", "a.txt", seed=1, warmup_steps=12))
    assert "takes at most 128 positions" in problem(trained_entry("m", "a.txt", seed=1, window_tokens=256))
