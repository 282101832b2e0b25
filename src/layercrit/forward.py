"""How a model runs on the evaluation images, in one place.

The settings of a forward pass (device, precision, batch size), the input batches (normalized on
the device), and the forward pass itself: in full, or from the clean model's recorded
activations, so that a reset evaluation recomputes only what follows the reset layer.

Resetting a layer changes nothing before it, so the input of the block that holds the layer is
the same as in the clean model. ``chain_segments`` splits the forward of the models whose forward
is a chain (timm's ResNet, VisionTransformer and ConvNeXt: a stem or embedding, one segment per
residual block, a head; see ``chain_architectures``) and returns None for any other model, which
is then always run in full. ``CleanActivations`` runs the clean model once, keeps the inputs of
as many segments as fit in a memory budget (deepest first: they are the smallest and skip the
most work), and a reset evaluation then starts from the segment that holds the reset layer.

The result must be the full forward pass, bit for bit. The recording pass therefore also
computes the chain's logits and compares them with the baseline job's logits: only when they are
exactly equal (same device type, same deterministic kernels, same batches) are the activations
used; otherwise every evaluation of that model falls back to the full forward pass.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from layercrit.data import ImageSet, to_model_input

log = logging.getLogger(__name__)

# fp32: strict float32 (no TF32 anywhere; the paper's arithmetic). torch_default: PyTorch's own
# defaults on NVIDIA GPUs, cuDNN convolutions in TF32 and matmuls in float32 (what the authors'
# runs used). tf32: TF32 for both. bf16: autocast to bfloat16. On the CPU all but bf16 are fp32.
PRECISIONS = ("fp32", "torch_default", "tf32", "bf16")


@dataclass(frozen=True)
class EvalSettings:
    device: str = "auto"
    precision: str = "fp32"
    batch_size: int = 500
    # Memory (MiB per evaluation device, at most half of what is free there) for the clean
    # model's activations that reset evaluations start from (CleanActivations); 0 recomputes
    # every forward pass in full.
    activation_cache_mb: int = 0
    # torch's threads for an evaluation on the CPU (the job's Snakemake threads): its default, every
    # core of the machine, oversubscribes an allocation or a machine shared with other jobs.
    cpu_threads: int | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision: {self.precision!r} is not one of {PRECISIONS}")


@contextlib.contextmanager
def numerics(precision: str, device: str) -> Iterator[None]:
    """The arithmetic of ``precision`` on ``device`` (TF32 switches, bf16 autocast), for a forward pass."""
    if device.startswith("cuda"):
        # TF32 is a process-wide switch; every job of one study uses the same precision.
        torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
        torch.backends.cudnn.allow_tf32 = precision in ("tf32", "torch_default")
    if precision == "bf16":
        with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16):
            yield
    else:
        yield


def use_cpu_threads(settings: EvalSettings, device: str) -> None:
    """Give torch the job's threads on the CPU (a process-wide setting: call it under the device
    lease, where the CPU is one slot and one evaluation runs at a time)."""
    if device == "cpu" and settings.cpu_threads:
        torch.set_num_threads(settings.cpu_threads)


def model_inputs(data: ImageSet, normalization: dict | None, settings: EvalSettings, device: str) -> Iterator[torch.Tensor]:
    """The evaluation images as model input batches: normalized on the device, channels_last on a GPU."""
    mean = normalization.get("mean") if normalization else None
    std = normalization.get("std") if normalization else None
    for start in range(0, len(data), settings.batch_size):
        x = to_model_input(data.images[start : start + settings.batch_size].to(device, non_blocking=True), mean, std)
        if device.startswith("cuda"):
            x = x.contiguous(memory_format=torch.channels_last)
        yield x


def predict_logits(
    model: torch.nn.Module, data: ImageSet, normalization: dict | None, settings: EvalSettings, device: str
) -> torch.Tensor:
    """Logits (float32, N×C) of ``model`` on every image, in batches, without gradients."""
    with torch.inference_mode(), numerics(settings.precision, device):
        return torch.cat([model(x).float() for x in model_inputs(data, normalization, settings, device)])


def device_description(device: str) -> str:
    if device.startswith("cuda"):
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return f"cpu ({torch.get_num_threads()} threads)"


def free_memory(device: str) -> int:
    """Bytes free on the device (GPU memory, or the machine's available RAM)."""
    if device.startswith("cuda"):
        return torch.cuda.mem_get_info(torch.device(device))[0]
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Segment:
    name: str
    modules: tuple[str, ...]  # module-name prefixes whose parameters this segment uses
    run: Callable[[torch.Tensor], torch.Tensor]

    def holds(self, layer: str) -> bool:
        return any(layer == m or layer.startswith(m + ".") for m in self.modules)


def _replaces(obj: object, cls: type, methods: tuple[str, ...]) -> bool:
    """Whether ``obj``'s class overrides any of ``cls``'s ``methods``: a subclass that does runs a
    forward pass a splitter written for ``cls`` does not know, so it is not split."""
    return any(getattr(type(obj), m) is not getattr(cls, m) for m in methods)


def resnet_chain(model: torch.nn.Module) -> list[Segment] | None:
    """timm ``ResNet``: mirrors ``forward_features`` (conv1, bn1, act1, maxpool, then every block
    of layer1..layer4) and ``forward_head``."""
    from timm.models.resnet import ResNet

    if getattr(model, "grad_checkpointing", False) or _replaces(model, ResNet, ("forward", "forward_features")):
        return None

    def stem(x: torch.Tensor) -> torch.Tensor:
        return model.maxpool(model.act1(model.bn1(model.conv1(x))))

    segments = [Segment("stem", ("conv1", "bn1", "act1", "maxpool"), stem)]
    for stage in ("layer1", "layer2", "layer3", "layer4"):
        for i, block in enumerate(getattr(model, stage)):
            segments.append(Segment(f"{stage}.{i}", (f"{stage}.{i}",), block))
    segments.append(Segment("head", ("global_pool", "fc"), model.forward_head))
    return segments


def vit_chain(model: torch.nn.Module) -> list[Segment] | None:
    """timm ``VisionTransformer``: mirrors ``forward_features`` without a mask (patch_embed,
    _pos_embed, patch_drop, norm_pre; every block of ``blocks``; norm) and ``forward_head``.

    The embedding segment holds the model's own tokens and position embedding (``cls_token``,
    ``reg_token``, ``pos_embed``); ``forward_head`` holds pooling, attention pooling included.
    """
    from timm.models.vision_transformer import VisionTransformer

    methods = ("forward", "forward_features", "_pos_embed", "forward_head", "pool")
    if getattr(model, "grad_checkpointing", False) or _replaces(model, VisionTransformer, methods):
        return None

    def embed(x: torch.Tensor) -> torch.Tensor:
        return model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(x))))

    def head(x: torch.Tensor) -> torch.Tensor:
        return model.forward_head(model.norm(x))

    tokens = ("patch_embed", "cls_token", "reg_token", "pos_embed", "pos_drop", "patch_drop", "norm_pre")
    segments = [Segment("embed", tokens, embed)]
    segments += [Segment(f"blocks.{i}", (f"blocks.{i}",), block) for i, block in enumerate(model.blocks)]
    segments.append(Segment("head", ("norm", "attn_pool", "fc_norm", "head_drop", "head"), head))
    return segments


def convnext_chain(model: torch.nn.Module) -> list[Segment] | None:
    """timm ``ConvNeXt``: mirrors ``forward_features`` (stem; each stage as its downsample, when
    it has one, then every block, which is ``ConvNeXtStage.forward``; norm_pre) and ``forward_head``."""
    from timm.models.convnext import ConvNeXt, ConvNeXtStage

    if _replaces(model, ConvNeXt, ("forward", "forward_features", "forward_head")):
        return None
    segments = [Segment("stem", ("stem",), model.stem)]
    for i, stage in enumerate(model.stages):
        known = isinstance(stage, ConvNeXtStage) and not _replaces(stage, ConvNeXtStage, ("forward",))
        if not known or getattr(stage, "grad_checkpointing", False):
            return None
        if not isinstance(stage.downsample, torch.nn.Identity):  # an Identity would store its input twice
            segments.append(Segment(f"stages.{i}.downsample", (f"stages.{i}.downsample",), stage.downsample))
        segments += [Segment(f"stages.{i}.blocks.{j}", (f"stages.{i}.blocks.{j}",), b) for j, b in enumerate(stage.blocks)]

    def head(x: torch.Tensor) -> torch.Tensor:
        return model.forward_head(model.norm_pre(x))

    segments.append(Segment("head", ("norm_pre", "head"), head))
    return segments


Splitter = Callable[[torch.nn.Module], list[Segment] | None]


@functools.cache
def chain_architectures() -> tuple[tuple[type, Splitter], ...]:
    """The model classes whose forward is split into a chain, each with its splitter.

    A splitter re-states one class's forward pass segment by segment, so it is only right for the
    code it was written against (timm 1.0.31, checked bit for bit in tests/test_forward.py);
    keeping each one a small function next to its class makes another architecture one function
    and one line here. Imported on first use: timm is slow to import.
    """
    from timm.models.convnext import ConvNeXt
    from timm.models.resnet import ResNet
    from timm.models.vision_transformer import VisionTransformer

    return ((ResNet, resnet_chain), (VisionTransformer, vit_chain), (ConvNeXt, convnext_chain))


def chain_segments(model: torch.nn.Module) -> list[Segment] | None:
    """``model``'s forward as a chain of segments, or None (full forward pass) for a model whose
    forward no splitter in ``chain_architectures`` mirrors.

    A chain is also refused when some parameter or buffer of the model is in no segment or in
    more than one: then the splitter does not know the model, and resuming after a reset of that
    layer could miss the reset.
    """
    for cls, split in chain_architectures():
        if isinstance(model, cls):
            segments = split(model)
            break
    else:
        return None
    if segments is not None and not _each_tensor_in_one_segment(model, segments):
        log.warning("%s: a segment chain that does not hold every parameter once; full forward passes", type(model).__name__)
        return None
    return segments


def _each_tensor_in_one_segment(model: torch.nn.Module, segments: Sequence[Segment]) -> bool:
    names = [n for n, _ in model.named_parameters()] + [n for n, _ in model.named_buffers()]
    return all(sum(s.holds(n) for s in segments) == 1 for n in names)


def segment_holding(segments: Sequence[Segment], layer: str) -> int | None:
    return next((k for k, s in enumerate(segments) if s.holds(layer)), None)


def _chain(segments: Sequence[Segment], start: int, x: torch.Tensor) -> torch.Tensor:
    for segment in segments[start:]:
        x = segment.run(x)
    return x


class CleanActivations:
    """Inputs of a model's segments on every evaluation batch, recorded from the clean model.

    ``record`` is called once per model (and device, precision, batch size); ``resume`` then
    yields the logits of the (possibly reset) model from the segment that holds ``layer``.
    """

    def __init__(self, segments: list[Segment] | None, budget_bytes: int):
        self.segments = segments or []
        self.budget_bytes = budget_bytes
        self.kept: dict[int, list[torch.Tensor]] = {}  # segment index -> input per batch
        self.exact = False

    def record(
        self, data: ImageSet, normalization: dict | None, settings: EvalSettings, device: str, clean_logits: torch.Tensor
    ) -> None:
        """Run the clean model batch by batch, keeping segment inputs within the budget, and check
        that the chained segments reproduce ``clean_logits`` exactly."""
        if not self.segments or self.budget_bytes <= 0:
            return
        with torch.inference_mode(), numerics(settings.precision, device):
            self._record(model_inputs(data, normalization, settings, device), clean_logits)

    def _record(self, batches: Iterator[torch.Tensor], clean_logits: torch.Tensor) -> None:
        chosen: list[int] | None = None
        outputs = []
        for x in batches:
            inputs = {}
            for k, segment in enumerate(self.segments):
                if k:  # the first segment's input is the image batch itself
                    inputs[k] = x
                x = segment.run(x)
            outputs.append(x.float())
            if chosen is None:
                per_image = {k: v.nelement() * v.element_size() / len(v) for k, v in inputs.items()}
                chosen = self._choose(per_image, len(clean_logits))
                self.kept = {k: [] for k in chosen}
            for k in chosen:
                self.kept[k].append(inputs[k])
        logits = torch.cat(outputs) if outputs else torch.empty(0)
        self.exact = logits.shape == clean_logits.shape and torch.equal(logits, clean_logits)
        if not self.exact:
            log.warning("segment-wise forward differs from the baseline logits: not reusing activations")
            self.kept = {}

    def _choose(self, bytes_per_image: dict[int, float], n_images: int) -> list[int]:
        # deepest first: smallest activations, most work skipped
        budget, chosen = self.budget_bytes, []
        for k in sorted(bytes_per_image, reverse=True):
            need = bytes_per_image[k] * n_images
            if need <= budget:
                chosen.append(k)
                budget -= need
        return sorted(chosen)

    def start_for(self, layer: str) -> int | None:
        """Index of the segment to start from for ``layer``, or None (full forward)."""
        k = segment_holding(self.segments, layer)
        return k if self.exact and k in self.kept else None

    def resume(self, start: int, settings: EvalSettings, device: str) -> torch.Tensor:
        """Logits (float32, N×C), running the segments from ``start`` on the recorded inputs."""
        with torch.inference_mode(), numerics(settings.precision, device):
            return torch.cat([_chain(self.segments, start, x).float() for x in self.kept[start]])

    @property
    def nbytes(self) -> int:
        return sum(t.nelement() * t.element_size() for ts in self.kept.values() for t in ts)


@dataclass
class ForwardPass:
    """The forward pass of one reset evaluation: in full, or (``start`` set) from the recorded
    input of the segment that holds the reset layer. ``seconds`` is the last call's wall time."""

    model: torch.nn.Module
    data: ImageSet
    normalization: dict | None
    settings: EvalSettings
    device: str
    activations: CleanActivations | None = None
    start: int | None = None
    seconds: float = 0.0

    @property
    def starts_at(self) -> str:
        """Where the pass starts: ``input`` or the name of the segment it resumes."""
        return "input" if self.start is None else self.activations.segments[self.start].name

    def __call__(self) -> torch.Tensor:
        started = time.perf_counter()
        if self.start is None:
            logits = predict_logits(self.model, self.data, self.normalization, self.settings, self.device)
        else:  # the segments before the reset layer's are unchanged: start from their outputs
            logits = self.activations.resume(self.start, self.settings, self.device)
        self.seconds = time.perf_counter() - started
        return logits
