"""Reusing the clean model's activations gives exactly the full forward pass, layer by layer."""

import json

import pytest
import torch
from safetensors.torch import save_file

from layercrit.data import ImageSet, save_image_set
from layercrit.evaluation import EvaluationCache, ResetInputs, evaluate_baseline, evaluate_reset
from layercrit.reset import reset_layer
from layercrit.forward import CleanActivations, EvalSettings, predict_logits, resnet_segments, segment_holding
from layercrit.study import Architecture, read_layer_table
from layercrit.zoo import build_architecture, save_checkpoint

from conftest import REPO

NORM = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
N_IMAGES, BATCH = 40, 16  # the last batch is smaller


@pytest.fixture(scope="module")
def trained_like(demo_arch):
    g = torch.Generator().manual_seed(0)
    model = build_architecture(demo_arch, seed=3)
    with torch.no_grad():  # an untrained timm ResNet zeroes each block's last BN: perturb all weights
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))
    images = ImageSet(torch.randint(0, 256, (N_IMAGES, 3, 32, 32), dtype=torch.uint8, generator=g), torch.randint(0, 10, (N_IMAGES,), generator=g))
    return model.eval(), images


def test_every_layer_of_both_architectures_belongs_to_one_segment(demo_arch):
    resnet50 = Architecture("resnet50", "resnet50", {}, read_layer_table(REPO / "config/architectures/resnet50.tsv"))
    for arch in (demo_arch, resnet50):
        segments = resnet_segments(build_architecture(arch, seed=0))
        for layer in arch.layers:
            holders = [s.name for s in segments if s.holds(layer.name)]
            assert len(holders) == 1, (arch.id, layer.name, holders)
    segments = resnet_segments(build_architecture(demo_arch, seed=0))
    assert segments[segment_holding(segments, "layer2.0.downsample.0")].name == "layer2.0"
    assert segments[segment_holding(segments, "fc")].name == "head"
    assert resnet_segments(torch.nn.Sequential(torch.nn.Linear(2, 2))) is None  # other models: full forward


@pytest.mark.parametrize("mode", ["randomize", "zero"])
def test_resumed_forward_equals_the_full_forward_bitwise_for_every_layer(trained_like, demo_arch, mode):
    model, images = trained_like
    settings = EvalSettings(device="cpu", batch_size=BATCH, activation_cache_mb=64)
    clean = predict_logits(model, images, NORM, settings, "cpu")
    activations = CleanActivations(resnet_segments(model), 64 * 2**20)
    activations.record(images, NORM, settings, "cpu", clean)
    assert activations.exact and len(activations.kept) == len(activations.segments) - 1
    fresh = build_architecture(demo_arch, seed=11).state_dict()
    for layer in demo_arch.layers:
        start = activations.start_for(layer.name)
        assert (start is None) == (layer.name == "conv1"), layer.name  # the stem starts from the images
        with reset_layer(model, layer.name, mode, fresh):
            full = predict_logits(model, images, NORM, settings, "cpu")
            if start is not None:
                resumed = activations.resume(start, settings, "cpu")
                assert torch.equal(resumed, full), layer.name
        assert not torch.equal(full, clean), layer.name  # the reset did change the outputs


def test_budget_keeps_the_deepest_segments_first(trained_like):
    model, images = trained_like
    settings = EvalSettings(device="cpu", batch_size=BATCH)
    clean = predict_logits(model, images, NORM, settings, "cpu")
    segments = resnet_segments(model)
    head_input = 512 * 4 * N_IMAGES  # 512 features × 1×1 × float32 per image
    small = CleanActivations(segments, head_input)
    small.record(images, NORM, settings, "cpu", clean)
    assert list(small.kept) == [len(segments) - 1] and small.nbytes == head_input
    assert small.start_for("fc") == len(segments) - 1 and small.start_for("layer4.0.conv1") is None
    off = CleanActivations(segments, 0)
    off.record(images, NORM, settings, "cpu", clean)
    assert off.kept == {} and off.start_for("fc") is None


@pytest.fixture
def study_files(tmp_path, trained_like):
    model, images = trained_like
    save_image_set(images, tmp_path / "eval.safetensors")
    save_checkpoint(tmp_path / "m.safetensors", model.state_dict(), NORM, {"model": "m"})
    return tmp_path


def evaluate(tmp, arch, cache, settings, layer, seed, out, logits="b.safetensors"):
    return evaluate_reset(
        model_id="m", arch=arch,
        files=ResetInputs(checkpoint=tmp / "m.safetensors", eval=tmp / "eval.safetensors", logits=tmp / logits, baseline=tmp / "b.json"),
        layer=layer, seed=seed, mode="randomize", settings=settings, out=tmp / out, cache=cache,
    )  # fmt: skip


METRICS = ["cosine", "criticality", "l1", "l2", "kl", "top1_agreement", "top1", "top5", "recovered_acc", "n_nonfinite"]


def test_reset_results_with_and_without_reuse_are_identical(study_files, demo_arch):
    tmp = study_files
    full, reuse = EvalSettings(device="cpu", batch_size=BATCH), EvalSettings(device="cpu", batch_size=BATCH, activation_cache_mb=64)
    evaluate_baseline(model_id="m", arch=demo_arch, weights=tmp / "m.safetensors", eval_data=tmp / "eval.safetensors",
                      settings=full, logits_out=tmp / "b.safetensors", summary_out=tmp / "b.json")  # fmt: skip
    cache = EvaluationCache()
    segments = resnet_segments(build_architecture(demo_arch, seed=0))
    for layer in demo_arch.layers:
        a = evaluate(tmp, demo_arch, EvaluationCache(), full, layer.name, 1, "a.json")
        b = evaluate(tmp, demo_arch, cache, reuse, layer.name, 1, "b.json")
        assert {k: a[k] for k in METRICS} == {k: b[k] for k in METRICS}, layer.name
        assert a["forward_from"] == "input"
        expected = "input" if layer.name == "conv1" else segments[segment_holding(segments, layer.name)].name
        assert b["forward_from"] == expected == json.loads((tmp / "b.json").read_text())["forward_from"]


def test_activations_are_not_used_when_they_do_not_reproduce_the_baseline(study_files, demo_arch):
    tmp = study_files
    settings = EvalSettings(device="cpu", batch_size=BATCH, activation_cache_mb=64)
    evaluate_baseline(model_id="m", arch=demo_arch, weights=tmp / "m.safetensors", eval_data=tmp / "eval.safetensors",
                      settings=settings, logits_out=tmp / "b.safetensors", summary_out=tmp / "b.json")  # fmt: skip
    from safetensors.torch import load_file

    from layercrit.io import file_sha256

    # A baseline whose logits this device does not reproduce bit for bit (e.g. made on another GPU)
    logits = load_file(str(tmp / "b.safetensors"))["logits"]
    save_file({"logits": logits + 1e-6}, str(tmp / "other.safetensors"))
    baseline = json.loads((tmp / "b.json").read_text())
    baseline["logits_sha256"] = file_sha256(tmp / "other.safetensors")
    (tmp / "b.json").write_text(json.dumps(baseline))
    r = evaluate(tmp, demo_arch, EvaluationCache(), settings, "fc", 0, "r.json", logits="other.safetensors")
    assert r["forward_from"] == "input"


def test_activations_are_recorded_again_when_an_input_file_is_remade(study_files, demo_arch):
    import os

    tmp = study_files
    settings = EvalSettings(device="cpu", batch_size=BATCH, activation_cache_mb=64)
    evaluate_baseline(model_id="m", arch=demo_arch, weights=tmp / "m.safetensors", eval_data=tmp / "eval.safetensors",
                      settings=settings, logits_out=tmp / "b.safetensors", summary_out=tmp / "b.json")  # fmt: skip
    cache = EvaluationCache()
    evaluate(tmp, demo_arch, cache, settings, "fc", 0, "r.json")
    first = cache.activations["cpu"][1]
    evaluate(tmp, demo_arch, cache, settings, "layer4.0.conv1", 0, "r.json")
    assert cache.activations["cpu"][1] is first  # same model, same files: reused
    stat = (tmp / "eval.safetensors").stat()
    os.utime(tmp / "eval.safetensors", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # re-made images
    r = evaluate(tmp, demo_arch, cache, settings, "fc", 0, "r.json")
    assert cache.activations["cpu"][1] is not first and r["forward_from"] == "head"
