"""Reading a published checkpoint and converting it to an architecture's exact state_dict.

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

import importlib
import json
import logging
import re
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from layercrit.downloads.cache import SIDECAR_SUFFIX
from layercrit.downloads.errors import SourceError, brief
from layercrit.study import Architecture
from layercrit.models.zoo import CHECKPOINT_HEADER, build_architecture, state_dict_mismatch

log = logging.getLogger(__name__)

_SAFE_GLOBALS_LOCK = threading.Lock()
# Where training scripts put the weights: Lightning and timm's train.py `state_dict`, many
# scripts `model` or `model_state_dict`, BYOL `online_backbone`; EMA copies last (timm's
# `state_dict_ema`, `model_ema`): a file with both evaluates the trained weights unless `key` says.
DEFAULT_STATE_KEYS = ("state_dict", "model_state_dict", "online_backbone", "model", "state_dict_ema", "model_ema")
EMA_KEYS = ("state_dict_ema", "model_ema")
DEFAULT_STRIP_PREFIX = ("module.",)
# Classes a training checkpoint saves beside the weights that carry data, never code: timm's
# train.py saves its arguments as an argparse.Namespace.
DEFAULT_ALLOWED_GLOBALS = ("argparse.Namespace",)
# A reference to one of these is a whole pickled model (torch.save(model, path)), not weights.
MODULE_PACKAGES = ("torch.nn.modules.", "timm.", "torchvision.models.")
SAVE_WEIGHTS = "torch.save(model.state_dict(), path)"


class CheckpointReadError(SourceError):
    """A downloaded file could not be read as a checkpoint."""


class ConversionError(SourceError):
    """The converted state_dict does not fit the architecture."""


def read_checkpoint(path: Path, allowed_globals: Any = (), *, model_id: str = "?", trust_pickle: bool = False) -> Any:
    """Load a checkpoint file: safetensors, or a torch pickle with ``weights_only=True``; with
    ``trust_pickle`` (the zoo source's explicit trust) any pickle, a whole saved model included."""
    path = Path(path)
    if _is_safetensors(path):
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as e:
            raise CheckpointReadError(f"model {model_id!r}: cannot read {path} as safetensors: {e}") from e
    if trust_pickle:
        log.warning("model %s: loading %s as a trusted pickle (trust_pickle: true): it may run code", model_id, path)
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:
            raise CheckpointReadError(f"model {model_id!r}: cannot load {path} (trust_pickle: true): {brief(e)}") from e
    names = _as_list(allowed_globals)
    allowed = [_import_dotted(name, model_id) for name in (*DEFAULT_ALLOWED_GLOBALS, *names)]
    try:
        # safe_globals changes torch's one process-wide allowlist and, on exit, restores what it
        # found: download jobs run as threads of one process, so without the lock one job's exit
        # takes another's allowed globals away in the middle of its load (seen in the paper-scale
        # rehearsal, two Madry checkpoints at once).
        with _SAFE_GLOBALS_LOCK, torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        needed = _unsafe_globals(path, e)
        raise CheckpointReadError(
            f"model {model_id!r}: cannot load {path} with weights_only=True: {_refusal_hint(needed, names, e)}"
        ) from e


def _refusal_hint(needed: list[str], allowed: list[str], error: BaseException) -> str:
    """Why a pickle was refused and what (if anything) is safe to allow.

    Weights and the metadata saved beside them need classes at most (``argparse.Namespace``); a
    reference to a function (``posix.system``, ``builtins.eval``) is how a pickle runs code, so it
    is never suggested. Names are classified by their form (classes are CamelCase), without
    importing anything the file names."""
    if not needed:
        return (
            f"it is not a readable torch checkpoint ({brief(error)}); if the download itself is damaged, "
            f"delete the file and its {SIDECAR_SUFFIX} sidecar to fetch it again"
        )
    classes = [n for n in needed if _looks_like_class(n)]
    functions = [n for n in needed if n not in classes]
    modules = [n for n in classes if n.startswith(MODULE_PACKAGES)]
    if modules and not functions:
        return (
            f"it is a whole pickled model (torch.save(model, path): it references {modules[:3]}"
            f"{' …' if len(modules) > 3 else ''}), which loads only by running code the file carries. Save the "
            f"weights instead: {SAVE_WEIGHTS} (or safetensors.torch.save_file(model.state_dict(), path)); or, if "
            "you trust this file, set trust_pickle: true in its zoo source"
        )
    if functions:
        return (
            f"it references the function(s) {functions}, which weights never need: a pickle calls functions "
            "when it is loaded, so this file may run code. Do not allow them; get the weights from a trusted "
            "source (or as safetensors)"
            + (f". It also references the class(es) {classes}" if classes else "")
        )
    return (
        f"it references the class(es) {classes} outside the weights-only allowlist (metadata saved beside the "
        f"weights); if you trust the file, add them to the source's allowed_globals (now {allowed}). Only "
        "classes can be allowed: weights never need functions"
    )


def _looks_like_class(dotted: str) -> bool:
    return dotted.rpartition(".")[2][:1].isupper()


def convert_state_dict(
    checkpoint: Any, spec: Mapping[str, Any], *, model_id: str = "?", where: str = "checkpoint"
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Apply a file spec's conversion fields (see module docstring); return the state_dict and a record."""
    state, key = _select_state(checkpoint, spec.get("key"), model_id, where)
    keep = _as_list(spec.get("keep_prefix"))
    drop = _as_list(spec.get("drop_containing"))
    rename = [tuple(rule) for rule in spec.get("rename") or []]
    strip = _as_list(spec.get("strip_prefix", list(DEFAULT_STRIP_PREFIX)))
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
        "allowed_globals": _as_list(spec.get("allowed_globals")),
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


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


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


def _import_dotted(name: str, model_id: str) -> Any:
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attribute in parts[cut:]:
                obj = getattr(obj, attribute)
        except AttributeError:
            break
        if not isinstance(obj, type):
            raise SourceError(
                f"model {model_id!r}: allowed_globals: {name!r} is a {type(obj).__name__}, not a class. Only classes "
                "can be allowed: weights never need functions, and allowing one lets the file call it when loaded"
            )
        return obj
    raise SourceError(
        f"model {model_id!r}: allowed_globals: cannot import {name!r} (give a dotted name such as 'argparse.Namespace')"
    )


def _unsafe_globals(path: Path, error: BaseException) -> list[str]:
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception:
        # Legacy (non-zip) files cannot be scanned; the unpickler's message names the first one.
        return re.findall(r"Unsupported global: GLOBAL ([\w.]+)", str(error))


def recorded_metadata(path: Path, *, model_id: str = "?") -> dict[str, Any] | None:
    """What a checkpoint written by this workflow records about itself in its header (e.g. the
    model, seed and recipe it was trained from), kept in the provenance of a model fetched from
    it; None for any other file."""
    path = Path(path)
    if not _is_safetensors(path):
        return None
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        content = (f.metadata() or {}).get(CHECKPOINT_HEADER)
    if content is None:
        return None
    try:
        return json.loads(content).get("metadata") or {}
    except (json.JSONDecodeError, AttributeError) as e:
        raise CheckpointReadError(
            f"model {model_id!r}: {path} has a {CHECKPOINT_HEADER!r} header that is not this workflow's JSON ({brief(e)}); "
            "the file is damaged or not a checkpoint written by layercrit"
        ) from e


def _is_safetensors(path: Path) -> bool:
    if path.name.endswith(".safetensors"):
        return True
    # Files from Drive have no extension: a safetensors file starts with an 8-byte header length
    # and a JSON header; torch files start with a zip ("PK") or pickle (0x80) signature.
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9 or head[:2] == b"PK" or head[:1] == b"\x80":
        return False
    return head[8:9] == b"{" and int.from_bytes(head[:8], "little") < path.stat().st_size
