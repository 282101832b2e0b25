"""Issue 33: Hugging Face transformers image classifiers as zoo architectures, offline.

A tiny ViTForImageClassification is saved with save_pretrained (and a ViT image-processor
config) and served on 127.0.0.1 as a Hub repository through HF_ENDPOINT (FakeHosts' resolve
endpoint); the layer-list command fetches its config, the workflow its weights, both verified.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import REPO, run_snakemake
from layercrit.models.zoo import load_checkpoint
from layercrit.testing.fake_hosts import FakeHosts
from support.hub import hosts, layer_command  # noqa: F401 (hosts: a fixture)

TINY_VIT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=32, patch_size=8, num_labels=10)
PROCESSOR = {
    "do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5], "image_processor_type": "ViTImageProcessor", "resample": 2,
    "rescale_factor": 1 / 255, "size": {"height": 32, "width": 32},
}  # fmt: skip


def tiny_vit(seed: int) -> torch.nn.Module:
    """A tiny ViT as transformers initializes it after ``torch.manual_seed(seed)``."""
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(seed)
    return ViTForImageClassification(ViTConfig(**TINY_VIT)).eval()


def trained_vit() -> torch.nn.Module:
    """The 'trained' model: a tiny ViT whose weights are moved away from any initialization by
    seeded noise (what matters is that the workflow evaluates exactly these weights, and that
    its outputs are not the near-uniform ones of an initialization)."""
    model = tiny_vit(seed=7)
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=generator))
    return model


def serve_repo(hosts: FakeHosts, repo: str, model: torch.nn.Module, folder: Path, revision: str = "main") -> str:
    """``model`` saved as transformers publishes it, with its image-processor config, served as
    Hub repository ``repo`` at ``revision`` (and its commit); returns the commit."""
    model.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(PROCESSOR))
    commits = {hosts.add_hf_file(repo, f.name, f.read_bytes(), revision=revision) for f in sorted(folder.iterdir())}
    (commit,) = commits
    return commit


def write_zoo(path: Path, revision: str, repo: str = "owner/tiny-vit", **kwargs) -> Path:
    zoo = {
        "architectures": {"tiny_vit": {"transformers": repo, "revision": revision, "layers": "tiny_vit.tsv", **({"kwargs": kwargs} if kwargs else {})}},
        "categories": [{"id": "supervised", "label": "Supervised"}],
        "models": [{"id": "hf_vit", "name": "tiny ViT (transformers)", "category": "supervised", "architecture": "tiny_vit",
                    "source": {"kind": "huggingface", "repo": repo, "file": "model.safetensors", "revision": revision}}],
    }  # fmt: skip
    path.write_text(yaml.safe_dump(zoo, sort_keys=False))
    return path


def zoo_architecture(zoo: Path):
    from layercrit.study.architectures import _layer_list

    spec = yaml.safe_load(zoo.read_text())
    return _layer_list(zoo.parent, "tiny_vit", spec["architectures"]["tiny_vit"], spec)


def test_the_layer_list_records_the_pinned_config_and_the_image_processor(hosts, tmp_path):
    from layercrit.figures.heatmaps.labels import layer_label

    commit = serve_repo(hosts, "owner/tiny-vit", trained_vit(), tmp_path / "repo")
    zoo = write_zoo(tmp_path / "zoo.yaml", commit)
    layer_command(zoo, "tiny_vit", tmp_path)
    arch = zoo_architecture(zoo)
    config = json.loads((tmp_path / "repo/config.json").read_text())
    assert arch.library == "transformers" and arch.name == "owner/tiny-vit"
    assert arch.extra["revision"] == commit and arch.extra["commit"] == commit
    assert arch.extra["config_sha256"] == hashlib.sha256((tmp_path / "repo/config.json").read_bytes()).hexdigest()
    assert arch.extra["config"]["num_labels"] == 10 and "id2label" not in arch.extra["config"]
    assert {k: arch.extra["config"][k] for k in TINY_VIT} == {k: config.get(k, 10) for k in TINY_VIT}
    assert arch.input == {"mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bilinear", "input_size": [32, 32], "resize": 32, "fixed_input_size": True}
    names = [layer.name for layer in arch.layers]
    assert names[:2] == ["vit.embeddings", "vit.embeddings.patch_embeddings.projection"] and names[-1] == "classifier"
    assert arch.job_params()["extra"] == arch.extra  # jobs build from the record: no network, no Hub cache
    labels = [layer_label(layer.name, layer.type, layer.kernel) for layer in arch.layers]
    assert labels[:3] == ["[Stem] embeddings", "[Stem] proj:8x8", "[0] attn.q_proj"] and labels[-1] == "[Head] classifier"
    assert len(set(labels)) == len(labels) and max(map(len, labels)) <= 24  # as test_figures asks of every list


def test_a_layer_list_of_another_revision_or_kwargs_stops_at_parse_time(hosts, tmp_path):
    from layercrit.study import ConfigError

    commit = serve_repo(hosts, "owner/tiny-vit", trained_vit(), tmp_path / "repo")
    zoo = write_zoo(tmp_path / "zoo.yaml", commit)
    layer_command(zoo, "tiny_vit", tmp_path)
    for changed in (write_zoo(tmp_path / "zoo.yaml", "main"), write_zoo(tmp_path / "zoo.yaml", commit, num_labels=5)):
        with pytest.raises(ConfigError, match=r"python -m layercrit.zoo layers .* tiny_vit"):
            zoo_architecture(changed)


def test_an_unknown_revision_or_a_model_that_is_no_image_classifier_is_refused_by_the_layer_command(hosts, tmp_path):
    serve_repo(hosts, "owner/tiny-vit", trained_vit(), tmp_path / "repo")
    proc = layer_command(write_zoo(tmp_path / "zoo.yaml", "no-such-branch"), "tiny_vit", tmp_path, check=False)
    assert proc.returncode and "owner/tiny-vit at revision 'no-such-branch'" in proc.stderr and "no config.json" in proc.stderr
    hosts.add_hf_file("owner/bert", "config.json", json.dumps({"model_type": "bert", "hidden_size": 32}).encode())
    proc = layer_command(write_zoo(tmp_path / "zoo.yaml", "main", repo="owner/bert"), "tiny_vit", tmp_path, check=False)
    assert proc.returncode and "'bert' model, which transformers has no image classifier for" in proc.stderr
    assert not (tmp_path / "tiny_vit.tsv").exists()


def test_published_weights_load_strictly_in_the_modules_keys_or_stop_the_download(hosts, tmp_path):
    """save_pretrained writes a ViT's legacy keys (vit.encoder.layer.N.attention.attention.query);
    they become the modules' keys (vit.layers.N.attention.q_proj), tensor for tensor. Weights
    for another number of labels than the config's stop with the tensors named."""
    from layercrit.downloads import DownloadSettings
    from layercrit.weights.conversion import ConversionError
    from layercrit.weights.sources import fetch_model

    original = trained_vit()
    commit = serve_repo(hosts, "owner/tiny-vit", original, tmp_path / "repo")
    settings = DownloadSettings(hf_endpoint=hosts.base, retries=0)
    for labels in (10, 5):
        zoo = write_zoo(tmp_path / "zoo.yaml", commit, num_labels=labels)
        layer_command(zoo, "tiny_vit", tmp_path)
        model = yaml.safe_load(zoo.read_text())["models"][0]
        fetch = lambda: fetch_model(model, zoo_architecture(zoo), cache_dir=tmp_path / "cache", out=tmp_path / f"{labels}.safetensors", progress=False, settings=settings)  # noqa: E731
        if labels == 10:
            fetch()
            state = load_checkpoint(tmp_path / "10.safetensors").state_dict
            assert "vit.layers.0.attention.q_proj.weight" in state and set(state) == set(original.state_dict())
            assert all(torch.equal(state[k], v) for k, v in original.state_dict().items())
        else:
            with pytest.raises(ConversionError, match=r"model 'hf_vit'.*classifier\.weight"):
                fetch()


def test_randomize_draws_equal_a_model_built_by_hand_from_the_config(hosts, tmp_path):
    from transformers import ViTConfig, ViTForImageClassification

    from layercrit.models.seed_schemes import fresh_model

    commit = serve_repo(hosts, "owner/tiny-vit", trained_vit(), tmp_path / "repo")
    zoo = write_zoo(tmp_path / "zoo.yaml", commit)
    layer_command(zoo, "tiny_vit", tmp_path)
    arch = zoo_architecture(zoo)
    torch.manual_seed(123)  # the global stream as it stands must not matter
    for seed in (0, 3):
        drawn = fresh_model(arch, seed).state_dict()
        torch.manual_seed(seed)
        by_hand = ViTForImageClassification(ViTConfig(**TINY_VIT)).state_dict()
        assert list(drawn) == list(by_hand)
        assert all(torch.equal(drawn[k], by_hand[k]) for k in by_hand), seed
    assert not torch.equal(fresh_model(arch, 0).classifier.weight, fresh_model(arch, 3).classifier.weight)


def test_activation_reuse_falls_back_to_the_full_pass_with_one_warning(hosts, tmp_path, caplog, monkeypatch):
    """transformers 5's ViT forward branches on its input's dtype: torch.fx cannot trace it, and
    transformers 5 has no fx tracer of its own, so its resets run the full forward pass."""
    from layercrit.evaluation import graph
    from layercrit.models.zoo import build_architecture

    commit = serve_repo(hosts, "owner/tiny-vit", trained_vit(), tmp_path / "repo")
    zoo = write_zoo(tmp_path / "zoo.yaml", commit)
    layer_command(zoo, "tiny_vit", tmp_path)
    model = build_architecture(zoo_architecture(zoo), seed=0)
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(model(x), tiny_vit(0).eval()(pixel_values=x).logits)  # model(x) is the logits
    monkeypatch.setattr(graph, "_warned", set())
    with caplog.at_level(logging.WARNING, logger=graph.__name__):
        assert graph.graph_segments(model) is None and graph.graph_segments(model) is None
    warnings = [r.getMessage() for r in caplog.records if "full forward pass" in r.getMessage()]
    assert len(warnings) == 1 and "ViTForImageClassification: torch.fx cannot trace its forward" in warnings[0]


README_SECTION = re.search(r"#### From Hugging Face transformers\n(.*?)\n(?=#### |### |## )", (REPO / "README.md").read_text(), re.S)


@pytest.mark.slow
def test_the_readme_example_fetches_verifies_and_evaluates_a_transformers_vit(hosts, tmp_path):
    """The README's zoo entry and layer command as written, against a stand-in of its repository
    (the tiny ViT under the README's repository id) on 127.0.0.1; a study on an own 10-class
    folder with per_model pipelines: baseline, resets, tables and heatmap."""
    from layercrit.models.zoo import load_checkpoint
    from test_own_data import own_folder

    text = README_SECTION.group(1)
    snippet = yaml.safe_load(re.search(r"```yaml\n(.*?)```", text, re.S).group(1))
    command = re.search(r"```bash\n(python -m layercrit\.zoo layers [^\n]*)\n```", text).group(1)
    (arch_id, spec), = snippet["architectures"].items()
    model_entry = snippet["models"][0]
    original = trained_vit()
    serve_repo(hosts, spec["transformers"], original, tmp_path / "repo", revision=spec["revision"])
    zoo_path = tmp_path / command.split()[4]
    zoo_path.parent.mkdir(parents=True)
    (tmp_path / "config/architectures").mkdir()
    zoo = {"architectures": snippet["architectures"], "categories": [{"id": model_entry["category"], "label": "Supervised"}], "models": snippet["models"]}
    zoo_path.write_text(yaml.safe_dump(zoo, sort_keys=False))
    # as in the README's setup, with the workflow's environment activated (its python first on PATH)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(command.split(), cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (tmp_path / "resources/downloads/huggingface.co" / spec["transformers"] / spec["revision"] / "config.json").is_file()

    own_folder(tmp_path / "images", classes=10, per_class=2, size=(40, 36))
    config = {
        "study": "hf", "zoo": str(zoo_path), "device": "cpu", "batch_size": 8,
        "data": {"kind": "folder", "root": str(tmp_path / "images"), "pipeline": "per_model"},
        "reset": {"mode": "randomize", "seeds": [0, 1], "layers": {"include": ["vit.embeddings.patch_embeddings.projection", "vit.layers.1.mlp.fc2", "classifier"]}},
    }  # fmt: skip
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    run_snakemake(tmp_path, "--configfile", str(tmp_path / "config.yaml"), "--cores", "2")

    results = tmp_path / "results/hf"
    model_id = model_entry["id"]
    checkpoint = load_checkpoint(results / f"models/{model_id}.safetensors")
    assert checkpoint.normalization == {"mean": [0.5] * 3, "std": [0.5] * 3}  # the image processor's
    expected = original.state_dict()
    assert set(checkpoint.state_dict) == set(expected) and all(torch.equal(checkpoint.state_dict[k], v) for k, v in expected.items())
    files = checkpoint.metadata["files"]
    assert files[0]["sha256"] == hashlib.sha256((tmp_path / "repo/model.safetensors").read_bytes()).hexdigest()
    baseline = json.loads((results / f"baselines/{model_id}.json").read_text())
    assert baseline["eval_pipeline"] == {"resize": 32, "crop": 32, "interpolation": "bilinear"} and baseline["n_images"] == 20
    import pandas as pd

    resets = pd.read_csv(results / "tables/randomize/resets.csv")
    assert len(resets) == 3 * 2 and (resets["n_images"] == 20).all() and resets["criticality"].between(0, 100).all()
    assert (resets["criticality"] > 0).all()
    log = "".join(p.read_text() for p in (results / "logs").rglob("*.log"))
    assert "torch.fx cannot trace its forward" in log
    for path in sorted((results / "resets/randomize").rglob("*.json")):
        record = json.loads(path.read_text())
        print(f"{path.relative_to(results)}: wall_s={record.get('wall_s')} forward_s={record.get('forward_s')}")
    assert (results / "figures/randomize/criticality_heatmap.png").is_file()


@pytest.mark.parametrize(
    "entry, complaint",
    [
        ({"timm": "resnet50", "revision": "main"}, "'transformers' is a dependency of 'revision'"),
        ({"transformers": "vit-base"}, "'vit-base' does not match"),
    ],
    ids=["revision without transformers", "not owner/name"],
)
def test_a_zoo_entry_the_schema_refuses_is_named(entry, complaint):
    from layercrit.study import load_schema, schema_problems

    spec = {"architectures": {"tiny_vit": {**entry, "layers": "tiny_vit.tsv"}}, "categories": [{"id": "a", "label": "A"}],
            "models": [{"id": "m", "category": "a", "architecture": "tiny_vit", "source": {"kind": "huggingface", "repo": "o/r", "file": "model.safetensors"}}]}  # fmt: skip
    problems = schema_problems(spec, load_schema("zoo"), "zoo")
    assert len(problems) == 1 and complaint in problems[0] and "architectures.tiny_vit" in problems[0]


def test_a_config_with_other_labels_than_the_data_has_classes_stops_at_parse_time(tmp_path):
    from layercrit.study import Architecture, ConfigError, check_class_count
    from test_own_data import own_folder

    own_folder(tmp_path / "images", classes=8, per_class=1)
    arch = Architecture("tiny_vit", "owner/tiny-vit", {}, library="transformers", extra={"revision": "main", "config": {"model_type": "vit", "num_labels": 10}})
    config = {"data": {"kind": "folder", "root": str(tmp_path / "images")}}
    with pytest.raises(ConfigError, match=r"10 outputs \(its repository's config, no kwargs.num_labels\).* 8 classes .*kwargs.num_labels to 8, then rewrite its layer list"):
        check_class_count(config, {"tiny_vit": arch})
