"""Activation reuse for any model torch.fx traces (layercrit.evaluation.graph), per family: a reset evaluation
resumed from the clean model's activations gives the full forward pass's logits bit for bit."""

import logging

import pytest
import torch

from layercrit.data import ImageSet
from layercrit.evaluation.forward import CleanActivations, EvalSettings, ForwardPass, predict_logits, segment_holding
from layercrit.evaluation.graph import graph_segments
from layercrit.evaluation.graph import Segment
from layercrit.evaluation.reset import reset_layer
from layercrit.study import Architecture
from layercrit.models.zoo import build_architecture

from conftest import REPO
from test_forward import reset_jobs_resume_with_the_same_results

NORM = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
SIZE, N_IMAGES, BATCH = 64, 12, 8  # the last batch is smaller


pytestmark = pytest.mark.usefixtures("one_torch_thread")


SWIN = {"img_size": SIZE, "window_size": 4, "depths": (1, 1, 2, 1), "embed_dim": 24, "num_heads": (1, 1, 2, 2)}
# Families no per-family splitter covered, small enough for a CPU test; blocks with residuals
# inside them (MBConv, RegNet's bottlenecks) and graphs that are not a chain of modules (Swin's
# shifted windows, patch merging; torchvision's Sequential-built blocks).
FAMILIES = {
    "efficientnet": Architecture("efficientnet", "efficientnet_b0", {"num_classes": 10}),
    "mobilenetv3": Architecture("mobilenetv3", "mobilenetv3_small_050", {"num_classes": 10}),
    "regnet": Architecture("regnet", "regnetx_002", {"num_classes": 10}),
    "swin": Architecture("swin", "swin_tiny_patch4_window7_224", {**SWIN, "num_classes": 10}),
    "tv_efficientnet": Architecture("tv_efficientnet", "efficientnet_b0", {"num_classes": 10}, library="torchvision"),
    "tv_mobilenet_v3": Architecture("tv_mobilenet_v3", "mobilenet_v3_small", {"num_classes": 10}, library="torchvision"),
    "tv_regnet": Architecture("tv_regnet", "regnet_x_400mf", {"num_classes": 10}, library="torchvision"),
    "tv_swin": Architecture("tv_swin", "swin_t", {"num_classes": 10}, library="torchvision"),
}
LAYER_TYPES = (torch.nn.Conv2d, torch.nn.Linear)


def trained_like(arch: Architecture) -> torch.nn.Module:
    """``arch`` away from its initialization, as a trained model is (timm zero-initializes some
    norms, which would make a reset before them change nothing): every parameter moved by 20 % of
    its spread (by 0.2 where it is constant), so that activations stay finite through the depth."""
    g = torch.Generator().manual_seed(0)
    model = build_architecture(arch, seed=3)
    with torch.no_grad():
        for p in model.parameters():
            spread = p.std() if p.numel() > 1 and p.std() > 0 else 1.0
            p.add_(0.2 * spread * torch.randn(p.shape, generator=g))
    return model.eval()


def random_images(n: int = N_IMAGES) -> ImageSet:
    g = torch.Generator().manual_seed(1)
    return ImageSet(torch.randint(0, 256, (n, 3, SIZE, SIZE), dtype=torch.uint8, generator=g), torch.zeros(n, dtype=torch.long))


def stem_middle_head(model: torch.nn.Module) -> list[str]:
    layers = [n for n, m in model.named_modules() if isinstance(m, LAYER_TYPES)]
    return [layers[0], layers[len(layers) // 2], layers[-1]]


@pytest.mark.parametrize("mode", ["randomize", "zero"])
@pytest.mark.parametrize("name", FAMILIES)
def test_reset_evaluations_from_the_graph_segments_equal_the_full_pass_bitwise(name, mode):
    arch = FAMILIES[name]
    model, images = trained_like(arch), random_images()
    settings = EvalSettings(device="cpu", batch_size=BATCH, activation_cache_mb=256)
    clean = predict_logits(model, images, NORM, settings, "cpu")
    activations = CleanActivations(graph_segments(model), 256 * 2**20)
    activations.record(images, NORM, settings, "cpu", clean)
    assert activations.exact and torch.isfinite(clean).all()
    assert len(activations.kept) == len(activations.segments) - 1 >= 5  # every segment input is a tensor, kept
    fresh = build_architecture(arch, seed=11).state_dict()
    stem, middle, head = stem_middle_head(model)
    starts = {}
    for layer in (stem, middle, head):
        reused = ForwardPass(model, images, NORM, settings, "cpu", activations, activations.start_for(layer))
        with reset_layer(model, layer, mode, fresh):
            full = predict_logits(model, images, NORM, settings, "cpu")
            assert torch.equal(reused(), full), layer
        assert not torch.equal(full, clean), layer  # the reset did change the outputs
        starts[layer] = (activations.start_for(layer), reused.starts_at)
    assert starts[stem] == (None, "input")  # the first segment starts from the images
    assert 0 < starts[middle][0] < starts[head][0] == len(activations.segments) - 1, starts
    assert starts[middle][1] == activations.segments[segment_holding(activations.segments, middle)].name
    # restored in place, and the kept inputs unchanged by the resumed passes: the clean logits again
    assert torch.equal(activations.resume(starts[middle][0], settings, "cpu"), clean)


@pytest.mark.parametrize("name", FAMILIES)
def test_the_segments_use_the_models_own_tensors_and_hold_each_layer_once(name):
    """The segments are GraphModules on the model itself: the very tensors a reset writes into,
    no copies; each layer belongs to the first (here: the one) segment whose graph uses it; and
    tracing leaves the model as it was (the tracer stores tensor constants on it)."""
    model = build_architecture(FAMILIES[name], seed=0)
    attributes = set(vars(model))
    segments = graph_segments(model)
    assert set(vars(model)) == attributes
    owner = {id(t): n for n, t in [*model.named_parameters(), *model.named_buffers()]}
    used = []
    for s in segments:
        tensors = [*s.run.parameters(), *s.run.buffers()]
        assert all(id(t) in owner for t in tensors), s.name
        used.append({owner[id(t)] for t in tensors})
    layers = [n for n, m in model.named_modules() if n and any(True for _ in m.parameters(recurse=False))]
    for layer in layers:
        holders = [k for k, s in enumerate(segments) if s.holds(layer)]
        users = [k for k, names in enumerate(used) if any(n.rpartition(".")[0] == layer for n in names)]
        assert holders == users[:1] == [segment_holding(segments, layer)], (layer, holders, users)


def test_a_reset_job_of_a_family_no_splitter_knew_resumes_with_the_same_results(tmp_path):
    """Through evaluate_reset (the workflow's call site): the same metrics, from the layer's segment."""
    arch = FAMILIES["mobilenetv3"]
    model = trained_like(arch)
    segments = graph_segments(model)
    held = {layer: segment_holding(segments, layer) for layer in stem_middle_head(model)}
    starts = {layer: segments[k].name if k else "input" for layer, k in held.items()}  # the stem: from the images
    assert list(starts.values())[0] == "input" and "input" not in list(starts.values())[1:]
    reset_jobs_resume_with_the_same_results(tmp_path, arch, model, random_images(), starts)


class DataDependent(torch.nn.Module):
    """Control flow on a tensor's value: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2, self.fc = torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(4, 4, 3), torch.nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        if x.mean() > 0:
            x = -x
        return self.fc(self.conv2(x).mean((2, 3)))


def test_a_model_torch_fx_cannot_trace_runs_the_full_pass_and_the_log_says_why(caplog):
    model, images = DataDependent().eval(), random_images()
    settings = EvalSettings(device="cpu", batch_size=BATCH, activation_cache_mb=64)
    with caplog.at_level(logging.WARNING, logger="layercrit.evaluation.graph"):
        assert graph_segments(model) is None and graph_segments(DataDependent()) is None
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1, warnings  # once per architecture
    assert "DataDependent" in warnings[0] and "torch.fx cannot trace" in warnings[0] and "TraceError" in warnings[0]
    assert "full forward pass" in warnings[0]
    clean = predict_logits(model, images, NORM, settings, "cpu")
    activations = CleanActivations(graph_segments(model), 64 * 2**20)
    activations.record(images, NORM, settings, "cpu", clean)
    forward = ForwardPass(model, images, NORM, settings, "cpu", activations, activations.start_for("conv2"))
    assert torch.equal(forward(), clean) and forward.starts_at == "input"


class InPlaceAfterConv(torch.nn.Module):
    """A parameter added in place to a value the graph could be cut at: the addition is kept in
    the segment before, which the recorded value would otherwise not be."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2, self.fc = torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(4, 4, 3), torch.nn.Linear(4, 10)
        self.shift = torch.nn.Parameter(torch.ones(4, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = x.add_(self.shift)
        return self.fc(self.conv2(x).mean((2, 3)))


def test_no_segment_starts_with_writing_into_its_input():
    model, images = InPlaceAfterConv().eval(), random_images()
    settings = EvalSettings(device="cpu", batch_size=BATCH)
    segments = graph_segments(model)
    assert [s.name for s in segments] == ["conv1..shift", "conv2", "fc"]
    clean = predict_logits(model, images, NORM, settings, "cpu")
    activations = CleanActivations(segments, 64 * 2**20)
    activations.record(images, NORM, settings, "cpu", clean)
    assert activations.exact
    for _ in range(2):  # the kept inputs stay as recorded
        with reset_layer(model, "conv2", "zero"):
            full = predict_logits(model, images, NORM, settings, "cpu")
            assert torch.equal(activations.resume(activations.start_for("conv2"), settings, "cpu"), full)


def linear_segments() -> tuple[torch.nn.ModuleDict, list[Segment]]:
    layers = torch.nn.ModuleDict({name: torch.nn.Linear(SIZE, SIZE) for name in ("a", "b", "c", "d")})
    return layers, [Segment(name, (name,), layer) for name, layer in layers.items()]


def run_records(segments: list[Segment], budget: int = 2**20) -> tuple[CleanActivations, torch.Tensor]:
    batches = list(torch.randn(6, SIZE).split(4))
    with torch.inference_mode():
        clean = []
        for x in batches:
            for s in segments:
                x = s.run(x)
            clean.append(x)
        activations = CleanActivations(segments, budget)
        activations._record(iter(batches), torch.cat(clean))
    return activations, torch.cat(clean)


def test_a_segment_that_changes_its_input_in_place_disables_reuse(caplog):
    """The graph's cuts avoid it (above); a hand-written or opaque segment may still do it."""
    _, segments = linear_segments()
    segments[2] = Segment("c", ("c",), lambda x: x.mul_(2))
    with caplog.at_level(logging.WARNING, logger="layercrit.evaluation.forward"):
        activations, _ = run_records(segments)
    assert activations.kept == {} and activations.start_for("d") is None
    assert "segments c change their input in place" in caplog.text


def test_a_layer_resumes_from_the_nearest_kept_input_before_its_segment():
    """A segment input that is not kept (a tuple, or one the budget leaves out) starts the layers
    of that segment from the kept input before it, not from the images."""
    layers, segments = linear_segments()
    segments[1] = Segment("b", ("b",), lambda x: (layers["b"](x), x))  # a tuple into segment c
    segments[2] = Segment("c", ("c",), lambda pair: layers["c"](pair[0]) + pair[1])
    activations, clean = run_records(segments)
    assert list(activations.kept) == [1, 3] and activations.exact
    assert [activations.start_for(n) for n in "abcd"] == [None, 1, 1, 3]
    with torch.inference_mode():
        assert torch.equal(activations.resume(1, EvalSettings(device="cpu"), "cpu"), clean)
    small, _ = run_records(linear_segments()[1], budget=6 * SIZE * 4)  # room for one segment input
    assert list(small.kept) == [3] and [small.start_for(n) for n in "abcd"] == [None, None, None, 3]


def test_benchmarks_md_shows_the_graph_reuse_record():
    """docs/benchmarks.md's table is benchmarks/graph_reuse.py's rendering of its committed record."""
    from test_benchmark_docs import test_benchmarks_md_shows_the_committed_record as shows

    assert (REPO / "docs/graph_reuse_cpu.json").exists()
    shows("graph_reuse", "docs/graph_reuse_cpu.json")


def test_a_kept_view_counts_all_of_the_storage_it_keeps():
    """A segment input that is a slice (a ViT's class token, x[:, 0]) keeps the whole tensor it is
    a view of: the budget and ``nbytes`` count that, not the slice."""
    layers, segments = linear_segments()
    segments[1] = Segment("b", ("b",), lambda x: layers["b"](x)[:, : SIZE // 4])  # a view of 6 × SIZE
    segments[2] = Segment("c", ("c",), lambda x: layers["c"](x.repeat(1, 4)))
    activations, _ = run_records(segments)
    assert list(activations.kept) == [1, 2, 3] and activations.nbytes == 3 * 6 * SIZE * 4
    slice_only = 6 * (SIZE // 4) * 4  # what the slices' elements take: too little for the view's storage
    deepest, _ = run_records(segments, budget=6 * SIZE * 4 + slice_only)
    assert list(deepest.kept) == [3] and deepest.start_for("c") is None
