"""Reset mode remove (issue 34): a block replaced by the identity. Removal must equal a forward of
the model with that block deleted from its Sequential or ModuleList, bit for bit, for residual
blocks of vision models and the decoder layers of a transformers language model; a block whose
output's shape differs from its input's is never offered; the model is restored exactly."""

import copy
import json
import re
from pathlib import Path

import pandas as pd
import pytest
import timm
import torch
import yaml

from layercrit.models.blocks import enumerate_blocks, remove_block
from layercrit.study import ConfigError
from layercrit.study.blocks import selected_blocks


def images(n=2, side=32):
    return torch.randn(n, 3, side, side, generator=torch.Generator().manual_seed(1))


def assert_removal_equals_deletion(model, block, delete, inputs):
    """``remove_block(model, block)`` gives exactly the outputs of a copy with ``delete(copy)`` done,
    and leaves the model bitwise as it was (state and outputs)."""
    model.eval()
    call = (lambda m: m(**inputs)) if isinstance(inputs, dict) else (lambda m: m(inputs))
    output = lambda m: (lambda out: out.logits if hasattr(out, "logits") else out)(call(m))  # noqa: E731
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        clean = output(model)
        deleted = copy.deepcopy(model)
        delete(deleted)
        expected = output(deleted)
        with remove_block(model, block):
            removed = output(model)
        after = output(model)
    assert torch.equal(removed, expected), f"removing {block} differs from deleting it"
    assert not torch.equal(removed, clean), f"removing {block} changed nothing: the test would not see a wrong removal"
    assert torch.equal(after, clean)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert not model.get_submodule(block)._forward_hooks


def blocks_by_name(model, example):
    return {b.name: b for b in enumerate_blocks(model, example)}


def test_removing_a_resnet_bottleneck_equals_deleting_it_from_its_stage():
    torch.manual_seed(0)
    # zero_init_last=False: timm zeroes each block's last BatchNorm, which makes a fresh block the identity
    model = timm.create_model("resnet50", layers=[2, 1, 1, 2], channels=[8, 16, 32, 64], num_classes=10, zero_init_last=False)
    blocks = blocks_by_name(model, images())
    # a stage's first block changes the channels (64 from the stem to 4 × 8): the identity cannot stand in for it
    assert not blocks["layer1.0"].removable and blocks["layer1.0"].shape == (64, 8, 8) and blocks["layer1.0"].output_shape == (32, 8, 8)
    assert blocks["layer1.1"].removable and blocks["layer4.1"].removable and blocks["layer1.1"].type == "Bottleneck"
    assert_removal_equals_deletion(model, "layer1.1", lambda m: m.layer1.__delitem__(1), images())
    assert_removal_equals_deletion(model, "layer4.1", lambda m: m.layer4.__delitem__(1), images())


def test_removing_a_vit_block_equals_deleting_it_from_blocks():
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=2, num_classes=10)
    blocks = blocks_by_name(model, images())
    assert [n for n, b in blocks.items() if b.type == "Block" and b.removable] == ["blocks.0", "blocks.1", "blocks.2"]
    assert_removal_equals_deletion(model, "blocks.1", lambda m: m.blocks.__delitem__(1), images())


def test_removing_a_convnext_block_equals_deleting_it_from_its_stage():
    torch.manual_seed(0)
    model = timm.create_model("convnext_atto", depths=[2, 2, 2, 2], num_classes=10)
    blocks = blocks_by_name(model, images(side=64))
    assert blocks["stages.2.blocks.1"].type == "ConvNeXtBlock" and blocks["stages.2.blocks.1"].removable
    assert_removal_equals_deletion(model, "stages.2.blocks.1", lambda m: m.stages[2].blocks.__delitem__(1), images(side=64))


def tiny_llama():
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=32, use_cache=False,
    )  # fmt: skip
    return AutoModelForCausalLM.from_config(config)


def test_removing_a_llama_decoder_layer_equals_deleting_it_from_the_module_list():
    model = tiny_llama()
    tokens = {"input_ids": torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(2))}
    blocks = blocks_by_name(model, tokens)
    decoder_layers = [n for n, b in blocks.items() if b.type == "LlamaDecoderLayer"]
    assert decoder_layers == ["model.layers.0", "model.layers.1", "model.layers.2"]
    assert all(blocks[n].removable and blocks[n].shape == (12, 32) for n in decoder_layers)
    # transformers 5 decoder layers return the hidden state itself (earlier versions: a tuple)
    assert isinstance(model.model.layers[0](torch.zeros(1, 12, 32), position_embeddings=model.model.rotary_emb(torch.zeros(1, 12, 32), torch.arange(12)[None])), torch.Tensor)
    assert_removal_equals_deletion(model, "model.layers.1", lambda m: m.model.layers.__delitem__(1), tokens)


class TupleBlock(torch.nn.Module):
    """A residual block that returns (hidden state, an auxiliary output), as older transformers
    decoder layers do."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(8, 8)

    def forward(self, x):
        return x + self.linear(x), x.mean()


class TupleStack(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = torch.nn.ModuleList(TupleBlock() for _ in range(3))

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)[0]
        return x


def test_removing_a_block_that_returns_a_tuple_keeps_the_rest_of_the_tuple():
    torch.manual_seed(0)
    model = TupleStack()
    x = torch.randn(4, 8)
    assert blocks_by_name(model, x)["layers.1"].removable
    assert_removal_equals_deletion(model, "layers.1", lambda m: m.layers.__delitem__(1), x)
    with torch.no_grad(), remove_block(model, "layers.1"):
        out, aux = model.layers[1](x)
    assert torch.equal(out, x) and aux == x.mean()


def test_a_downsampling_block_named_for_removal_is_refused_naming_its_shapes():
    torch.manual_seed(0)
    model = timm.create_model("resnet50", layers=[2, 1, 1, 1], channels=[8, 16, 32, 64], num_classes=10, zero_init_last=False)
    blocks = {"r": tuple(enumerate_blocks(model, images()))}
    with pytest.raises(ConfigError, match=r"layer1\.0 \(Bottleneck, 64x8x8 -> 32x8x8\).*cannot be replaced by the identity"):
        selected_blocks({"types": ["Bottleneck"], "include": ["layer1.0"]}, blocks, ["r"])
    # a glob keeps only the removable blocks it matches
    chosen = selected_blocks({"types": ["Bottleneck"], "include": ["layer*"]}, blocks, ["r"])
    assert [l.name for l in chosen["r"]] == ["layer1.1"]
    with pytest.raises(ConfigError, match=r"reset\.blocks\.types: mode remove .*\['Bottleneck'"):
        selected_blocks({"include": ["layer*"]}, blocks, ["r"])
    with pytest.raises(ConfigError, match=r"\['Block'\] is no class of a removable block"):
        selected_blocks({"types": ["Block"]}, blocks, ["r"])
    with pytest.raises(ConfigError, match="no removable block"):
        selected_blocks({"types": ["Bottleneck"], "include": ["layer4.*"]}, blocks, ["r"])


README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def readme_removal_snippets() -> tuple[dict, dict]:
    """The README's zoo entry and config part for block removal (the two yaml blocks of its part)."""
    part = README[README.index("**Block removal**") :]
    zoo_part, config_part = re.findall(r"```yaml\n(.*?)\n```", part, re.S)[:2]
    return yaml.safe_load(zoo_part), yaml.safe_load(config_part)


@pytest.mark.slow
def test_a_removal_study_runs_end_to_end_with_the_readme_config(tmp_path):
    """Two ResNets and a ViT, own checkpoints, mode remove as the README gives it: one job per
    model and removable block, a table whose layers are blocks, the heatmaps; one result equals
    the criticality of the model with that block deleted, computed here."""
    from conftest import run_snakemake, write_layer_list
    from test_own_models import save_own_checkpoint

    from layercrit.data import load_image_set
    from layercrit.evaluation.forward import EvalSettings, predict_logits
    from layercrit.models.zoo import load_checkpoint, load_model
    from layercrit.study import architecture_from_spec

    readme_zoo, readme_config = readme_removal_snippets()
    specs = dict(readme_zoo["architectures"])
    specs["vit"] = {"timm": "vit_tiny_patch16_224", "layers": "vit.tsv", "blocks": "vit.blocks.tsv",
                    "kwargs": {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 3, "num_heads": 2, "num_classes": 10}}  # fmt: skip
    (tmp_path / "ckpt").mkdir()
    models = []
    for arch_id, model_id, seed in (("resnet", "resnet_a", 1), ("resnet", "resnet_b", 2), ("vit", "vit_a", 3)):
        if arch_id not in [m["architecture"] for m in models]:
            write_layer_list(tmp_path, arch_id, specs[arch_id])
        save_own_checkpoint(tmp_path / "ckpt" / f"{model_id}.pth", architecture_from_spec(arch_id, specs[arch_id], ()), seed)
        models.append({"id": model_id, "category": "own", "architecture": arch_id,
                       "source": {"kind": "url", "url": str(tmp_path / "ckpt" / f"{model_id}.pth")}})  # fmt: skip
    zoo = {"architectures": specs, "categories": [{"id": "own", "label": "Own"}], "models": models, "baseline": "resnet_a"}
    (tmp_path / "zoo.yaml").write_text(yaml.safe_dump(zoo, sort_keys=False))
    config = {"study": "removal", "zoo": "zoo.yaml", "device": "cpu", "data": {"kind": "synthetic", "eval_images": 32}, **readme_config}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    run_snakemake(tmp_path, "--configfile", str(tmp_path / "config.yaml"), "--cores", "2")

    results = tmp_path / "results/removal"
    resets = pd.read_csv(results / "tables/remove/resets.csv")
    # layer1.0 … layer4.0 change the shape; blocks.0 is excluded: one job per model and block, one seed
    expected = {"resnet_a": ["layer2.1", "layer4.1"], "resnet_b": ["layer2.1", "layer4.1"], "vit_a": ["blocks.1", "blocks.2"]}
    assert {m: list(g["layer"]) for m, g in resets.groupby("model", sort=False)} == expected
    assert (resets["seed"] == 0).all() and (resets["mode"] == "remove").all() and (resets["forward_from"] == "input").all()
    assert set(resets["layer_type"]) == {"Bottleneck", "Block"} and resets["criticality"].gt(0).all()
    index = json.loads((results / "figures/remove/index.json").read_text())
    assert "seed_std_heatmap" in index["left_out"]
    for name in ("criticality_heatmap", "difference_heatmap"):
        assert (results / f"figures/remove/{name}.png").stat().st_size > 10_000

    # resnet_b's layer4.1 deleted from its stage, evaluated here on the study's images
    model = load_model(architecture_from_spec("resnet", specs["resnet"], ()), load_checkpoint(results / "models/resnet_b.safetensors"))
    data = load_image_set(results / "data/eval.safetensors")
    normalization = load_checkpoint(results / "models/resnet_b.safetensors").normalization
    settings = EvalSettings(device="cpu", precision="fp32", batch_size=500, activation_cache_mb=0)
    clean = predict_logits(model, data, normalization, settings, "cpu")
    del model.layer4[1]
    deleted = predict_logits(model, data, normalization, settings, "cpu")
    cosine = torch.nn.functional.cosine_similarity(clean.softmax(1), deleted.softmax(1), dim=1).mean().item()
    row = resets[(resets["model"] == "resnet_b") & (resets["layer"] == "layer4.1")].iloc[0]
    assert row["criticality"] == pytest.approx(100 * (1 - cosine), abs=1e-4)


def test_the_notebook_api_removes_blocks_as_deleting_them_does():
    """layer_criticality(mode="remove"): one row per selected block, criticality as the model with
    that block deleted gives it; more than one seed, or a downsampling block, is refused."""
    from layercrit.notebook import layer_criticality

    torch.manual_seed(0)
    model = timm.create_model("resnet50", layers=[1, 2, 1, 1], channels=[8, 16, 32, 64], num_classes=10, zero_init_last=False).eval()
    x = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    labels = torch.arange(16) % 10
    table = layer_criticality(model, x, labels=labels, mode="remove", seeds=[0], layers={"types": ["Bottleneck"]}, normalization=None, progress=False)
    assert list(table["layer"]) == ["layer2.1"] and list(table["mode"]) == ["remove"] and list(table["kernel"].fillna("")) == [""]
    with torch.no_grad():
        clean = model(x.float() / 255)
        deleted = copy.deepcopy(model)
        del deleted.layer2[1]
        removed = deleted(x.float() / 255)
    cosine = torch.nn.functional.cosine_similarity(clean.softmax(1), removed.softmax(1), dim=1).mean().item()
    assert table["criticality"].iloc[0] == pytest.approx(100 * (1 - cosine), abs=1e-4) and table["criticality"].iloc[0] > 0.01
    with pytest.raises(ValueError, match=r"seeds: mode remove draws nothing"):
        layer_criticality(model, x, mode="remove", seeds=[0, 1], layers={"types": ["Bottleneck"]}, progress=False)
    with pytest.raises(ValueError, match=r"layers\.include: layer1\.0 \(Bottleneck"):
        layer_criticality(model, x, mode="remove", seeds=[0], layers={"types": ["Bottleneck"], "include": ["layer1.0"]}, progress=False)


def test_a_removal_study_is_checked_at_parse_time(tmp_path):
    """What build_study refuses, each with its fix, before any job: an architecture without a block
    list, a block list edited by hand, several seeds, a downsampling block named, reset.blocks in
    another mode."""
    from conftest import write_layer_list

    from layercrit.study import build_study

    spec = {"timm": "resnet50", "kwargs": {"layers": [1, 2, 1, 1], "channels": [8, 16, 32, 64], "num_classes": 10},
            "layers": "r.tsv", "blocks": "r.blocks.tsv"}  # fmt: skip
    write_layer_list(tmp_path, "r", spec)
    zoo = {"architectures": {"r": spec}, "categories": [{"id": "c", "label": "C"}],
           "models": [{"id": "m", "category": "c", "architecture": "r", "source": {"kind": "url", "url": "https://example.org/m.pth"}}]}  # fmt: skip

    def study(reset, zoo=zoo):
        config = {"study": "s", "data": {"kind": "synthetic", "image_size": 32, "n_classes": 10}, "reset": {"seeds": [0], **reset}}
        return build_study(config, zoo, tmp_path)

    assert [l.name for l in study({"mode": "remove", "blocks": {"types": ["Bottleneck"]}}).layers_of("m")] == ["layer2.1"]
    assert study({"mode": "remove", "blocks": {"types": ["Bottleneck"]}}).reset_jobs() == [("m", "layer2.1", 0)]
    with pytest.raises(ConfigError, match=r"reset\.seeds: mode 'remove' draws nothing.*seeds: \[0\]"):
        study({"mode": "remove", "seeds": [0, 1], "blocks": {"types": ["Bottleneck"]}})
    with pytest.raises(ConfigError, match=r"layer1\.0 \(Bottleneck, 64x56x56 -> 32x56x56\)"):
        study({"mode": "remove", "blocks": {"types": ["Bottleneck"], "include": ["layer1.0", "layer2.1"]}})
    with pytest.raises(ConfigError, match=r"reset\.blocks: read only by reset\.mode 'remove'"):
        study({"mode": "zero", "blocks": {"types": ["Bottleneck"]}})
    without = {**zoo, "architectures": {"r": {k: v for k, v in spec.items() if k != "blocks"}}}
    with pytest.raises(ConfigError, match=r"architectures\.r\.blocks: .*add blocks: .*python -m layercrit\.zoo layers"):
        study({"mode": "remove", "blocks": {"types": ["Bottleneck"]}}, without)
    assert study({"mode": "zero"}, without).layers_of("m")  # other modes need no block list
    block_list = tmp_path / "r.blocks.tsv"
    block_list.write_text(block_list.read_text().replace("layer4.0\tBottleneck", "layer4.0\tBlock"))
    with pytest.raises(ConfigError, match=r"r\.blocks\.tsv' was edited after it was written"):
        study({"mode": "remove", "blocks": {"types": ["Bottleneck"]}})


def test_a_block_called_twice_is_not_offered():
    """Weights shared across depth (one module called at two places): the identity would stand in
    for every call, which is no deletion from a module list."""

    class Shared(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.block, self.other = TupleBlock(), TupleBlock()

        def forward(self, x):
            return self.other(self.block(self.block(x)[0])[0])[0]

    names = [b.name for b in enumerate_blocks(Shared(), torch.randn(2, 8))]
    assert names == ["other"]


def test_a_removal_has_the_interval_of_its_images_alone_with_its_one_seed():
    """Removal draws nothing: no chance in seeds, so its one seed gets the images' interval
    (se = image SE, df = n_images − 1), computed here by hand; a randomize result with one seed
    still has none (its seed spread is unknown)."""
    from scipy import stats

    from layercrit.analysis.aggregation import model_intervals, summarize

    def resets(mode):
        return pd.DataFrame(
            [{"model": "m", "layer": l, "layer_index": i, "layer_type": "Block", "kernel": "", "seed": 0, "mode": mode,
              "criticality": c, "criticality_se_images": se, "n_images": 100, "cosine": 1 - c / 100}
             for i, (l, c, se) in enumerate([("blocks.1", 10.0, 0.5), ("blocks.2", 30.0, 1.5)])]
        )  # fmt: skip

    removal = summarize(resets("remove")).iloc[0]
    half = stats.t.ppf(0.975, 99) * 0.5
    assert removal["criticality_se"] == pytest.approx(0.5) and removal["criticality_df"] == pytest.approx(99)
    assert (removal["criticality_ci_low"], removal["criticality_ci_high"]) == pytest.approx((10 - half, 10 + half))
    model = model_intervals(resets("remove"), summarize(resets("remove"))).loc["m"]
    assert model["se"] == pytest.approx(1.0) and model["ci_low"] == pytest.approx(20 - stats.t.ppf(0.975, 99) * 1.0)
    assert summarize(resets("randomize"))["criticality_ci_low"].isna().all()
