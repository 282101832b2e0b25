import dataclasses
import json

import pytest
import torch

from layercrit.evaluation import EvaluationCache
from layercrit.evaluation.reset import reset_layer
from layercrit.models.zoo import build_architecture, enumerate_layers


@pytest.fixture
def trained(demo_arch):
    # Stands in for a trained model: any weights that differ from every seed's initialization.
    model = build_architecture(demo_arch, seed=1234)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    return model


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def changed_keys(before, model):
    return {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}


@pytest.mark.parametrize("layer", ["conv1", "layer2.0.conv2", "layer3.0.downsample.0", "fc"])
def test_randomize_changes_only_the_layer_and_restores_bitwise(trained, demo_arch, layer):
    before = snapshot(trained)
    fresh = build_architecture(demo_arch, seed=0).state_dict()
    with reset_layer(trained, layer, "randomize", fresh) as model:
        changed = changed_keys(before, model)
        own = {k for k in before if k.rsplit(".", 1)[0] == layer}
        assert changed == own  # weight (and bias for fc), nothing else: BatchNorm stays trained
        for k in own:
            assert torch.equal(model.state_dict()[k], fresh[k])
    assert changed_keys(before, trained) == set()


def test_zero_and_reinit(trained, demo_arch):
    before = snapshot(trained)
    init = build_architecture(demo_arch, seed=7).state_dict()
    with reset_layer(trained, "fc", "zero"):
        assert changed_keys(before, trained) == {"fc.weight", "fc.bias"}
        assert not trained.fc.weight.any() and not trained.fc.bias.any()
    with reset_layer(trained, "layer1.0.conv2", "reinit", init):
        assert changed_keys(before, trained) == {"layer1.0.conv2.weight"}
        assert torch.equal(trained.layer1[0].conv2.weight, init["layer1.0.conv2.weight"])
    assert changed_keys(before, trained) == set()


def test_restored_even_when_the_block_fails(trained):
    before = snapshot(trained)
    with pytest.raises(RuntimeError):
        with reset_layer(trained, "conv1", "zero"):
            raise RuntimeError("evaluation crashed")
    assert changed_keys(before, trained) == set()


def test_errors_name_the_problem(trained, demo_arch):
    with pytest.raises(KeyError, match="no module named 'layer9.conv1'"):
        with reset_layer(trained, "layer9.conv1", "zero"):
            pass
    with pytest.raises(ValueError, match="unknown reset mode 'shuffle'"):
        with reset_layer(trained, "conv1", "shuffle"):
            pass
    with pytest.raises(ValueError, match="needs the state_dict"):
        with reset_layer(trained, "conv1", "randomize"):
            pass


def test_randomize_depends_only_on_architecture_and_seed(demo_arch):
    """The fresh weights a job uses do not depend on what ran before it, or on global RNG state."""
    cache_a, cache_b = EvaluationCache(), EvaluationCache()
    a = {s: cache_a.fresh_state(demo_arch, s) for s in (0, 1, 2)}
    torch.manual_seed(999)
    torch.randn(1000)  # disturb the global RNG between jobs
    b = {s: cache_b.fresh_state(demo_arch, s) for s in (2, 0, 1)}  # another job order
    for s in (0, 1, 2):
        assert all(torch.equal(a[s][k], b[s][k]) for k in a[s])
    assert not torch.equal(a[0]["conv1.weight"], a[1]["conv1.weight"])
    # Building a fresh model leaves the global RNG where it was.
    state = torch.get_rng_state()
    build_architecture(demo_arch, seed=5)
    assert torch.equal(state, torch.get_rng_state())


def test_committed_layer_lists_match_the_architectures(demo_arch):
    """Layer lists are data (read at parse time without torch); they must match the real models."""
    import yaml

    from conftest import REPO
    from layercrit.study import architecture_from_spec, architecture_identity, read_layer_list_header, read_layer_table
    from layercrit.models.zoo import model_input_facts

    checked = 0
    for zoo_file in sorted((REPO / "config" / "zoo").glob("*.yaml")):
        zoo = yaml.safe_load(zoo_file.read_text())
        for arch_id, spec in zoo["architectures"].items():
            path = zoo_file.parent / spec["layers"]
            if not path.exists():  # config/zoo/llm.yaml's: written from the Hub (tests/test_llm_study.py)
                assert "transformers" in spec, arch_id
                continue
            arch = architecture_from_spec(arch_id, spec, ())
            if "transformers" in spec:  # built from the config its layer list records (read from the Hub or a directory)
                arch = dataclasses.replace(arch, extra=read_layer_list_header(path).architecture["extra"])
            model = build_architecture(arch, seed=0)
            built = enumerate_layers(model)
            committed = read_layer_table(path)
            assert [(l.name, l.type, l.shape) for l in committed] == [(l.name, l.type, l.shape) for l in built], arch_id
            # and the header the parse-time checks read says what it was written for, and what the model takes
            header = read_layer_list_header(path)
            assert header.architecture == architecture_identity(arch), arch_id
            if header.architecture.get("extra", {}).get("task") == "causal-lm":  # what its config says of its tokens
                from layercrit.models.language_models import language_input_facts

                assert header.input == language_input_facts(header.architecture["extra"]["config"]), arch_id
            else:
                assert header.input == json.loads(json.dumps(model_input_facts(model))), arch_id
            checked += 1
    assert checked >= 1


def test_demo_layers_in_module_order(demo_arch):
    names = [l.name for l in demo_arch.layers if l.type in ("Conv2d", "Linear")]
    assert names[0] == "conv1" and names[-1] == "fc"
    assert names[1:4] == ["layer1.0.conv1", "layer1.0.conv2", "layer1.0.conv3"]
    assert len(names) == 17  # the demo's reset layers; the list also holds its 16 BatchNorms
    assert {l.type for l in demo_arch.layers} == {"Conv2d", "Linear", "BatchNorm2d"}


def test_each_mode_builds_only_the_source_it_takes_the_layer_from():
    from layercrit.evaluation.reset import replacement_source
    from layercrit.study import RESET_MODES

    built = []
    fresh = lambda: built.append("fresh") or {"fresh": torch.zeros(1)}  # noqa: E731
    initial = lambda: built.append("initial") or {"initial": torch.zeros(1)}  # noqa: E731
    taken = {mode: replacement_source(mode, fresh_state=fresh, initial_state=initial) for mode in RESET_MODES}
    assert set(taken) == {"randomize", "zero", "reinit", "remove"}  # the config schema's list
    assert list(taken["randomize"]) == ["fresh"] and list(taken["reinit"]) == ["initial"]
    assert taken["zero"] is None and taken["remove"] is None
    assert built == ["fresh", "initial"]
    with pytest.raises(ValueError, match="'reinit' needs the model's initial weights"):
        replacement_source("reinit", fresh_state=fresh, initial_state=None)
    with pytest.raises(ValueError, match="unknown reset mode 'shuffle'; allowed: randomize, zero, reinit, remove"):
        replacement_source("shuffle", fresh_state=fresh, initial_state=initial)


def test_measure_reset_is_the_softmax_cosine_to_the_clean_outputs_computed_by_hand():
    from layercrit.evaluation import measure_reset

    model = torch.nn.Sequential(torch.nn.Linear(2, 3))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        model[0].bias.copy_(torch.tensor([0.0, 0.5, -1.0]))
    x = torch.tensor([[1.0, 2.0], [-1.0, 0.5]])
    clean = model(x).detach()
    labels = torch.tensor([2, 1])
    # zero: the outputs become 0, so the softmax is uniform; cosine(p, u) = sum(p) / (3 |p| |u|) = 1 / (sqrt(3) |p|)
    change = measure_reset(model, "0", "zero", None, clean, labels, lambda: model(x).detach()).result(100.0)
    p = clean.softmax(1)
    cosines = 1 / (3**0.5 * p.norm(dim=1))
    assert change["cosine"] == pytest.approx(float(cosines.mean()), rel=1e-6)
    assert change["criticality"] == pytest.approx(100 * (1 - float(cosines.mean())), rel=1e-6)
    assert torch.equal(model(x).detach(), clean)  # restored


# --- normalization layers: what a reset does to them, checked against values computed by hand ---


@pytest.fixture
def trained_bn(trained):
    """The stand-in trained model with BatchNorm statistics and affine parameters far from their init."""
    with torch.no_grad():
        for m in trained.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.linspace(-1, 1, c))
                m.running_var.copy_(torch.linspace(0.5, 2, c))
                m.num_batches_tracked.fill_(100)
                m.weight.copy_(torch.linspace(0.5, 1.5, c))
                m.bias.copy_(torch.linspace(-0.3, 0.3, c))
    return trained.eval()


def _bn_output(bn, x):
    return bn(x).detach()


def test_randomize_gives_a_batchnorm_the_fresh_modules_whole_state(trained_bn, demo_arch):
    fresh = build_architecture(demo_arch, seed=0).state_dict()
    bn = trained_bn.layer1[0].bn2
    x = torch.randn(2, bn.num_features, 4, 4, generator=torch.Generator().manual_seed(0))
    trained_out = _bn_output(bn, x)
    with reset_layer(trained_bn, "layer1.0.bn2", "randomize", fresh):
        assert torch.equal(bn.weight, torch.ones_like(bn.weight)) and not bn.bias.any()
        assert not bn.running_mean.any() and torch.equal(bn.running_var, torch.ones_like(bn.running_var))
        assert int(bn.num_batches_tracked) == 0
        # eval-mode BatchNorm with mean 0, var 1, weight 1, bias 0: x / sqrt(1 + eps)
        assert torch.allclose(_bn_output(bn, x), x / (1 + bn.eps) ** 0.5, atol=1e-6)
    assert torch.equal(_bn_output(bn, x), trained_out)  # restored, statistics included
    assert int(bn.num_batches_tracked) == 100


def test_zero_silences_a_batchnorm_but_keeps_its_statistics(trained_bn):
    bn = trained_bn.layer2[0].bn1
    before = (bn.running_mean.clone(), bn.running_var.clone())
    x = torch.randn(2, bn.num_features, 4, 4, generator=torch.Generator().manual_seed(1))
    with reset_layer(trained_bn, "layer2.0.bn1", "zero"):
        assert not bn.weight.any() and not bn.bias.any()
        assert torch.equal(bn.running_mean, before[0]) and torch.equal(bn.running_var, before[1])
        assert not _bn_output(bn, x).any()  # (x - mean) / sqrt(var + eps) * 0 + 0


def test_a_reset_layernorm_normalizes_without_its_learned_affine():
    ln = torch.nn.Sequential(torch.nn.LayerNorm(4))
    with torch.no_grad():
        ln[0].weight.copy_(torch.tensor([2.0, 0.5, 1.0, 3.0]))
        ln[0].bias.copy_(torch.tensor([1.0, -1.0, 0.0, 0.5]))
    fresh = torch.nn.Sequential(torch.nn.LayerNorm(4)).state_dict()
    x = torch.tensor([[1.0, 2.0, 3.0, 6.0]])
    mean, var = 3.0, ((x - 3.0) ** 2).mean()  # biased variance, as LayerNorm uses
    by_hand = (x - mean) / torch.sqrt(var + ln[0].eps)
    with reset_layer(ln, "0", "randomize", fresh):
        assert torch.allclose(ln(x), by_hand, atol=1e-6)
    with reset_layer(ln, "0", "zero"):
        assert not ln(x).any()


def test_the_criticality_of_a_batchnorm_reset_is_the_cosine_to_a_model_with_that_batchnorm_set_by_hand(trained_bn, demo_arch):
    """End to end through ``measure_reset``: resetting layer3.0.bn1 (randomize) must give the
    cosine of the clean outputs to those of a copy whose bn1 is set to 1, 0, 0, 1 by hand.
    (Not bn3: timm's ResNet initializes each block's last BatchNorm weight to 0, and a reset
    takes the architecture's own initialization.)"""
    import copy

    from layercrit.evaluation import measure_reset

    x = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        trained_bn.fc.weight.mul_(0.01)  # logits of a few units: softmax outputs neither uniform nor one-hot
        clean = trained_bn(x)
        by_hand = copy.deepcopy(trained_bn)
        bn = by_hand.layer3[0].bn1
        bn.weight.fill_(1), bn.bias.zero_(), bn.running_mean.zero_(), bn.running_var.fill_(1)
        p, q = clean.double().softmax(1), by_hand(x).double().softmax(1)
        expected = torch.nn.functional.cosine_similarity(p, q, dim=1).mean()
        fresh = build_architecture(demo_arch, seed=0).state_dict()
        forward = lambda: trained_bn(x)  # noqa: E731
        change = measure_reset(trained_bn, "layer3.0.bn1", "randomize", fresh, clean, torch.zeros(8, dtype=torch.long), forward)
    assert change.result(100.0)["cosine"] == pytest.approx(float(expected), abs=1e-6)
    assert change.result(100.0)["cosine"] < 0.999  # the reset did change the outputs
