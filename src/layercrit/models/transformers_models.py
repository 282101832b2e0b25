"""Hugging Face transformers models (image classifiers, causal language models) as architectures
of a zoo.

A zoo entry ``{transformers: <hub id>, revision: <branch, tag or commit>, kwargs: {config
overrides}}`` names a model repository; ``python -m layercrit.zoo layers`` fetches its
``config.json`` (and ``preprocessor_config.json``, where it has one) through the verified download
cache (``layercrit.downloads``: sha256, retries, ``HF_ENDPOINT``, the offline rules) and records in
the layer list what builds the model (``hub_extra``: the config with the overrides applied, the
commit the revision resolved to and the config file's sha256) and what the image processor says
of the input (``processor_input_facts``). Jobs then build the model from that record alone: no
network, no Hub cache. A local directory instead of a repository (``transformers: ./dir``,
``layercrit.study.transformers_directory``) is recorded the same way (``config_extra``), without
revision and commit.

The model is built with ``AutoModelForImageClassification.from_config`` in float32 on the device
the caller chose: transformers' own initializer (``_init_weights``) draws from torch's global RNG,
so ``layercrit.models.zoo.build_architecture`` seeds it as it seeds timm. Its forward returns
the logits tensor (``LogitsForward``), not transformers' output object, since every evaluation
takes ``model(x)`` as the logits; its modules and state-dict keys are the library's own.
(transformers 5 has no torch.fx tracer, and its models' forwards branch on their input's dtype
and shape, so ``layercrit.evaluation.graph`` cannot trace them: their resets run the full
forward pass, and the log says so once.)

What a repository holds is decided from its config, not by a zoo key: a config whose
``architectures`` name a ``…ForCausalLM`` class is a causal language model, recorded in the layer list
as ``extra["task"] = "causal-lm"`` (an image classifier's record has no ``task``, so the records
written before language models existed stay as they are). A causal LM is built with
``AutoModelForCausalLM.from_config``, its forward returns the next-token logits (N, L, V)
(``NextTokenLogitsForward``), and its record also holds the sha256 of its repository's tokenizer
files (``layercrit.models.language_models``), which make the study's token windows.

Published weights (``model.safetensors`` of the repository, through the ``huggingface`` source
kind) are stored in transformers' published key layout, which for many models (ViT among them)
differs from the modules' names in transformers 5; ``to_model_layout`` loads them with
transformers' own key conversion and refuses any tensor missing, unexpected or of another shape.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

import torch

from layercrit.downloads import DownloadSettings, fetch_file, hub_remote
from layercrit.study import Architecture

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
PROCESSOR_FILE = "preprocessor_config.json"
# Config entries that are no part of what builds the model: the label names (num_labels, which
# the config keeps, is), the dtype to load weights in (always float32 here), bookkeeping.
_NOT_BUILDING = ("id2label", "label2id", "dtype", "torch_dtype", "transformers_version", "_name_or_path", "architectures")
# PIL's resampling filters by number, as image processors store them (PIL.Image.Resampling).
_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


class LogitsForward:
    """Mixed in before a transformers classifier's class: ``model(x)`` returns the logits tensor.
    torch.fx traces this forward (the image batch its one argument) where transformers' is traceable."""

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return super().forward(pixel_values=pixel_values).logits


_LOGITS_CLASSES: dict[type, type] = {}


def logits_class(base: type) -> type:
    """``base`` with ``LogitsForward`` (one class per base, named after it)."""
    if base not in _LOGITS_CLASSES:
        _LOGITS_CLASSES[base] = type(base.__name__, (LogitsForward, base), {"__module__": __name__})
    return _LOGITS_CLASSES[base]


# transformers builds and loads models through process-wide state (its loading and init
# contexts): two at once in one process (Snakemake's job threads) can leave a tied weight untied
# (a causal LM's lm_head after loading, seen with transformers 5.25). One at a time.
_BUILDING = threading.RLock()

CAUSAL_LM = "causal-lm"
IMAGE_CLASSIFICATION = "image-classification"


class NextTokenLogitsForward:
    """Mixed in before a transformers causal LM's class: ``model(input_ids)`` returns the
    next-token logits (N, L, V), without a key-value cache (one full pass per window)."""

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return super().forward(input_ids=input_ids, use_cache=False).logits


_NEXT_TOKEN_CLASSES: dict[type, type] = {}


def next_token_class(base: type) -> type:
    """``base`` with ``NextTokenLogitsForward`` (one class per base, named after it)."""
    if base not in _NEXT_TOKEN_CLASSES:
        _NEXT_TOKEN_CLASSES[base] = type(base.__name__, (NextTokenLogitsForward, base), {"__module__": __name__})
    return _NEXT_TOKEN_CLASSES[base]


def task_of(arch: Architecture) -> str:
    """What ``arch`` is: ``CAUSAL_LM`` or ``IMAGE_CLASSIFICATION`` (its layer list's record)."""
    return arch.extra.get("task", IMAGE_CLASSIFICATION)


def config_task(config: dict[str, Any]) -> str:
    """What a repository's config describes: a causal LM where its ``architectures`` (the classes
    it was saved from; save_pretrained writes them) name a ``…ForCausalLM`` class, else an image
    classifier. The model type alone cannot tell: transformers builds many (BERT, ViT's kin) as both."""
    named = config.get("architectures") or []
    return CAUSAL_LM if any(str(name).endswith("ForCausalLM") for name in named) else IMAGE_CLASSIFICATION


def _auto_mapping(arch: Architecture) -> Any:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING, MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING

    return MODEL_FOR_CAUSAL_LM_MAPPING if task_of(arch) == CAUSAL_LM else MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING


def built_config(arch: Architecture) -> Any:
    """The transformers config that builds ``arch`` (from its layer list's record)."""
    from transformers import AutoConfig

    config = dict(arch.extra["config"])
    return AutoConfig.for_model(config.pop("model_type"), **config)


def not_buildable(arch: Architecture) -> str | None:
    """None if transformers builds ``arch``'s config as its task says (an image classifier, or a
    causal LM), else why not."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING, MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING

    model_type = arch.extra.get("config", {}).get("model_type")
    try:
        config = built_config(arch)
    except (ValueError, KeyError) as e:
        return f"transformers cannot read the config of {arch.name} (model_type {model_type!r}): {str(e)[:200]}"
    if task_of(arch) == CAUSAL_LM:
        if type(config) in MODEL_FOR_CAUSAL_LM_MAPPING:
            return None
        return f"{arch.name} is a {model_type!r} model, which transformers has no causal language model for (AutoModelForCausalLM)"
    if type(config) not in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING:
        return (
            f"{arch.name} is a {model_type!r} model, which transformers has no image classifier for "
            "(AutoModelForImageClassification); image classifiers and causal language models (a config whose "
            "architectures name a ...ForCausalLM class) are supported"
        )
    return None


def create(arch: Architecture) -> torch.nn.Module:
    """An untrained image classifier or causal LM of ``arch`` (train mode), its weights drawn by
    transformers' initializer from torch's global RNG."""
    from transformers import AutoModelForCausalLM, AutoModelForImageClassification

    auto, add_forward = (AutoModelForCausalLM, next_token_class) if task_of(arch) == CAUSAL_LM else (AutoModelForImageClassification, logits_class)
    with _BUILDING:
        model = auto.from_config(built_config(arch), dtype=torch.float32)
    model.__class__ = add_forward(type(model))
    return model


class WeightsLayoutError(ValueError):
    """Published weights that do not fit the architecture (the weights' fetching names the model)."""


def _listing(keys: Any, shown: int = 5) -> str:
    keys = sorted(map(str, keys))
    return ", ".join(keys[:shown]) + (f" … ({len(keys) - shown} more)" if len(keys) > shown else "")


def to_model_layout(arch: Architecture, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict as transformers publishes it (``save_pretrained``) in the keys of ``arch``'s
    modules, converted by transformers itself; every tensor must be there, with its shape
    (``WeightsLayoutError`` otherwise)."""
    base = _auto_mapping(arch)[type(built_config(arch))]
    try:
        with _BUILDING:
            model, info = base.from_pretrained(
                None,
                config=built_config(arch),
                state_dict=state_dict,
                output_loading_info=True,
                dtype=torch.float32,
                ignore_mismatched_sizes=True,  # reported in the loading info, refused below with the others
            )
    except (RuntimeError, ValueError) as e:
        raise WeightsLayoutError(f"architecture {arch.id!r}: transformers cannot load these weights into {base.__name__}: {e}") from None
    problems = [f"{len(info[k])} {k.replace('_', ' ')}: {_listing(info[k])}" for k in ("missing_keys", "unexpected_keys", "mismatched_keys") if info.get(k)]
    if problems:
        raise WeightsLayoutError(
            f"architecture {arch.id!r}: the weights do not fit {base.__name__} as its layer list's config builds it "
            f"({'; '.join(problems)}); check the architecture's kwargs (e.g. num_labels) and the weights' repository and revision"
        )
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ----------------------------------------------------------------------------------------------
# The layer-list command: what the Hub repository says


def fetch_hub_json(arch: Architecture, file: str, cache_dir: Path, settings: DownloadSettings | None = None) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """A JSON file of ``arch``'s repository at its revision, through the verified download cache,
    and its download record; None where the repository has no such file."""
    from layercrit.downloads import EntryNotFound

    remote = hub_remote(arch.name, file, arch.extra["revision"], Path(cache_dir))
    try:
        path, record = fetch_file([remote], model_id=arch.id, cache_dir=Path(cache_dir), settings=settings, progress=False)
    except EntryNotFound:
        return None
    return json.loads(Path(path).read_text()), record


def hub_extra(arch: Architecture, config: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    """What builds ``arch`` besides its hub id and kwargs (``Architecture.extra``, recorded in the
    layer list): its revision and the commit it resolved to, and ``config_extra``."""
    return {"revision": arch.extra["revision"], "commit": record.get("hf_commit")} | config_extra(arch, config, record["sha256"])


def config_extra(arch: Architecture, config: dict[str, Any], config_sha256: str) -> dict[str, Any]:
    """What a config file says that builds ``arch`` (all that a local directory's layer list
    records of it): the file's sha256, the config with the zoo's kwargs applied, less what does
    not build the model, and the task where it is a causal LM."""
    built = {k: v for k, v in config.items() if k not in _NOT_BUILDING}
    if "id2label" in config and "num_labels" not in built:
        built["num_labels"] = len(config["id2label"])
    built |= arch.kwargs
    task = config_task(config)
    return {
        "config_sha256": config_sha256,
        "config": dict(sorted(built.items())),
        **({"task": task} if task == CAUSAL_LM else {}),
    }


def processor_input_facts(model: torch.nn.Module, config: dict[str, Any], processor: dict[str, Any] | None) -> dict[str, Any]:
    """The layer list's input facts (the keys ``layercrit.models.zoo.model_input_facts`` gives
    for timm) from a model, its config and its image-processor config: mean/std, the resize
    filter, the shorter side it resizes to and the centre crop, and whether the model takes only
    the size it was built for (position embeddings of a fixed patch grid, as a ViT's)."""
    processor = processor or {}
    facts: dict[str, Any] = {}
    if processor.get("do_normalize", True) and "image_mean" in processor and "image_std" in processor:
        facts["mean"], facts["std"] = list(processor["image_mean"]), list(processor["image_std"])
    if processor.get("resample") in _RESAMPLE:
        facts["interpolation"] = _RESAMPLE[processor["resample"]]
    size = processor.get("size") or {}
    if isinstance(size, int):
        size = {"shortest_edge": size}
    resize = size.get("shortest_edge") or (size.get("height") if size.get("height") == size.get("width") else None)
    crop = processor.get("crop_size") if processor.get("do_center_crop") else None
    crop = crop.get("height") if isinstance(crop, dict) and crop.get("height") == crop.get("width") else crop
    if processor.get("crop_pct") and resize and not crop:  # ConvNeXt's: resize to shortest_edge / crop_pct, crop
        crop, resize = resize, int(resize / processor["crop_pct"])
    built_for = config.get("image_size")
    if isinstance(built_for, (list, tuple)):
        built_for = built_for[0] if len(set(built_for)) == 1 else None
    fixed = built_for is not None and any("position_embedding" in name for name, _ in model.named_parameters())
    side = built_for if fixed else crop or resize or built_for
    facts["input_size"] = [side, side] if isinstance(side, int) else None
    if resize and side:
        facts["resize"] = max(int(resize), side)
    facts["fixed_input_size"] = fixed
    return facts
