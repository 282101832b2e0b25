"""How a model runs on the evaluation images, in one place.

The settings of a forward pass (device, precision, batch size), the input batches (normalized on
the device), and the forward pass itself: in full, or from the clean model's recorded
activations, so that a reset evaluation recomputes only what follows the reset layer.

Resetting a layer changes nothing computed before the layer is first used, so where one value
carries the rest of the forward pass (between two blocks) the reset model's pass can resume from
the clean model's value. ``layercrit.evaluation.graph.graph_segments`` cuts the forward of any model
torch.fx can trace into such a chain (a stem, one segment per block, a head) and returns None for a
model it cannot trace, which is then always run in full (the log says why). ``CleanActivations``
runs the clean model once, keeps the inputs of as many segments as fit in a memory budget
(deepest first: they are the smallest and skip the most work), and a reset evaluation then starts
from the kept input nearest before the layer's segment.

The result must be the full forward pass, bit for bit. The recording pass therefore also
computes the chain's logits and compares them with the baseline job's logits: only when they are
exactly equal (same device type, same deterministic kernels, same batches) are the activations
used; otherwise every evaluation of that model falls back to the full forward pass.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from layercrit.data import ImageSet, to_model_input
from layercrit.evaluation.concurrency import module_calls
from layercrit.evaluation.graph import Segment

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


@contextlib.contextmanager
def evaluating(settings: EvalSettings, device: str) -> Iterator[None]:
    """A forward pass: no gradients, the arithmetic of the settings, and no torch.fx trace in this
    process meanwhile (``layercrit.evaluation.concurrency``)."""
    with module_calls(), torch.inference_mode(), numerics(settings.precision, device):
        yield


def use_cpu_threads(settings: EvalSettings, device: str) -> None:
    """Give torch the job's threads on the CPU (a process-wide setting: call it under the device
    lease, where the CPU is one slot and one evaluation runs at a time; emulated GPUs, ``cpu:i``,
    each take the one thread of a GPU job)."""
    if device.partition(":")[0] == "cpu" and settings.cpu_threads:
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
    with evaluating(settings, device):
        return torch.cat([model(x).float() for x in model_inputs(data, normalization, settings, device)])


def device_description(device: str) -> str:
    if device.startswith("cuda"):
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    threads = f"{torch.get_num_threads()} threads"
    return f"{device} (emulated GPU, {threads})" if device.startswith("cpu:") else f"cpu ({threads})"


def free_memory(device: str) -> int:
    """Bytes free on the device: GPU memory that neither another process nor a live tensor holds
    (memory PyTorch keeps reserved after tensors are freed counts as free: it is reused), or the
    machine's available RAM."""
    if device.startswith("cuda"):
        index = torch.device(device)
        cached = torch.cuda.memory_reserved(index) - torch.cuda.memory_allocated(index)
        return torch.cuda.mem_get_info(index)[0] + cached
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def segment_holding(segments: Sequence[Segment], layer: str) -> int | None:
    """The first segment that uses ``layer``: a resumed pass must start there to see its reset."""
    return next((k for k, s in enumerate(segments) if s.holds(layer)), None)


def _chain(segments: Sequence[Segment], start: int, x: torch.Tensor) -> torch.Tensor:
    for segment in segments[start:]:
        x = segment.run(x)
    return x


class CleanActivations:
    """Inputs of a model's segments on every evaluation batch, recorded from the clean model.

    ``record`` is called once per model (and device, precision, batch size); ``resume`` then
    yields the logits of the (possibly reset) model from the segment ``start_for(layer)``.
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
        with evaluating(settings, device):
            self._record(model_inputs(data, normalization, settings, device), clean_logits)

    def _record(self, batches: Iterator[torch.Tensor], clean_logits: torch.Tensor) -> None:
        chosen: list[int] | None = None
        outputs = []
        for x in batches:
            n, inputs, witness = len(x), {}, {}
            for k, segment in enumerate(self.segments):
                # the first segment's input is the image batch itself; a tuple is not kept
                if k and isinstance(x, torch.Tensor) and x.dim():
                    inputs[k] = x
                    if chosen is None:
                        witness[k] = x[:1].clone()
                x = segment.run(x)
            outputs.append(x.float())
            if chosen is None:
                # a segment that wrote into its input (in place) would later resume from other values
                if changed := [self.segments[k].name for k, w in witness.items() if not torch.equal(inputs[k][:1], w)]:
                    log.warning("segments %s change their input in place: not reusing activations", ", ".join(changed))
                    self.kept, self.exact = {}, False
                    return
                # a view (a ViT's class token, x[:, 0]) keeps all of its storage: count that
                per_image = {k: v.untyped_storage().nbytes() / n for k, v in inputs.items()}
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
        """Index of the segment to start from for ``layer``, or None (full forward): the nearest
        kept input at or before the layer's segment (the segments in between do not use the layer,
        so they recompute what they computed clean)."""
        k = segment_holding(self.segments, layer)
        if not self.exact or k is None:
            return None
        return max((j for j in self.kept if j <= k), default=None)

    def resume(self, start: int, settings: EvalSettings, device: str) -> torch.Tensor:
        """Logits (float32, N×C), running the segments from ``start`` on the recorded inputs."""
        with evaluating(settings, device):
            return torch.cat([_chain(self.segments, start, x).float() for x in self.kept[start]])

    @property
    def nbytes(self) -> int:
        storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for ts in self.kept.values() for t in ts}
        return sum(storages.values())


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
