"""The workflow's numbers for a model in memory: ``layer_criticality`` runs the paper's method on a
model object and images (a tensor or a DataLoader), in a notebook, without a study, and returns
the rows that ``resets.csv`` holds for them.

It runs the same code as the workflow's reset jobs: the clean pass once, then for each layer and
seed ``evaluation.jobs.measure_reset`` (reset the layer, run the images, compare the softmax
outputs, restore the layer bitwise), each result made by ``evaluation.jobs.reset_result`` and the
rows by ``analysis.aggregation.reset_rows``. Given the same weights, images, batch size,
precision, device and seeds, its numbers are the workflow's bit for bit (tests/test_notebook.py).
What differs, since it reads no files and leases no device: the ``*_sha256`` columns and
``lease_wait_s`` are empty, and every pass runs in full (``forward_from`` is ``input``; the
workflow's activation reuse gives the same bits, faster).
"""

from __future__ import annotations

import logging
import math
import numbers
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from layercrit.analysis.aggregation import reset_rows
from layercrit.data import normalize, to_model_input
from layercrit.evaluation.baseline_checks import BASELINE_INPUTS
from layercrit.evaluation.concurrency import global_rng, module_calls
from layercrit.evaluation.forward import EvalSettings, device_description, evaluating
from layercrit.evaluation.jobs import measure_reset, reset_result
from layercrit.evaluation.metrics import clean_accuracy
from layercrit.evaluation.reset import layer_tensors, replacement_source
from layercrit.models.blocks import enumerate_blocks
from layercrit.models.zoo import enumerate_layers
from layercrit.study import Architecture, Layer, load_schema, schema_problems, selected_layers
from layercrit.study.blocks import selected_blocks

log = logging.getLogger(__name__)


def _arguments_schema() -> dict[str, Any]:
    """The arguments that are study settings, checked by the config schema's own definitions of
    them (``mode``, ``seeds``, ``layers`` as one architecture's selection, ``batch_size``,
    ``precision``, ``device``)."""
    config = load_schema("config")["properties"]
    reset = config["reset"]["properties"]
    properties = {
        "mode": reset["mode"],
        "seeds": reset["seeds"],
        "layers": reset["layers"]["properties"]["architectures"]["additionalProperties"],
        **{key: config[key] for key in ("batch_size", "precision", "device")},
    }
    return {"type": "object", "properties": properties}


_ARGUMENTS = _arguments_schema()


def layer_criticality(
    model: torch.nn.Module,
    images: torch.Tensor | Iterable[Any],
    *,
    labels: torch.Tensor | None = None,
    layers: Mapping[str, Sequence[str]] | None = None,
    mode: str = "randomize",
    seeds: Sequence[int] = (0, 1, 2),
    fresh_model: Callable[[], torch.nn.Module] | None = None,
    initial_weights: Mapping[str, torch.Tensor] | None = None,
    normalization: Mapping[str, Sequence[float]] | None = None,
    batch_size: int = 500,
    precision: str = "fp32",
    device: str = "cpu",
    model_id: str = "model",
    progress: bool = True,
) -> pd.DataFrame:
    """Layer criticality of ``model`` on ``images``, one row per layer × seed, with the columns of
    the workflow's ``resets.csv`` (criticality = 100 × (1 − mean cosine of the softmax outputs)).

    - ``images``: uint8 N×C×H×W as the workflow stores them, or floats in [0, 1] (uint8 / 255 gives
      the workflow's numbers), or a DataLoader (any iterable) of such batches or (images, labels)
      pairs, read once. ``normalization`` ``{"mean": [...], "std": [...]}`` is applied per batch
      as the workflow applies a model's; None for images the model takes as they are.
    - ``labels``: class per image (int), for the accuracy columns; without, those are NaN.
    - ``layers``: the config's ``reset.layers`` selection, ``{"types": [...], "include": [globs],
      "exclude": [globs]}`` (default: every Conv2d and Linear); a pattern matching no layer is an error.
    - ``mode``: ``randomize`` takes the layer from ``fresh_model()``, the untrained architecture,
      built under each seed as the workflow's ``independent`` seed scheme builds it (e.g.
      ``lambda: timm.create_model("resnet50", num_classes=10)``); ``zero``; ``reinit`` takes it from
      ``initial_weights``, the model's state_dict at initialization; ``remove`` replaces each block
      that ``layers`` selects (as the config's ``reset.blocks``: ``types`` required) by the
      identity, with one seed (removal draws nothing).
    - The model is moved to ``device`` (in place, as ``Module.to`` does) and evaluated in eval mode;
      its weights are restored bitwise after every reset, and its train/eval mode at the end.

    Bad arguments raise ``ValueError`` naming the argument before any reset: before any forward pass,
    but for what only the clean pass shows (labels outside the model's classes, images it cannot
    take). The ``*_sha256`` columns and ``lease_wait_s`` are empty: no files, no device lease.
    """
    if layers is not None and not isinstance(layers, Mapping):
        raise ValueError(f'layers: a selection as the config\'s reset.layers, e.g. {{"include": ["layer4.*"]}}, not {layers!r}')
    selection = dict(layers) if layers is not None else {}
    seeds = [int(s) if isinstance(s, numbers.Integral) else s for s in seeds]  # numpy's integers too
    problems = schema_problems(
        {"mode": mode, "seeds": seeds, "layers": selection, "batch_size": batch_size, "precision": precision,
         "device": device},
        _ARGUMENTS, "layer_criticality argument",
    )  # fmt: skip
    if problems:
        raise ValueError("; ".join(problems))
    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    if mode == "remove" and len(seeds) != 1:
        raise ValueError(f"seeds: mode remove draws nothing, so every seed gives the same result; give one, e.g. seeds=[0], not {seeds}")
    chosen = _chosen_layers(model, selection, model_id) if mode != "remove" else ()
    x, y = _collected(images, labels)
    if mode == "remove":  # the blocks' shapes come from a forward pass on two of the images
        chosen = _chosen_blocks(model, x[:2], selection, model_id)
    _check_normalization(normalization, x)
    sources = _sources(model, chosen, mode, seeds, fresh_model, initial_weights)
    settings = EvalSettings(device=device, precision=precision, batch_size=batch_size)
    was_training = model.training
    model.to(device).eval()
    if device.startswith("cuda"):  # as the workflow's evaluations run on a GPU
        model.to(memory_format=torch.channels_last)
    try:
        forward = _Forward(model, x.to(device), normalization, settings, device)
        clean = forward.clean()
        labelled = y is not None
        targets = y.to(device) if labelled else torch.zeros(len(x), dtype=torch.long, device=device)
        if labelled:
            _check_classes(targets, clean.shape[1])
        accuracy = clean_accuracy(clean, targets)
        if accuracy["n_nonfinite"]:
            log.warning("%s: %d of %d images have non-finite clean outputs: every metric is NaN", model_id, accuracy["n_nonfinite"], len(x))
        original_top1 = accuracy["top1"] if labelled else math.nan
        rows = []
        jobs = [(layer, seed) for layer in chosen for seed in seeds]
        for layer, seed in tqdm(jobs, desc=f"{model_id} ({mode})", unit="reset", disable=not progress):
            started = time.perf_counter()
            change = measure_reset(model, layer.name, mode, sources[seed], clean, targets, forward)
            result = reset_result(
                model_id=model_id, layer=layer.name, seed=seed, mode=mode, seed_scheme="independent", change=change,
                original_top1=original_top1, inputs_sha256=dict.fromkeys(BASELINE_INPUTS),
                device=device_description(device), precision=precision, batch_size=batch_size,
                forward_s=forward.seconds, forward_from="input", lease_wait_s=None,
                wall_s=time.perf_counter() - started,
            )  # fmt: skip
            if not labelled:
                result.update(top1=math.nan, top5=math.nan, recovered_acc=math.nan)
            rows.append(result)
    finally:
        model.train(was_training)
    return reset_rows(pd.DataFrame(rows), {model_id: chosen})


def _chosen_layers(model: torch.nn.Module, selection: dict[str, Any], model_id: str) -> tuple[Layer, ...]:
    """The model's layers (modules with parameters of their own) that ``selection`` keeps, checked
    as the workflow checks ``reset.layers`` against a layer list."""
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"model: a torch.nn.Module, not {type(model).__name__}")
    arch = Architecture(model_id, type(model).__name__, layers=tuple(enumerate_layers(model)))
    return selected_layers(selection, {model_id: arch}, [model_id], key="layers")[model_id]


def _chosen_blocks(model: torch.nn.Module, example: torch.Tensor, selection: dict[str, Any], model_id: str) -> tuple[Layer, ...]:
    """The model's blocks (mode remove) that ``selection`` keeps, checked as the workflow checks
    ``reset.blocks`` against a block list (layercrit.study.blocks)."""
    device = next(model.parameters()).device
    blocks = tuple(enumerate_blocks(model, example.float().to(device)))
    return selected_blocks(selection, {model_id: blocks}, [model_id], key="layers")[model_id]


def _collected(images: torch.Tensor | Iterable[Any], labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The images as one N×C×H×W tensor and their labels (int64, or None), a DataLoader read once
    (a second pass could shuffle or augment: clean and reset outputs must be of the same images)."""
    if isinstance(images, torch.Tensor):
        x, y = images, labels
    elif isinstance(images, Iterable):
        xs, ys = [], []
        for batch in images:
            if isinstance(batch, (tuple, list)) and len(batch) == 2:
                batch, batch_labels = batch
                ys.append(torch.as_tensor(batch_labels))
            if not isinstance(batch, torch.Tensor) or batch.ndim != 4:
                raise ValueError(
                    "images: the DataLoader must yield image batches (N×C×H×W tensors) or (images, labels) pairs; "
                    f"one batch is {type(batch).__name__} {tuple(getattr(batch, 'shape', ()))}"
                )
            xs.append(batch)
        if ys and labels is not None:
            raise ValueError("labels: the DataLoader yields labels already; leave out labels=")
        if ys and len(ys) != len(xs):
            raise ValueError("images: some batches of the DataLoader have labels and some have none")
        if not xs:
            raise ValueError("images: the DataLoader yields no batch")
        if len({tuple(b.shape[1:]) for b in xs}) > 1 or len({b.dtype for b in xs}) > 1:
            raise ValueError(f"images: the DataLoader's batches differ in shape or type: {sorted({(tuple(b.shape[1:]), str(b.dtype)) for b in xs})}")
        x, y = torch.cat(xs), torch.cat(ys) if ys else labels
    else:
        raise ValueError(f"images: a tensor N×C×H×W or a DataLoader of them, not {type(images).__name__}")
    if x.ndim != 4 or not len(x):
        fix = " (one image: images.unsqueeze(0))" if x.ndim == 3 else ""
        raise ValueError(f"images: a batch N×C×H×W of at least one image, got shape {tuple(x.shape)}{fix}")
    if x.dtype != torch.uint8 and not x.dtype.is_floating_point:
        raise ValueError(f"images: uint8 (0-255) or floating point (0-1), not {x.dtype}")
    if y is not None:
        y = torch.as_tensor(y)
        if y.shape != (len(x),) or y.dtype.is_floating_point or y.dtype == torch.bool:
            raise ValueError(f"labels: one integer class per image, shape ({len(x)},); got {y.dtype} {tuple(y.shape)}")
        y = y.to(torch.int64)
    return x, y


def _check_classes(labels: torch.Tensor, n_classes: int) -> None:
    """Labels must be classes of the model (0 … n_classes − 1), as the workflow checks its data's:
    one outside would count as a miss no model could avoid."""
    outside = (labels < 0) | (labels >= n_classes)
    if bool(outside.any()):
        values = sorted({int(v) for v in labels[outside][:1000]})[:10]
        raise ValueError(
            f"labels: {int(outside.sum())} of {len(labels)} are not classes of the model, which has {n_classes} "
            f"outputs (classes 0 to {n_classes - 1}): {values}; give the class index of each image in the model's outputs"
        )


def _check_normalization(normalization: Mapping[str, Sequence[float]] | None, x: torch.Tensor) -> None:
    """``normalization`` must give one mean and std per channel, and applies to images in [0, 1]:
    float images outside it were most likely normalized already (and would be twice)."""
    if normalization is None:
        return
    channels = x.shape[1]
    if set(normalization) != {"mean", "std"} or any(len(normalization[k]) != channels for k in ("mean", "std")):
        raise ValueError(f"normalization: {{'mean': [...], 'std': [...]}} with {channels} values each (one per channel); got {dict(normalization)}")
    if x.dtype.is_floating_point:
        low, high = (float(v) for v in torch.aminmax(x))
        if low < 0.0 or high > 1.0:
            raise ValueError(
                f"images: values from {low:.3g} to {high:.3g}, but normalization applies to images in [0, 1]: pass "
                "the images before normalizing them, or normalization=None for images the model takes as they are"
            )


def _sources(
    model: torch.nn.Module,
    chosen: tuple[Layer, ...],
    mode: str,
    seeds: list[int],
    fresh_model: Callable[[], torch.nn.Module] | None,
    initial_weights: Mapping[str, torch.Tensor] | None,
) -> dict[int, Mapping[str, torch.Tensor] | None]:
    """Per seed, the state_dict ``mode`` takes the layers' new values from (``replacement_source``),
    built and checked against the model before any forward pass."""
    if mode == "randomize" and fresh_model is None:
        raise ValueError(
            "fresh_model: mode randomize takes each layer from a freshly initialized model of the same architecture; "
            "give fresh_model, a function that builds it untrained, e.g. lambda: timm.create_model('resnet50', "
            "num_classes=10) (or use mode='zero')"
        )
    if mode == "reinit" and initial_weights is None:
        raise ValueError("initial_weights: mode reinit rewinds each layer to the model's weights at initialization; give their state_dict")

    def fresh_state(seed: int) -> Mapping[str, torch.Tensor]:
        with global_rng(seed), module_calls():  # as models.zoo.build_architecture draws a seed's model
            fresh = fresh_model()
        if not isinstance(fresh, torch.nn.Module):
            raise ValueError(f"fresh_model: must return a torch.nn.Module, returned {type(fresh).__name__}")
        return fresh.state_dict()

    sources = {
        seed: replacement_source(mode, fresh_state=lambda: fresh_state(seed), initial_state=lambda: initial_weights)
        for seed in seeds
    }
    reference = model.state_dict()
    what = {"randomize": "fresh_model() builds a model that", "reinit": "initial_weights"}.get(mode)
    needed = [f"{l.name}.{name}" for l in chosen for name in layer_tensors(model, l.name)] if what else []
    for source in sources.values() if what else ():
        missing = [key for key in needed if key not in source]
        shapes = [f"{key}: {tuple(source[key].shape)} there, {tuple(reference[key].shape)} in the model"
                  for key in needed if key in source and source[key].shape != reference[key].shape]  # fmt: skip
        if missing or shapes:
            problems = [f"it lacks {missing[:3]}"] * bool(missing) + [f"other shapes: {shapes[:3]}"] * bool(shapes)
            raise ValueError(f"{what} does not fit the model: {'; '.join(problems)}. It must be the model's architecture, untrained")
    return sources


@dataclass
class _Forward:
    """The model's logits on every image, in batches of ``settings.batch_size``: each batch made
    model input as the workflow makes it (``data.to_model_input`` for uint8; floats normalized
    alike), run under the workflow's ``evaluating``. ``seconds`` is the last call's wall time."""

    model: torch.nn.Module
    images: torch.Tensor
    normalization: Mapping[str, Sequence[float]] | None
    settings: EvalSettings
    device: str
    seconds: float = 0.0

    def _inputs(self) -> Iterable[torch.Tensor]:
        mean = self.normalization.get("mean") if self.normalization else None
        std = self.normalization.get("std") if self.normalization else None
        for start in range(0, len(self.images), self.settings.batch_size):
            batch = self.images[start : start + self.settings.batch_size]
            if batch.dtype == torch.uint8:
                x = to_model_input(batch, mean, std)
            else:  # a copy: the model may write into its input, and the images serve every pass
                x = normalize(batch.to(torch.float32, copy=True), mean, std, inplace=True)
            yield x.contiguous(memory_format=torch.channels_last) if self.device.startswith("cuda") else x

    def __call__(self) -> torch.Tensor:
        started = time.perf_counter()
        with evaluating(self.settings, self.device):
            logits = torch.cat([self.model(x).float() for x in self._inputs()])
        self.seconds = time.perf_counter() - started
        return logits

    def clean(self) -> torch.Tensor:
        """The clean outputs; a model that cannot run on the images says so, naming their shape."""
        try:
            return self()
        except RuntimeError as e:
            raise ValueError(f"images: the model cannot run on images of shape {tuple(self.images.shape[1:])} ({e})") from e
