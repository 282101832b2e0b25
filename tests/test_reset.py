import pytest
import torch

from layercrit.evaluation import EvaluationCache
from layercrit.reset import reset_layer
from layercrit.zoo import build_architecture, enumerate_layers


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
    from layercrit.study import Architecture, read_layer_table

    checked = 0
    for zoo_file in sorted((REPO / "config" / "zoo").glob("*.yaml")):
        zoo = yaml.safe_load(zoo_file.read_text())
        for arch_id, spec in zoo["architectures"].items():
            arch = Architecture(arch_id, spec["timm"], spec.get("kwargs", {}), ())
            built = enumerate_layers(build_architecture(arch, seed=0))
            committed = read_layer_table(zoo_file.parent / spec["layers"])
            assert [(l.name, l.type, l.shape) for l in committed] == [(l.name, l.type, l.shape) for l in built], arch_id
            checked += 1
    assert checked >= 1


def test_demo_layers_in_module_order(demo_arch):
    names = [l.name for l in demo_arch.layers]
    assert names[0] == "conv1" and names[-1] == "fc"
    assert names[1:4] == ["layer1.0.conv1", "layer1.0.conv2", "layer1.0.conv3"]
    assert all(l.type in ("Conv2d", "Linear") for l in demo_arch.layers)


def test_each_mode_builds_only_the_source_it_takes_the_layer_from():
    from layercrit.reset import replacement_source
    from layercrit.study import RESET_MODES

    built = []
    fresh = lambda: built.append("fresh") or {"fresh": torch.zeros(1)}  # noqa: E731
    initial = lambda: built.append("initial") or {"initial": torch.zeros(1)}  # noqa: E731
    taken = {mode: replacement_source(mode, fresh_state=fresh, initial_state=initial) for mode in RESET_MODES}
    assert set(taken) == {"randomize", "zero", "reinit"}  # the config schema's list
    assert list(taken["randomize"]) == ["fresh"] and list(taken["reinit"]) == ["initial"] and taken["zero"] is None
    assert built == ["fresh", "initial"]
    with pytest.raises(ValueError, match="'reinit' needs the model's initial weights"):
        replacement_source("reinit", fresh_state=fresh, initial_state=None)
    with pytest.raises(ValueError, match="unknown reset mode 'shuffle'; allowed: randomize, zero, reinit"):
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
