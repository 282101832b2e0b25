"""Issue 34: config/llm.yaml, the language-model study, planned in a dry run as the README says.

The Hub is not reachable here, so the repositories of config/zoo/llm.yaml are served on
127.0.0.1 under their real ids and revisions (Pythia-160m's step branches included): tiny
models of the right families (GPT-NeoX, Llama, Qwen2) with the real numbers of decoder layers
(12, 30, 24: the number of jobs per model follows from it), tied embeddings where the real ones
tie them, and tokenizers trained here; an instruct repository's tokenizer_config.json carries
a chat template, as the real ones do. The text is a WikiText-like DatasetDict saved with
``datasets`` at the README's path.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import REPO, run_snakemake
from support.hub import hosts  # noqa: F401 (a fixture)
from test_language_models import EOS, TINY, documents, serve_lm, train_tokenizer
from test_saved_datasets import wikitext_like

README = (REPO / "README.md").read_text()
SECTION = re.search(r"#### The issue's study: config/llm\.yaml\n(.*?)\n(?=#### |### |## )", README, re.S).group(1)
# model type, decoder layers, tied input and output embeddings: of the real repositories
# (README, 'The study', cites where each comes from)
FAMILIES = {
    "EleutherAI/pythia-160m": ("gpt_neox", 12, False),
    "HuggingFaceTB/SmolLM2-135M": ("llama", 30, True),
    "HuggingFaceTB/SmolLM2-135M-Instruct": ("llama", 30, True),
    "Qwen/Qwen2.5-0.5B": ("qwen2", 24, True),
    "Qwen/Qwen2.5-0.5B-Instruct": ("qwen2", 24, True),
}
# layers of a decoder layer that reset.layers.types selects, and those outside the decoder layers
PER_BLOCK = {"gpt_neox": 6, "llama": 9, "qwen2": 9}  # 2 norms + 4 Linear (GPT-NeoX) or 7 (Llama, Qwen2)
OUTSIDE = {False: 3, True: 2}  # embeddings, final norm and output head; a head tied to the embeddings is not a layer of its own


def stand_in_model(model_type: str, layers: int, tied: bool, vocab: int) -> torch.nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(11)
    extra = {} if model_type == "gpt_neox" else {"num_key_value_heads": 2}
    config = AutoConfig.for_model(model_type, vocab_size=vocab, **{**TINY, "num_hidden_layers": layers, "max_position_embeddings": 2048},
                                  tie_word_embeddings=tied, **extra)  # fmt: skip
    return AutoModelForCausalLM.from_config(config).eval()


def serve_zoo(hosts, zoo: dict, folder: Path) -> None:
    """Every (repository, revision) of ``zoo`` on the stand-in Hub, with the file its source names."""
    tokenizers = {family: train_tokenizer(300, seed=n) for n, family in enumerate(("gpt_neox", "llama", "qwen2"))}
    for model in zoo["models"]:
        source = model["source"]
        model_type, layers, tied = FAMILIES[source["repo"]]
        tokenizer = tokenizers[model_type]
        model_folder = folder / model["id"]
        net = stand_in_model(model_type, layers, tied, tokenizer.get_vocab_size())
        serve_lm(hosts, source["repo"], net, tokenizer, model_folder, revision=source["revision"])
        if source["file"] == "pytorch_model.bin":
            torch.save(net.state_dict(), model_folder / "pytorch_model.bin")
            hosts.add_hf_file(source["repo"], "pytorch_model.bin", (model_folder / "pytorch_model.bin").read_bytes(), revision=source["revision"])
        if source["repo"].endswith("-Instruct"):
            config = {"eos_token": EOS, "tokenizer_class": "PreTrainedTokenizerFast", "chat_template": "{{ messages }}"}
            hosts.add_hf_file(source["repo"], "tokenizer_config.json", yaml.safe_dump(config).encode(), revision=source["revision"])


@pytest.mark.slow
def test_config_llm_plans_its_jobs_in_a_dry_run_as_the_readme_says(hosts, tmp_path):
    from datasets import Dataset, DatasetDict

    for path in ("config/llm.yaml", "config/zoo/llm.yaml"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / path, tmp_path / path)
    (tmp_path / "config/architectures").mkdir()
    config = yaml.safe_load((tmp_path / "config/llm.yaml").read_text())
    zoo = yaml.safe_load((tmp_path / "config/zoo/llm.yaml").read_text())
    serve_zoo(hosts, zoo, tmp_path / "repos")
    rows = wikitext_like(documents(3000, 8))
    DatasetDict({"test": Dataset.from_dict({"text": rows})}).save_to_disk(str(tmp_path / config["data"]["path"]))
    commands = re.search(r"```bash\n(.*?)```", SECTION, re.S).group(1).splitlines()
    layers_command, dry_run = commands[0], commands[1]
    assert layers_command == "python -m layercrit.zoo layers config/zoo/llm.yaml" and dry_run == "snakemake -n --configfile config/llm.yaml"

    # a fresh clone: no layer list; one message names each and the one command that writes them all
    fresh = run_snakemake(tmp_path, "-n", "--configfile", "config/llm.yaml", check=False)
    said = fresh.stdout + fresh.stderr
    assert fresh.returncode and f"Write every layer list with one command: {layers_command}" in said
    assert all(f"architectures.{a}.layers: 'config/zoo/../architectures/{a}.tsv' does not exist" in said for a in zoo["architectures"])

    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # the environment, activated
    proc = subprocess.run(layers_command.split(), cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert len(proc.stdout.splitlines()) == len(zoo["architectures"])

    import pandas as pd

    planned = run_snakemake(tmp_path, "-n", "--quiet", "rules", "--configfile", "config/llm.yaml")
    jobs = {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)$", planned.stdout, flags=re.M)}
    seeds = len(config["reset"]["seeds"])
    per_model = {}
    for model in zoo["models"]:
        model_type, blocks, tied = FAMILIES[model["source"]["repo"]]
        layer_list = pd.read_csv(tmp_path / "config/architectures" / f"{model['architecture']}.tsv", sep="\t", comment="#")
        per_model[model["id"]] = len(layer_list)
        assert len(layer_list) == PER_BLOCK[model_type] * blocks + OUTSIDE[tied], model["id"]
        assert ("lm_head" in set(layer_list["name"])) != tied, model["id"]
    resets = seeds * sum(per_model.values())
    assert jobs["reset"] == resets == 3 * (4 * 75 + 2 * 272 + 2 * 218)
    assert jobs["download_model"] == jobs["baseline"] == len(zoo["models"])
    assert jobs["text_tokens"] == 5  # Pythia's steps share one tokenizer; an instruct model's config differs from its base's
    assert jobs["plot_language_figure"] == 4  # comparisons given: the difference heatmap too
    # the README's counts are this dry run's
    assert f"{resets:,} reset jobs in all" in SECTION and f"{jobs['total']:,} jobs in all" in SECTION


def test_missing_layer_lists_are_said_at_once_with_the_command_that_writes_just_those(tmp_path):
    from layercrit.study import ConfigError
    from layercrit.study.architectures import check_layer_lists_exist

    zoo = yaml.safe_load((REPO / "config/zoo/llm.yaml").read_text())
    (tmp_path / "zoo").mkdir()
    (tmp_path / "architectures").mkdir()
    for arch_id in ("pythia_160m_step1000", "smollm2_135m", "qwen2_5_0_5b", "qwen2_5_0_5b_instruct"):
        (tmp_path / "architectures" / f"{arch_id}.tsv").write_text("name\ttype\tshape\n")
    with pytest.raises(ConfigError) as e:
        check_layer_lists_exist(zoo, tmp_path / "zoo", "my/zoo.yaml")
    missing = ["pythia_160m_step8000", "pythia_160m_step36000", "pythia_160m_step143000", "smollm2_135m_instruct"]
    assert str(e.value).endswith(f"Write these layer lists with one command: python -m layercrit.zoo layers my/zoo.yaml {' '.join(missing)}")
    assert [a for a in zoo["architectures"] if f"architectures.{a}.layers" in str(e.value)] == missing
    for arch_id in missing:
        (tmp_path / "architectures" / f"{arch_id}.tsv").write_text("name\ttype\tshape\n")
    check_layer_lists_exist(zoo, tmp_path / "zoo", "my/zoo.yaml")  # all there: nothing to say
