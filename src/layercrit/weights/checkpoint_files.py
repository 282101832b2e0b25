"""Reading a published checkpoint file without running code it may carry: safetensors, or a torch
pickle loaded with ``weights_only=True`` and only the classes the zoo allows (``trust_pickle``
is the one way around it); what a refused file is and what to do about it; and what a
checkpoint written by this workflow records about itself. Converting what was read is
``layercrit.weights.conversion``'s.
"""

from __future__ import annotations

import importlib
import json
import logging
import re
import threading
from pathlib import Path
from typing import Any

import torch

from layercrit.downloads.cache import SIDECAR_SUFFIX
from layercrit.downloads.errors import SourceError, brief
from layercrit.models.zoo import CHECKPOINT_HEADER

log = logging.getLogger(__name__)

_SAFE_GLOBALS_LOCK = threading.Lock()
# Classes a training checkpoint saves beside the weights that carry data, never code: timm's
# train.py saves its arguments as an argparse.Namespace.
DEFAULT_ALLOWED_GLOBALS = ("argparse.Namespace",)
# A reference to one of these is a whole pickled model (torch.save(model, path)), not weights.
MODULE_PACKAGES = ("torch.nn.modules.", "timm.", "torchvision.models.")
SAVE_WEIGHTS = "torch.save(model.state_dict(), path)"


class CheckpointReadError(SourceError):
    """A downloaded file could not be read as a checkpoint."""


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
    names = as_list(allowed_globals)
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


def as_list(value: Any) -> list[str]:
    """A spec field that takes one string or a list, as a list."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


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
