"""Any timm or torchvision architecture by config: built by its own library and initializer, its
layer list written for it, its input facts taken from its pretrained config."""

import pytest
import torch
import yaml

from conftest import REPO
from layercrit.study import architecture_from_spec, load_study, read_layer_table
from layercrit.models.zoo import build_architecture, enumerate_layers

DEMO_ZOO = yaml.safe_load((REPO / "config/zoo/demo.yaml").read_text())


def demo_arch(arch_id):
    spec = DEMO_ZOO["architectures"][arch_id]
    return architecture_from_spec(arch_id, spec, read_layer_table(REPO / "config/zoo" / spec["layers"]))


def test_randomize_draws_from_the_architectures_own_initializer():
    """timm initializes a ViT's linear layers with a (truncated) normal of std 0.02 and its norms to
    1 and 0; torch's default Linear init would give std 1/sqrt(3·fan_in) = 0.072 for width 64."""
    fresh = build_architecture(demo_arch("demo_vit"), seed=0).state_dict()
    qkv = fresh["blocks.0.attn.qkv.weight"]
    assert qkv.shape == (192, 64)
    assert 0.017 < float(qkv.std()) < 0.023
    assert torch.equal(fresh["blocks.0.norm1.weight"], torch.ones(64)) and not fresh["blocks.0.norm1.bias"].any()
    # a ResNet's convolutions: timm's kaiming normal (fan_out, relu), std sqrt(2 / (out · k · k))
    conv = build_architecture(demo_arch("demo_resnet"), seed=0).state_dict()["conv1.weight"]
    assert float(conv.std()) == pytest.approx((2 / (conv.shape[0] * 49)) ** 0.5, rel=0.1)


def test_a_torchvision_architecture_is_built_by_torchvision_by_name():
    arch = architecture_from_spec("tv", {"torchvision": "resnet18", "kwargs": {"num_classes": 10}}, ())
    model = build_architecture(arch, seed=0)
    import torchvision

    assert type(model) is torchvision.models.ResNet
    layers = enumerate_layers(model)
    assert [l.name for l in layers][:3] == ["conv1", "bn1", "layer1.0.conv1"] and layers[-1].shape == (10, 512)


def test_a_model_without_normalization_takes_its_architectures_pretrained_config():
    config = yaml.safe_load((REPO / "config/demo.yaml").read_text())
    config["zoo"] = str(REPO / config["zoo"])
    study = load_study(config)
    assert study.models["demo_vit"].normalization == {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}  # timm's ViT cfg
    assert study.models["demo_baseline"].normalization["mean"] == [0.485, 0.456, 0.406]  # the zoo's own
    assert [l.name for l in study.layers_of("demo_vit")][:3] == ["patch_embed.proj", "blocks.0.attn.qkv", "blocks.0.attn.proj"]
    assert len(study.layers_of("demo_vit")) == 18 and len(study.layers_of("demo_baseline")) == 17


def test_norm_layers_are_layers_a_study_can_select():
    config = yaml.safe_load((REPO / "config/demo.yaml").read_text())
    config["zoo"] = str(REPO / config["zoo"])
    config["reset"]["layers"] = {"types": ["BatchNorm2d", "LayerNorm"]}
    study = load_study(config)
    assert {l.type for l in study.layers_of("demo_baseline")} == {"BatchNorm2d"}
    assert [l.name for l in study.layers_of("demo_vit")][-1] == "norm" and len(study.layers_of("demo_vit")) == 9
