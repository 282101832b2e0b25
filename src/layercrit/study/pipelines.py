"""Input pipelines: how the evaluation images are made from image files for a model.

A pipeline resizes the shorter side, crops the centre and keeps uint8 pixels. A study either
prepares its images once for every model (``data.pipeline: study``: ``data.resize``,
``data.crop``, bilinear, as the paper did), or once per distinct pipeline of its models
(``per_model``): each model as its zoo entry's ``input`` says, else as its architecture's
pretrained config does (timm's ``input_size``, ``crop_pct`` and ``interpolation``, recorded in
the layer list): a timm ViT sees bicubic 248 → 224 images, as its authors evaluated it, and
reaches their accuracy. Normalization (mean, std) is no part of a pipeline: it travels in the
model's checkpoint and is applied at evaluation time (``layercrit.data.to_model_input``), so
models that differ only in it share one file.

Torch-free: the workflow resolves every model's pipeline while it is parsed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

STUDY = "study"
PER_MODEL = "per_model"
# timm's names for the resize filters (timm.data.transforms.str_to_interp_mode); each is also
# the value of torchvision's InterpolationMode of that filter.
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")
# timm's crop_pct where a pretrained config gives none (timm.data.constants.DEFAULT_CROP_PCT).
DEFAULT_CROP_PCT = 0.875
# The paper's (and torchvision's ImageNet evaluation's) filter: data.pipeline study uses it.
STUDY_INTERPOLATION = "bilinear"


class PipelineError(ValueError):
    """A pipeline that cannot prepare a model's images; the message names the setting to change."""


@dataclass(frozen=True)
class InputPipeline:
    """Shorter side resized to ``resize`` with ``interpolation``, then the centre ``crop`` × ``crop``."""

    resize: int
    crop: int
    interpolation: str = STUDY_INTERPOLATION

    @property
    def name(self) -> str:
        """The pipeline in a file name: ``bicubic-resize248-crop224``."""
        return f"{self.interpolation}-resize{self.resize}-crop{self.crop}"

    def check(self, where: str) -> None:
        """Refuse what would not give the crop from real pixels (``where`` names the setting)."""
        if self.interpolation not in INTERPOLATIONS:
            raise PipelineError(f"{where}: interpolation {self.interpolation!r} is not one of {list(INTERPOLATIONS)}")
        if self.crop > self.resize:
            raise PipelineError(
                f"{where}: a {self.crop}-pixel centre crop of images resized to {self.resize} pixels (shorter side) "
                f"would be padded with black borders; resize to at least {self.crop}"
            )


def timm_resize(crop: int, crop_pct: float) -> int:
    """The shorter side timm resizes to before its centre crop (transforms_imagenet_eval)."""
    return math.floor(crop / crop_pct)


def study_pipeline(data: dict[str, Any]) -> InputPipeline:
    """The one pipeline of ``data.pipeline: study`` (the paper's)."""
    return InputPipeline(data["resize"], data["crop"], STUDY_INTERPOLATION)


def model_pipeline(model_id: str, given: dict[str, Any] | None, arch_input: dict[str, Any], arch: str) -> InputPipeline:
    """The pipeline of ``per_model``: the zoo entry's ``input`` (``given``) if it has one, else
    its architecture's pretrained config (``arch_input``, the layer list's header; ``arch``
    names the architecture in messages)."""
    if given is not None:
        where = f"zoo.models.{model_id}.input"
        if ("resize" in given) == ("crop_pct" in given):
            raise PipelineError(f"{where}: give either resize (pixels) or crop_pct (resize = floor(crop / crop_pct)), not both or neither")
        resize = given["resize"] if "resize" in given else timm_resize(given["crop"], given["crop_pct"])
        pipeline = InputPipeline(resize, given["crop"], given["interpolation"])
        fixed = arch_input.get("input_size") if arch_input.get("fixed_input_size") else None
        if fixed and [pipeline.crop] * 2 != list(fixed):
            raise PipelineError(
                f"{where}: crop {pipeline.crop}, but architecture {arch!r} takes only {fixed[0]}x{fixed[1]} input "
                f"(it was built for that size); set crop to {fixed[0]}"
            )
    else:
        where = f"architecture {arch!r} (its layer list's pretrained config)"
        size = arch_input.get("input_size")
        if not size:
            raise PipelineError(
                f"zoo.models.{model_id}.input: not given, and {where} has no input size (a torchvision architecture "
                "has no pretrained config): say how its images are prepared, e.g. input: {crop: 224, resize: 256, "
                "interpolation: bilinear}, or set data.pipeline: study"
            )
        if size[0] != size[1]:
            raise PipelineError(
                f"zoo.models.{model_id}.input: not given, and {where} takes {size[0]}x{size[1]} input; the evaluation "
                "images are square: give the model an input with a square crop"
            )
        # timm's own defaults where its config is silent (timm.data.resolve_data_config); an
        # image processor's (transformers) gives the resized side itself
        crop_pct = arch_input.get("crop_pct") or DEFAULT_CROP_PCT
        resize = arch_input.get("resize") or timm_resize(size[0], crop_pct)
        pipeline = InputPipeline(resize, size[0], arch_input.get("interpolation") or "bicubic")
    pipeline.check(where)
    return pipeline
