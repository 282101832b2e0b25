"""Issue 34, offline demo: a causal language model from a local directory (no Hub), and generated
text (``layercrit.synthetic_text``) as its evaluation data.

The directory holds what ``save_pretrained`` writes of a tiny Llama and of the toy language's
word-level tokenizer; the weights are a local ``model.safetensors`` (source kind url). No
``HF_ENDPOINT`` is served: the Hub is not reachable here (``HF_HUB_OFFLINE``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import REPO, run_snakemake
from layercrit import synthetic_text
from layercrit.study import ConfigError
from layercrit.study.workflow import load_workflow_study
from support.hub import layer_command
from test_language_models import plain_transformers_criticality

QUESTION = re.compile(r"question : (?:what colour is the (\w+) of (\w+)|who has the (\w+) (\w+)) \? answer : (\w+) \.")


def test_generated_text_is_deterministic_and_its_tasks_are_known():
    for task in synthetic_text.TASKS:
        docs = synthetic_text.documents(task, 3, 50)
        assert docs == synthetic_text.documents(task, 3, 50) and docs != synthetic_text.documents(task, 4, 50)
        assert len(set(docs)) > 40 and all("\n" not in d and d.endswith(" .") for d in docs)
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    assert schema["$defs"]["text_data"]["properties"]["synthetic"]["properties"]["task"]["enum"] == list(synthetic_text.TASKS)
    with pytest.raises(ValueError, match=r"unknown generated-text task 'poems'; the tasks are \['stories', 'qa'\]"):
        synthetic_text.documents("poems", 0, 1)


def test_text_data_takes_exactly_one_of_a_path_and_generated_text():
    from layercrit.study.schemas import load_schema, schema_problems

    def problems(data: dict) -> list[str]:
        return schema_problems({"study": "s", "zoo": "zoo.yaml", "reset": {"seeds": [0]}, "data": data}, load_schema("config"), "config")

    synthetic = {"task": "stories", "seed": 7, "documents": 2000}
    assert problems({"kind": "text", "synthetic": synthetic}) == [] == problems({"kind": "text", "path": "corpus.txt"})
    for data in ({"kind": "text"}, {"kind": "text", "path": "corpus.txt", "synthetic": synthetic}):
        (problem,) = problems(data)
        assert problem.startswith("config key 'data':") and "exactly one of path (a .txt or .jsonl file) and synthetic" in problem
    assert problems({"kind": "text", "synthetic": {**synthetic, "task": "poems"}}) == [
        "config key 'data.synthetic.task': 'poems' is not allowed; allowed: ['stories', 'qa']"
    ]


def test_the_tokenizer_covers_every_word_of_both_tasks_and_is_written_the_same_each_time(tmp_path):
    from tokenizers import Tokenizer

    synthetic_text.write_tokenizer(tmp_path / "a")
    synthetic_text.write_tokenizer(tmp_path / "b")
    for file in ("tokenizer.json", "tokenizer_config.json"):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes()
    assert json.loads((tmp_path / "a/tokenizer_config.json").read_text())["eos_token"] == "<eos>"
    tokenizer = Tokenizer.from_file(str(tmp_path / "a/tokenizer.json"))
    words = [*synthetic_text.SPECIAL_TOKENS, *synthetic_text.vocabulary()]
    assert len(set(words)) == len(words) == tokenizer.get_vocab_size()
    unk = tokenizer.token_to_id("<unk>")
    for task in synthetic_text.TASKS:
        for doc in synthetic_text.documents(task, 0, 200):
            encoded = tokenizer.encode(doc, add_special_tokens=False)
            assert unk not in encoded.ids and encoded.tokens == doc.split(), doc


def test_the_token_job_reads_a_local_tokenizer_only_with_the_recorded_sha256(tmp_path):
    """Parse time checks the files too; this is for a file changed while a run is under way."""
    from layercrit.text_windows import TokenizerChanged, fetch_tokenizer

    synthetic_text.write_tokenizer(tmp_path)
    files = {f: hashlib.sha256((tmp_path / f).read_bytes()).hexdigest() for f in ("tokenizer.json", "tokenizer_config.json")}
    tokenizer, config = fetch_tokenizer({"directory": str(tmp_path), "files": files}, tmp_path / "unused-cache")
    assert config["eos_token"] == "<eos>" and tokenizer.encode("tom has a red ball .").tokens == "tom has a red ball .".split()
    (tmp_path / "tokenizer_config.json").write_text('{"eos_token": "."}')
    with pytest.raises(TokenizerChanged, match=r"tokenizer_config.json: sha256 \w+, but the layer list of its architecture recorded"):
        fetch_tokenizer({"directory": str(tmp_path), "files": files}, tmp_path / "unused-cache")


def test_the_qa_answers_are_right_by_the_facts_of_their_document():
    asked = {"colour": 0, "who": 0}
    for doc in synthetic_text.documents("qa", 5, 200):
        stated, questions = doc.split(" question : ", 1)[0], QUESTION.findall(doc)
        owners = {}  # a pronoun's sentence ("he also has") belongs to the person before it
        for sentence in stated.strip().split(" . "):
            words = sentence.rstrip(" .").split()
            person = owners.get("last") if words[0] in ("he", "she") else words[0]
            owners["last"] = person
            owners[words[-1]] = (person, words[-2])  # thing: (person, colour)
        assert questions and len(questions) == doc.count("question :")
        for thing, person, colour, colour_thing, answer in questions:
            if thing:
                assert owners[thing] == (person, answer), doc
                asked["colour"] += 1
            else:
                assert owners[colour_thing] == (answer, colour), doc
                asked["who"] += 1
    assert min(asked.values()) > 50


def test_stories_refer_back_to_their_facts_with_agreeing_pronouns():
    for doc in synthetic_text.documents("stories", 1, 100):
        owners, last = {}, None
        for sentence in doc.rstrip(" .").split(" . "):
            words = sentence.split()
            if "has" in words:
                person = last if words[0] in ("he", "she") else words[0]
                if words[0] in ("he", "she"):
                    assert words[0] == ("he" if person in synthetic_text.MALE_NAMES else "she"), doc
                owners[words[-1]] = (person, words[-2])
                last = person
            elif words[0] == "the":  # the ball of tom is red
                assert owners[words[1]] == (words[3], words[5]), doc
            elif words[1] == "likes":  # tom likes his red ball
                assert owners[words[4]] == (words[0], words[3]), doc
                assert words[2] == ("his" if words[0] in synthetic_text.MALE_NAMES else "her"), doc


# ----------------------------------------------------------------------------------------------
# A study of a model from a local directory, on generated text

WINDOWS, WINDOW_TOKENS = 6, 32


def local_lm(directory: Path, seed: int = 7) -> None:
    """A tiny Llama of the toy language's vocabulary saved into ``directory`` with its tokenizer:
    config.json, model.safetensors, tokenizer.json, tokenizer_config.json. Its norms are moved
    away from their init (ones) so that resetting one changes the output."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(synthetic_text.SPECIAL_TOKENS) + len(synthetic_text.vocabulary()), hidden_size=32, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64, tie_word_embeddings=False,
    )  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                param.uniform_(0.5, 1.5)
    model.save_pretrained(directory)
    synthetic_text.write_tokenizer(directory)


def local_zoo(tmp_path: Path) -> Path:
    local_lm(tmp_path / "models/tiny_lm")
    zoo = {
        "architectures": {"tiny_lm": {"transformers": "./models/tiny_lm", "layers": "tiny_lm.tsv"}},
        "categories": [{"id": "base", "label": "Base"}],
        "models": [{"id": "tiny", "name": "tiny", "category": "base", "architecture": "tiny_lm",
                    "source": {"kind": "url", "url": str(tmp_path / "models/tiny_lm/model.safetensors")}}],
    }  # fmt: skip
    (tmp_path / "zoo.yaml").write_text(yaml.safe_dump(zoo, sort_keys=False))
    return tmp_path / "zoo.yaml"


def synthetic_config(zoo: Path) -> dict:
    return {
        "study": "lm", "zoo": str(zoo), "device": "cpu", "batch_size": 4, "activation_cache_mb": 0,
        "data": {"kind": "text", "synthetic": {"task": "stories", "seed": 7, "documents": 200}, "seed": 0,
                 "windows": WINDOWS, "window_tokens": WINDOW_TOKENS},
        "reset": {"mode": "randomize", "seeds": [1], "layers": {"types": ["Linear", "Embedding", "LlamaRMSNorm"], "include": [
            "model.embed_tokens", "model.layers.0.self_attn.q_proj", "model.layers.1.mlp.down_proj"]}},
    }  # fmt: skip


def planning_problem(config: dict) -> str:
    with pytest.raises(ConfigError) as e:
        load_workflow_study(config, [], REPO)
    return str(e.value)


def test_a_local_directory_is_refused_with_a_revision_or_without_its_files(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    zoo = local_zoo(tmp_path)
    entry = yaml.safe_load(zoo.read_text())
    entry["architectures"]["tiny_lm"]["revision"] = "main"
    (tmp_path / "revision.yaml").write_text(yaml.safe_dump(entry))
    assert "architectures.tiny_lm.revision" in planning_problem(synthetic_config(tmp_path / "revision.yaml"))
    assert "a local directory (transformers: ./..., ../... or /...) has no revision" in planning_problem(synthetic_config(tmp_path / "revision.yaml"))
    entry = yaml.safe_load(zoo.read_text())
    entry["architectures"]["tiny_lm"]["transformers"] = "./models/none"
    (tmp_path / "none.yaml").write_text(yaml.safe_dump(entry))
    proc = layer_command(tmp_path / "none.yaml", "tiny_lm", tmp_path, check=False)
    assert proc.returncode and "no config.json there" in proc.stderr and str(tmp_path / "models/none") in proc.stderr
    (tmp_path / "models/tiny_lm/tokenizer.json").unlink()
    proc = layer_command(zoo, "tiny_lm", tmp_path, check=False)
    assert proc.returncode and "is a causal language model but has no tokenizer.json" in proc.stderr


README_EXAMPLE = re.search(r"#### A model in a local directory, on generated text\n(.*?)\n(?=#### |### |## )", (REPO / "README.md").read_text(), re.S)


@pytest.mark.slow
def test_the_readme_local_lm_study_on_generated_text_runs_as_written_and_checks_its_files(tmp_path, monkeypatch):
    """The README's zoo, layer command and study as written, with a tiny Llama saved at the
    README's directory: the layer list records the config and the files' sha256, not where the
    directory is; the study runs (text job, token job with the directory's tokenizer, baseline,
    resets, tables); its numbers are a plain transformers computation's; a tokenizer edited
    afterwards stops planning, naming the file and the command that writes the list again."""
    import pandas as pd
    from tokenizers import Tokenizer

    from layercrit.study.layers import read_layer_list_header
    from layercrit.text_windows import document_order, read_documents, read_token_windows

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    text = README_EXAMPLE.group(1)
    zoo_text, config_text = re.findall(r"```yaml\n(.*?)```", text, re.S)
    command = re.search(r"```bash\n(python -m layercrit\.zoo layers [^\n]*)\n```", text).group(1)
    zoo, config = yaml.safe_load(zoo_text), yaml.safe_load(config_text)
    (arch_id, spec), = zoo["architectures"].items()
    directory = tmp_path / zoo["models"][0]["source"]["url"].removesuffix("/model.safetensors")
    local_lm(directory)
    zoo_path, config_path = (tmp_path / block.splitlines()[0].removeprefix("# ") for block in (zoo_text, config_text))
    zoo_path.parent.mkdir(parents=True)
    (tmp_path / "config/architectures").mkdir()
    zoo_path.write_text(zoo_text)
    config_path.write_text(config_text)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # the environment, activated
    proc = subprocess.run(command.split(), cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    layer_list = zoo_path.parent / spec["layers"]
    assert str(tmp_path) not in layer_list.read_text()  # another clone uses it as is
    header = read_layer_list_header(layer_list).architecture
    assert header["name"] == spec["transformers"] and "revision" not in header["extra"] and "commit" not in header["extra"]
    assert header["extra"]["task"] == "causal-lm" and header["extra"]["config"]["vocab_size"] == 2 + len(synthetic_text.vocabulary())
    assert header["extra"]["tokenizer"] == {f: hashlib.sha256((directory / f).read_bytes()).hexdigest() for f in ("tokenizer.json", "tokenizer_config.json")}

    results = tmp_path / "results" / config["study"]
    run_snakemake(tmp_path, "--configfile", str(config_path), "--cores", "2", str(results.relative_to(tmp_path) / "tables/randomize/resets.csv"))

    synthetic = config["data"]["synthetic"]
    generated = results / f"data/text/synthetic-{synthetic['task']}-seed{synthetic['seed']}-n{synthetic['documents']}.txt"
    assert read_documents(generated) == synthetic_text.documents(synthetic["task"], synthetic["seed"], synthetic["documents"])
    (token_file,) = (results / "data").glob("tokens-*.safetensors")
    tokens, record = read_token_windows(token_file)
    windows, window_tokens = config["data"]["windows"], config["data"]["window_tokens"]
    assert tokens.shape == (windows, window_tokens) and record["synthetic"] == synthetic
    documents = read_documents(generated)  # the windows are the documents' words in the seeded order, each ended by <eos>
    words = [word for index in document_order(len(documents), config["data"]["seed"]) for word in documents[index].split() + ["<eos>"]]
    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    assert [tokenizer.id_to_token(i) for i in tokens.flatten().tolist()] == words[: windows * window_tokens]

    resets = pd.read_csv(results / "tables/randomize/resets.csv")
    assert sorted(resets["layer"]) == sorted(config["reset"]["layers"]["include"]) and (resets["criticality"] > 0).all()
    assert (resets["n_images"] == windows * (window_tokens - 1)).all()
    baseline = json.loads((results / f"baselines/{zoo['models'][0]['id']}.json").read_text())
    (seed,) = config["reset"]["seeds"]
    for _, row in resets.iterrows():
        expected, clean_ppl = plain_transformers_criticality(directory, tokens, row["layer"], seed)
        assert row["criticality"] == pytest.approx(expected, rel=1e-4, abs=1e-8), row["layer"]
    assert baseline["perplexity"] == pytest.approx(clean_ppl, rel=1e-5)

    tokenizer_json = directory / "tokenizer.json"
    tokenizer_json.write_text(tokenizer_json.read_text().replace('"<unk>"', '"<unknown>"'))
    monkeypatch.chdir(tmp_path)  # where snakemake runs: the model's source path is relative to it
    with pytest.raises(ConfigError) as e:
        load_workflow_study(config, [], REPO, tmp_path)
    assert f"architectures.{arch_id}: tokenizer.json (changed) in {directory} since its layer list" in str(e.value)
    assert f"Write the layer list again with: python -m layercrit.zoo layers {zoo_path.parent / '<zoo>.yaml'} {arch_id}" in str(e.value)
    assert subprocess.run(command.split(), cwd=tmp_path, capture_output=True, env=env, timeout=300).returncode == 0
    assert load_workflow_study(config, [], REPO, tmp_path).study.eval_data(zoo["models"][0]["id"]) != f"data/{token_file.name}"
