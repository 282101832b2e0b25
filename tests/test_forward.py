"""Reusing the clean model's activations gives exactly the full forward pass, layer by layer."""

import json

import pytest
import torch
from safetensors.torch import save_file

from layercrit.data import ImageSet, save_image_set
from layercrit.evaluation import EvaluationCache, ResetInputs, evaluate_baseline, evaluate_reset
from layercrit.evaluation.forward import CleanActivations, EvalSettings, predict_logits, segment_holding
from layercrit.evaluation.graph import graph_segments
from layercrit.evaluation.reset import reset_layer
from layercrit.study import Architecture, read_layer_table
from layercrit.models.zoo import build_architecture, save_checkpoint

from conftest import REPO

NORM = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
N_IMAGES, BATCH = 40, 16  # the last batch is smaller


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# Tiny chain models (32×32 input) in the configurations graph_segments is checked against here.
VIT = {"img_size": 32, "patch_size": 4, "embed_dim": 48, "num_heads": 2, "num_classes": 10}
CONVNEXT = {"depths": (1, 1, 2, 1), "dims": (16, 32, 48, 64), "num_classes": 10}
TINY = {
    "vit": ("vit_tiny_patch16_224", {**VIT, "depth": 3}),  # class token, token pooling, final norm
    "vit_avg_pool": ("vit_tiny_patch16_224", {**VIT, "depth": 2, "global_pool": "avg", "class_token": False}),  # fc_norm
    "vit_map_pool": ("vit_tiny_patch16_224", {**VIT, "depth": 2, "global_pool": "map"}),  # attention pooling
    "vit_registers": (  # register tokens, position embedding apart from the prefix tokens, pre-norm, layer scale
        "vit_tiny_patch16_224",
        {**VIT, "depth": 2, "reg_tokens": 2, "no_embed_class": True, "pre_norm": True, "init_values": 1e-5},
    ),
    "vit_dynamic_size": ("vit_tiny_patch16_224", {**VIT, "depth": 2, "dynamic_img_size": True}),  # NHWC patches
    "convnext_atto": ("convnext_atto", CONVNEXT),  # conv_mlp (LayerNorm2d everywhere)
    "convnext_head_norm_first": ("convnext_tiny", {**CONVNEXT, "head_norm_first": True}),  # channels-last MLP
}
RESETTABLE = (torch.nn.Conv2d, torch.nn.Linear, torch.nn.LayerNorm, torch.nn.BatchNorm2d)


def architecture(name: str, demo_arch: Architecture) -> Architecture:
    if name == "demo_resnet":
        return demo_arch
    if name == "resnet50":
        return Architecture("resnet50", "resnet50", {}, read_layer_table(REPO / "config/architectures/resnet50.tsv"))
    timm_name, kwargs = TINY[name]
    return Architecture(name, timm_name, kwargs, ())


def trained_like_model(arch: Architecture) -> torch.nn.Module:
    """A model of ``arch`` away from its initialization, as a trained one is: an untrained timm
    ResNet zeroes each block's last BN, a ViT's class token starts at ~0; perturb every weight."""
    g = torch.Generator().manual_seed(0)
    model = build_architecture(arch, seed=3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))
    return model.eval()


def random_images(n: int = N_IMAGES) -> ImageSet:
    g = torch.Generator().manual_seed(1)
    return ImageSet(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g), torch.randint(0, 10, (n,), generator=g))


@pytest.fixture(scope="module")
def trained_like(demo_arch):
    return trained_like_model(demo_arch), random_images()


def tensor_names(model: torch.nn.Module) -> list[str]:
    return [n for n, _ in model.named_parameters()] + [n for n, _ in model.named_buffers()]


@pytest.mark.parametrize("name", ["demo_resnet", "resnet50", *TINY])
def test_every_parameter_and_layer_belongs_to_one_segment(demo_arch, name):
    arch = architecture(name, demo_arch)
    model = build_architecture(arch, seed=0)
    segments = graph_segments(model)
    layers = [n for n, m in model.named_modules() if n and any(True for _ in m.parameters(recurse=False))]
    for layer in [*tensor_names(model), *layers, *(layer.name for layer in arch.layers)]:
        holders = [s.name for s in segments if s.holds(layer)]
        assert len(holders) == 1, (arch.id, layer, holders)


def test_segment_names_follow_the_modules(demo_arch):
    segments = graph_segments(build_architecture(demo_arch, seed=0))
    assert [s.name for s in segments] == ["conv1", "bn1", "layer1.0", "layer2.0", "layer3.0", "layer4.0", "fc"]
    assert segments[segment_holding(segments, "layer2.0.downsample.0")].name == "layer2.0"
    vit = graph_segments(build_architecture(architecture("vit", demo_arch), seed=0))
    blocks = ["blocks.0", "blocks.1", "blocks.2"]
    assert [s.name for s in vit] == ["patch_embed.proj", "cls_token..pos_embed", *blocks, "norm", "head"]
    convnext = graph_segments(build_architecture(architecture("convnext_atto", demo_arch), seed=0))
    # stage 0 keeps the stem's resolution and width: no downsample
    assert [s.name for s in convnext][:5] == ["stem.0", "stem.1", "stages.0.blocks.0", "stages.1.downsample", "stages.1.blocks.0"]
    assert convnext[segment_holding(convnext, "stages.2.downsample.1")].name == "stages.2.downsample"
    assert [s.name for s in convnext][-1] == "head" and convnext[segment_holding(convnext, "head.fc")].name == "head"


def per_family_chain_segment(name: str, layer: str) -> str:
    """The segment that the per-family splitters the graph's cuts replace (resnet_chain, vit_chain,
    convnext_chain of commit 327dfd8) put ``layer`` in."""
    parts = layer.split(".")
    if parts[0] in ("layer1", "layer2", "layer3", "layer4", "blocks"):
        return ".".join(parts[:2])
    if parts[0] == "stages":
        return ".".join(parts[:4] if parts[2] == "blocks" else parts[:3])
    stem = {"conv1", "bn1", "stem", "patch_embed", "cls_token", "reg_token", "pos_embed", "norm_pre" if "vit" in name else "stem"}
    return "stem" if parts[0] in stem else "head"


@pytest.mark.parametrize("name", ["demo_resnet", "resnet50", *TINY])
def test_the_graph_cuts_are_those_of_the_per_family_chains_or_finer(demo_arch, name):
    """Each segment lies within one segment of the chain it replaces: a reset evaluation starts
    where the chain started it or later (ResNet: also after the stem convolution and after the
    global pooling; ViT: after the patch projection and before the final norm)."""
    segments = graph_segments(build_architecture(architecture(name, demo_arch), seed=0))
    for s in segments:
        assert len({per_family_chain_segment(name, layer) for layer in s.modules}) == 1, (s.name, s.modules)


@pytest.mark.parametrize("name", ["demo_resnet", "resnet50", *TINY])
def test_the_chained_segments_reproduce_the_forward_bitwise(demo_arch, name):
    model, images = trained_like_model(architecture(name, demo_arch)), random_images(40 if name != "resnet50" else 8)
    settings = EvalSettings(device="cpu", batch_size=BATCH)
    clean = predict_logits(model, images, NORM, settings, "cpu")
    activations = CleanActivations(graph_segments(model), 64 * 2**20)
    activations.record(images, NORM, settings, "cpu", clean)
    assert activations.exact and len(activations.kept) == len(activations.segments) - 1


def unusual_models(demo_arch) -> dict[str, torch.nn.Module]:
    """Models the per-family splitters did not know (no splitter, or one they refused); split in
    their traced graph now."""
    import timm
    from timm.models.convnext import ConvNeXt

    class ConvNeXtOwnFeatures(ConvNeXt):  # a subclass with its own forward_features
        def forward_features(self, x):
            return super().forward_features(x)

    models = {
        "mobilenet": timm.create_model("mobilenetv3_small_050", num_classes=10),
        # deit's distilled ViT: its own _pos_embed (a distillation token) and forward_head
        "deit_distilled": timm.create_model("deit_tiny_distilled_patch16_224", **{**VIT, "depth": 1}),
        "convnext_subclass": ConvNeXtOwnFeatures(**CONVNEXT),
    }
    for name in ("demo_resnet", "vit", "convnext_atto"):  # gradient checkpointing
        models[f"{name}_checkpointing"] = build_architecture(architecture(name, demo_arch), seed=0)
        models[f"{name}_checkpointing"].set_grad_checkpointing(True)
    extra = build_architecture(architecture("vit", demo_arch), seed=0)
    extra.register_parameter("extra_token", torch.nn.Parameter(torch.zeros(1, 1, 48)))  # that forward does not use
    models["vit_extra_parameter"] = extra
    return {name: model.eval() for name, model in models.items()}


def test_models_the_per_family_splitters_did_not_know_are_split_bitwise(demo_arch):
    images, settings = random_images(8), EvalSettings(device="cpu", batch_size=4)
    for name, model in unusual_models(demo_arch).items():
        clean = predict_logits(model, images, NORM, settings, "cpu")
        activations = CleanActivations(graph_segments(model), 64 * 2**20)
        activations.record(images, NORM, settings, "cpu", clean)
        assert activations.exact and len(activations.kept) == len(activations.segments) - 1 > 2, name
        unused = {"extra_token"} if name == "vit_extra_parameter" else set()
        for tensor in tensor_names(model):  # a tensor the forward does not use is in no segment
            assert sum(s.holds(tensor) for s in activations.segments) == (tensor not in unused), (name, tensor)
    assert graph_segments(torch.nn.Sequential(torch.nn.Linear(2, 2))) is None  # one layer: nothing to resume from


@pytest.mark.parametrize("mode", ["randomize", "zero"])
@pytest.mark.parametrize("name", ["demo_resnet", *TINY])
def test_resumed_forward_equals_the_full_forward_bitwise_for_every_layer(demo_arch, name, mode):
    arch = architecture(name, demo_arch)
    model, images = trained_like_model(arch), random_images()
    settings = EvalSettings(device="cpu", batch_size=BATCH, activation_cache_mb=64)
    clean = predict_logits(model, images, NORM, settings, "cpu")
    activations = CleanActivations(graph_segments(model), 64 * 2**20)
    activations.record(images, NORM, settings, "cpu", clean)
    assert activations.exact
    fresh = build_architecture(arch, seed=11).state_dict()
    layers = [n for n, m in model.named_modules() if isinstance(m, RESETTABLE)]
    assert len(layers) > 10
    for layer in layers:
        start = activations.start_for(layer)
        held = segment_holding(activations.segments, layer)
        assert start == (held or None), layer  # the first segment starts from the images
        with reset_layer(model, layer, mode, fresh):
            full = predict_logits(model, images, NORM, settings, "cpu")
            if start is not None:
                resumed = activations.resume(start, settings, "cpu")
                assert torch.equal(resumed, full), layer
        assert not torch.equal(full, clean), layer  # the reset did change the outputs


def test_budget_keeps_the_deepest_segments_first(trained_like):
    model, images = trained_like
    settings = EvalSettings(device="cpu", batch_size=BATCH)
    clean = predict_logits(model, images, NORM, settings, "cpu")
    segments = graph_segments(model)
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
    segments = graph_segments(build_architecture(demo_arch, seed=0))
    for layer in demo_arch.layers:
        a = evaluate(tmp, demo_arch, EvaluationCache(), full, layer.name, 1, "a.json")
        b = evaluate(tmp, demo_arch, cache, reuse, layer.name, 1, "reused.json")
        assert {k: a[k] for k in METRICS} == {k: b[k] for k in METRICS}, layer.name
        assert a["forward_from"] == "input"
        held = segment_holding(segments, layer.name)
        expected = segments[held].name if held else "input"  # the stem starts from the images
        assert b["forward_from"] == expected == json.loads((tmp / "reused.json").read_text())["forward_from"]


@pytest.mark.parametrize("name", ["vit", "convnext_atto"])
def test_a_reset_job_of_a_vit_or_convnext_resumes_with_the_same_results(tmp_path, demo_arch, name):
    arch = architecture(name, demo_arch)
    layers = {"vit": {"blocks.2.mlp.fc1": "blocks.2", "head": "head", "patch_embed.proj": "input"},
              "convnext_atto": {"stages.3.downsample.1": "stages.3.downsample", "head.fc": "head", "stem.0": "input"}}[name]  # fmt: skip
    reset_jobs_resume_with_the_same_results(tmp_path, arch, trained_like_model(arch), random_images(), layers)


def reset_jobs_resume_with_the_same_results(tmp, arch: Architecture, model, images: ImageSet, starts: dict[str, str]) -> None:
    """Through evaluate_reset (the workflow's call site): each layer's reset job gives the same
    metrics with reuse as without, the full pass from the images, the reused one from ``starts[layer]``."""
    save_image_set(images, tmp / "eval.safetensors")
    save_checkpoint(tmp / "m.safetensors", model.state_dict(), NORM, {"model": "m"})
    full, reuse = EvalSettings(device="cpu", batch_size=BATCH), EvalSettings(device="cpu", batch_size=BATCH, activation_cache_mb=64)
    evaluate_baseline(model_id="m", arch=arch, weights=tmp / "m.safetensors", eval_data=tmp / "eval.safetensors",
                      settings=full, logits_out=tmp / "b.safetensors", summary_out=tmp / "b.json")  # fmt: skip
    cache = EvaluationCache()
    for layer, start in starts.items():
        a = evaluate(tmp, arch, EvaluationCache(), full, layer, 1, "a.json")
        b = evaluate(tmp, arch, cache, reuse, layer, 1, "reused.json")
        assert {k: a[k] for k in METRICS} == {k: b[k] for k in METRICS}, layer
        assert (a["forward_from"], b["forward_from"]) == ("input", start), layer


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
    first = cache.held_activations("cpu")
    evaluate(tmp, demo_arch, cache, settings, "layer4.0.conv1", 0, "r.json")
    assert cache.held_activations("cpu") is first  # same model, same files: reused
    stat = (tmp / "eval.safetensors").stat()
    os.utime(tmp / "eval.safetensors", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # re-made images
    r = evaluate(tmp, demo_arch, cache, settings, "fc", 0, "r.json")
    assert cache.held_activations("cpu") is not first and r["forward_from"] == "fc"
