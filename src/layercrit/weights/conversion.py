"""Converting a published checkpoint to an architecture's exact state_dict (reading the file is
``layercrit.weights.checkpoint_files``'s).

It exists apart from the downloads (:mod:`layercrit.downloads`) and the source kinds
(:mod:`layercrit.weights.sources`) because every kind delivers the same problem: a file laid out the way
its authors saved it (wrapped in a training checkpoint, with ``module.`` prefixes, an attacker's
copy, another library's key names) that must become the plain state_dict of the architecture,
read without running code the file might carry.

A file spec's conversion fields (their types are the zoo schema's, ``workflow/schemas/``) are
applied in this order:

1. ``key``: the checkpoint entry holding the state_dict. Default: the first of ``state_dict``,
   ``model_state_dict``, ``online_backbone``, ``model``, ``state_dict_ema``, ``model_ema`` that
   exists and is a dict, else the checkpoint itself. A Lightning checkpoint's keys lose the
   attribute the LightningModule held the model under (``model.``) when no prefix rule is given.
2. ``keep_prefix``: a prefix (or list); only keys starting with one are kept (e.g. Madry's
   ``module.model.``, which drops the attacker's copy and the normalizer).
3. ``drop_containing``: substrings; keys containing any are dropped (e.g. ``aux_bn``).
4. ``rename``: ``[[old_prefix, new_prefix], ...]``, each applied in order to the result of the
   previous. Renaming runs *before* stripping so that rules can name keys as they appear in the
   published file (``[["module.linear.", "fc."]]``).
5. ``strip_prefix``: prefixes, each removed where a key starts with it, in order
   (default ``["module."]``, the DataParallel wrapper).
6. ``mapping``: a named key mapping for layouts no prefix rule can express (``simclrv2``).

``allowed_globals`` lists dotted names that the file's pickle may reference (``argparse.Namespace``,
which timm's train.py saves, always is); they are allowed through
``torch.serialization.safe_globals`` while loading with ``weights_only=True``. Only a zoo source's
``trust_pickle: true`` switches that off, for a whole pickled model (``torch.save(model, path)``)
from a trusted hand; without it such a file is refused with the line that saves its weights. ``strict: false`` tolerates keys the
architecture does not have: they are dropped and listed in the checkpoint's metadata. A missing
tensor or a wrong shape is always an error, because the canonical checkpoint must fill the whole
architecture. The one exception: BatchNorm's ``num_batches_tracked`` counter, absent from some
checkpoints, is filled with 0 (it only matters for training with ``momentum=None``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

import torch

from layercrit.downloads.errors import SourceError
from layercrit.models.zoo import build_architecture, state_dict_mismatch
from layercrit.study import Architecture
from layercrit.weights.checkpoint_files import (
    DEFAULT_ALLOWED_GLOBALS,
    MODULE_PACKAGES,
    SAVE_WEIGHTS,
    CheckpointReadError,
    as_list,
    read_checkpoint,
    recorded_metadata,
)

# with the names of checkpoint_files that were defined here before it was split out
__all__ = [
    "DEFAULT_STATE_KEYS", "EMA_KEYS", "DEFAULT_STRIP_PREFIX", "KEY_MAPPINGS", "ConversionError", "convert_state_dict",
    "fit_to_architecture", "lightning_prefix", "listing",
    "DEFAULT_ALLOWED_GLOBALS", "MODULE_PACKAGES", "SAVE_WEIGHTS", "CheckpointReadError", "read_checkpoint",
    "recorded_metadata",
]  # fmt: skip

log = logging.getLogger(__name__)

# Where training scripts put the weights: Lightning and timm's train.py `state_dict`, many
# scripts `model` or `model_state_dict`, BYOL `online_backbone`; EMA copies last (timm's
# `state_dict_ema`, `model_ema`): a file with both evaluates the trained weights unless `key` says.
DEFAULT_STATE_KEYS = ("state_dict", "model_state_dict", "online_backbone", "model", "state_dict_ema", "model_ema")
EMA_KEYS = ("state_dict_ema", "model_ema")
DEFAULT_STRIP_PREFIX = ("module.",)


class ConversionError(SourceError):
    """The converted state_dict does not fit the architecture."""


def convert_state_dict(
    checkpoint: Any, spec: Mapping[str, Any], *, model_id: str = "?", where: str = "checkpoint"
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Apply a file spec's conversion fields (see module docstring); return the state_dict and a record."""
    state, key = _select_state(checkpoint, spec.get("key"), model_id, where)
    keep = as_list(spec.get("keep_prefix"))
    drop = as_list(spec.get("drop_containing"))
    rename = [tuple(rule) for rule in spec.get("rename") or []]
    strip = as_list(spec.get("strip_prefix", list(DEFAULT_STRIP_PREFIX)))
    lightning = lightning_prefix(checkpoint, state)
    if lightning and not any(spec.get(f) for f in ("keep_prefix", "rename", "strip_prefix", "mapping")):
        strip = [*strip, lightning]  # Lightning's attribute name, as its own load_from_checkpoint strips
    mapping_name = spec.get("mapping")
    mapping = KEY_MAPPINGS[mapping_name] if mapping_name else None

    result: dict[str, torch.Tensor] = {}
    source_of: dict[str, str] = {}
    dropped = 0
    for name, value in state.items():
        if (keep and not any(name.startswith(p) for p in keep)) or any(s in name for s in drop):
            dropped += 1
            continue
        if not isinstance(value, torch.Tensor):
            raise ConversionError(
                f"model {model_id!r}: {where}: entry {name!r} of the selected state_dict is a "
                f"{type(value).__name__}, not a tensor; set 'key' to the entry that holds the weights"
            )
        new = name
        for old, replacement in rename:
            if new.startswith(old):
                new = replacement + new[len(old) :]
        for prefix in strip:
            if new.startswith(prefix):
                new = new[len(prefix) :]
        if mapping is not None:
            new = mapping(new)
        if new in result:
            raise ConversionError(f"model {model_id!r}: {where}: keys {source_of[new]!r} and {name!r} both become {new!r}")
        result[new] = value
        source_of[new] = name
    record = {
        "key": key,
        "keep_prefix": keep,
        "drop_containing": drop,
        "rename": [list(r) for r in rename],
        "strip_prefix": strip,
        "mapping": mapping_name,
        "strict": bool(spec.get("strict", True)),
        "allowed_globals": as_list(spec.get("allowed_globals")),
        "trust_pickle": bool(spec.get("trust_pickle", False)),
        "tensors": len(result),
        "dropped": dropped,
    }
    return result, record


def fit_to_architecture(
    state_dict: Mapping[str, torch.Tensor],
    arch: Architecture,
    *,
    model_id: str = "?",
    lenient_keys: set[str] | frozenset[str] = frozenset(),
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Check ``state_dict`` against every tensor of ``arch``; return it in the architecture's order.

    Missing tensors, wrong shapes and unexpected keys (except ``lenient_keys``, which are dropped
    and reported) raise :class:`ConversionError` listing the keys. Missing BatchNorm
    ``num_batches_tracked`` counters are filled with 0.
    """
    # The meta device gives names, shapes and dtypes without allocating or initializing weights.
    with torch.device("meta"):
        reference = build_architecture(arch).state_dict()
    state = dict(state_dict)
    filled = []
    for name, ref in reference.items():
        if name.endswith(".num_batches_tracked") and name not in state:
            if name[: -len("num_batches_tracked")] + "running_mean" in state:
                state[name] = torch.zeros((), dtype=ref.dtype)
                filled.append(name)
    missing, unexpected, reshaped = state_dict_mismatch(state, reference)
    unexpected = sorted(unexpected)
    tolerated = [k for k in unexpected if k in lenient_keys]
    unexpected = [k for k in unexpected if k not in lenient_keys]
    shapes = [f"{k}: checkpoint {ours} vs architecture {theirs}" for k, ours, theirs in reshaped]
    if missing or unexpected or shapes:
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing key(s): {listing(missing)}")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected key(s): {listing(unexpected)}")
        if shapes:
            problems.append(f"{len(shapes)} shape mismatch(es): {listing(shapes)}")
        if missing and unexpected:
            # Point at the prefix to fix: where does the first missing tensor appear instead?
            lookalikes = sorted((k for k in unexpected if k.endswith("." + missing[0])), key=lambda k: (len(k), k))
            if lookalikes:
                problems.append(f"hint: {missing[0]!r} is present as {listing(lookalikes, 5)}")
        raise ConversionError(
            f"model {model_id!r}: the converted state_dict does not fit architecture {arch.id!r}: "
            + "; ".join(problems)
            + ". Adjust the source's conversion fields (key, keep_prefix, drop_containing, rename, strip_prefix, mapping)."
        )
    cast = {}
    out = {}
    storages: set[int] = set()
    for name, ref in reference.items():
        tensor = state[name]
        if tensor.dtype != ref.dtype:
            cast[name] = f"{tensor.dtype} -> {ref.dtype}".replace("torch.", "")
            tensor = tensor.to(ref.dtype)
        # safetensors refuses tensors that share memory (tied or sliced weights in a pickle).
        pointer = tensor.untyped_storage().data_ptr()
        if pointer in storages:
            tensor = tensor.clone()
        storages.add(tensor.untyped_storage().data_ptr())
        out[name] = tensor
    if tolerated:
        log.warning(
            "model %s: dropped %d key(s) the architecture lacks (strict: false): %s",
            model_id,
            len(tolerated),
            listing(tolerated),
        )
    return out, {"dropped_unexpected_keys": tolerated, "filled_num_batches_tracked": filled, "cast": cast}


# ----------------------------------------------------------------------------------------------
# Key mappings no prefix rule can express. Keys a mapping does not recognize pass unchanged (and
# then show up as unexpected keys if they are wrong).

_SIMCLR_BLOCK_PARTS = (
    ("net.0.", "conv1."),
    ("net.1.0.", "bn1."),
    ("net.2.", "conv2."),
    ("net.3.0.", "bn2."),
    ("net.4.", "conv3."),
    ("net.5.0.", "bn3."),
    ("projection.shortcut.", "downsample.0."),
    ("projection.bn.0.", "downsample.1."),
)
_SIMCLR_BLOCK = re.compile(r"net\.(\d+)\.blocks\.(\d+)\.(.+)")


def _simclrv2_key(name: str) -> str:
    """SimCLRv2 (TF checkpoint converted to PyTorch) ResNet names -> torchvision/timm names."""
    for old, new in (("net.0.0.", "conv1."), ("net.0.1.0.", "bn1.")):
        if name.startswith(old):
            return new + name[len(old) :]
    match = _SIMCLR_BLOCK.fullmatch(name)
    if match:
        stage, block, rest = match.groups()
        for old, new in _SIMCLR_BLOCK_PARTS:
            if rest.startswith(old):
                rest = new + rest[len(old) :]
                break
        return f"layer{stage}.{block}.{rest}"
    return name


KEY_MAPPINGS: dict[str, Callable[[str], str]] = {"simclrv2": _simclrv2_key}  # the zoo schema's `mapping` enum


# ----------------------------------------------------------------------------------------------
# Helpers


def _weights(value: Any) -> Mapping[str, Any] | None:
    """The state_dict a checkpoint entry stands for: a dict, or a whole model's (trusted pickle)."""
    if isinstance(value, torch.nn.Module):
        return value.state_dict()
    return value if isinstance(value, Mapping) else None


def _select_state(checkpoint: Any, key: str | None, model_id: str, where: str) -> tuple[Mapping[str, Any], str | None]:
    whole = _weights(checkpoint)
    if whole is None:
        raise ConversionError(
            f"model {model_id!r}: {where} holds a {type(checkpoint).__name__}, not a dict of tensors; save the weights "
            f"as {SAVE_WEIGHTS}"
        )
    if isinstance(checkpoint, torch.nn.Module):
        return whole, None
    if key is not None:
        state = _weights(checkpoint.get(key))
        if state is None:
            raise ConversionError(
                f"model {model_id!r}: {where} has no dict entry {key!r}; its entries: {listing(list(checkpoint))}"
            )
        return state, key
    for candidate in DEFAULT_STATE_KEYS:
        state = _weights(checkpoint.get(candidate))
        if state is not None:
            ema = [k for k in EMA_KEYS if k != candidate and isinstance(checkpoint.get(k), (Mapping, torch.nn.Module))]
            if ema:
                log.info("model %s: %s also holds EMA weights (%s): key: %s evaluates those", model_id, where, ema[0], ema[0])
            return state, candidate
    return checkpoint, None


def lightning_prefix(checkpoint: Any, state: Mapping[str, Any]) -> str | None:
    """The attribute a LightningModule held the model under (``model.`` of ``model.conv1.weight``),
    where ``checkpoint`` is a Lightning checkpoint and every key of its state_dict starts with it."""
    if not isinstance(checkpoint, Mapping) or "pytorch-lightning_version" not in checkpoint or not state:
        return None
    heads = {name.partition(".")[0] for name in state}
    return f"{heads.pop()}." if len(heads) == 1 and all("." in name for name in state) else None


def listing(items: list[str], limit: int = 40) -> str:
    """``items`` comma-separated, the first ``limit`` of them."""
    shown = ", ".join(map(str, items[:limit]))
    return shown + (f", … ({len(items) - limit} more)" if len(items) > limit else "")
