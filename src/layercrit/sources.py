"""Fetch a model's published weights and turn them into its canonical checkpoint.

A zoo entry's ``source`` says where the weights live and how the published file is laid out;
:func:`fetch_model` downloads the file(s) into a cache, converts them to the plain state_dict of
the architecture, checks that the result fills the architecture exactly and writes the canonical
checkpoint (:func:`layercrit.zoo.save_checkpoint`). Adding a model is YAML, never Python.

Source kinds
------------
``{kind: url, url: https://...}``
    A file on a web server; or ``file:///path`` or a plain path (absolute, or relative to the
    working directory) for files kept on a shared file system by clusters without internet.
    A local file is copied into the cache and verified exactly like a download.
``{kind: torchvision, weights: ResNet50_Weights.IMAGENET1K_V1}``
    torchvision's URL for those weights (``torchvision.models.get_weight``), downloaded like
    ``url``. torchvision names its files ``<name>-<sha256 prefix>.pth``; the prefix is verified,
    as torchvision itself does, unless the spec gives a ``sha256``, which then replaces it.
``{kind: huggingface, repo: owner/name, file: path/in/repo, revision: main}``
    A file of a Hugging Face Hub repository (``hf_hub_download``). The commit the revision
    resolved to is recorded; for LFS files the Hub's sha256 (the ETag) is verified.
``{kind: timm, tag: resnet50.a1_in1k}``
    timm's pretrained weights for that tag, located with timm's own pretrained config
    (``hf_hub_id`` and file; like timm, ``model.safetensors`` is preferred over
    ``pytorch_model.bin``), downloaded like ``huggingface``.
``{kind: gdrive, id: <Google Drive file id>}``
    A public Google Drive file, downloaded with ``gdown`` (which handles Drive's
    virus-scan confirmation page for large files).
``{kind: pair, backbone: <spec>, head: <spec>}``
    Two files whose converted state_dicts are merged (e.g. a self-supervised backbone and its
    linear probe). A key produced by both is an error.

Every file spec may carry ``sha256`` (full hex digest, or a prefix of at least 8 hex digits) and
these conversion fields, applied in this order:

1. ``key``: the checkpoint entry holding the state_dict. Default: the first of ``state_dict``,
   ``model_state_dict``, ``online_backbone``, ``model`` that exists and is a dict, else the
   checkpoint itself.
2. ``keep_prefix``: a prefix (or list); only keys starting with one are kept (e.g. Madry's
   ``module.model.``, which drops the attacker's copy and the normalizer).
3. ``drop_containing``: substrings; keys containing any are dropped (e.g. ``aux_bn``).
4. ``rename``: ``[[old_prefix, new_prefix], ...]``, each applied in order to the result of the
   previous. Renaming runs *before* stripping so that rules can name keys as they appear in the
   published file (``[["module.linear.", "fc."]]``).
5. ``strip_prefix``: prefixes, each removed where a key starts with it, in order
   (default ``["module."]``, the DataParallel wrapper).
6. ``mapping``: a named key mapping for layouts no prefix rule can express (``simclrv2``).

``allowed_globals`` lists dotted names (e.g. ``argparse.Namespace``) that the file's pickle may
reference; they are allowed through ``torch.serialization.safe_globals`` while loading with
``weights_only=True``, which is never switched off. ``strict: false`` tolerates keys the
architecture does not have: they are dropped and listed in the checkpoint's metadata. A missing
tensor or a wrong shape is always an error, because the canonical checkpoint must fill the whole
architecture. The one exception: BatchNorm's ``num_batches_tracked`` counter, absent from some
checkpoints, is filled with 0 (it only matters for training with ``momentum=None``).

Downloads and the cache
-----------------------
Files are cached under ``cache_dir`` by their public address (``<host>/<path>``,
``huggingface.co/<repo>/<revision>/<file>``, ``drive.google.com/<id>``), each with a sidecar
``<file>.fetch.json`` recording its sha256, size, address and time. A file is downloaded to a
hidden temporary name, checked (Content-Length, HTML-instead-of-checkpoint, sha256) and only then
renamed into place, so a killed or truncated download never looks complete; the next run starts
it over. Transient failures (connection errors, truncated bodies, HTTP 408/429/5xx) are retried
with exponential backoff; other errors (404, permission, Drive quota) are not.

Later runs trust a cached file only if it still matches its recorded sha256 (no network then).
A file that does not match is moved aside to ``<file>.bad-<hash8>`` and downloaded again, and the
new download must match the recorded hash (or the zoo's ``sha256``, which takes precedence);
otherwise it, too, is moved aside and :class:`ChecksumError` names the model, the address and
both hashes. A file put into the cache by hand (for machines without internet) is adopted, and
verified against the zoo's ``sha256`` when there is one.

Settings (:class:`DownloadSettings`, by default from the environment):

``LAYERCRIT_URL_REWRITE``
    JSON object mapping URL prefixes to replacements, applied (longest prefix first) to the
    addresses of ``url``, ``torchvision`` and ``gdrive`` sources before downloading, e.g.
    ``{"https://dl.fbaipublicfiles.com/": "http://mirror.local/fb/"}`` or, for a mirror on a
    shared file system, ``{"https://dl.fbaipublicfiles.com/": "file:///shared/mirror/fb/"}``. The cache path and the
    recorded ``url`` stay the public address. A Drive file's address is
    ``https://drive.google.com/uc?id=<id>``; rewritten, it is fetched as a plain file (a mirror
    serves files, not Drive's confirmation pages).
``HF_ENDPOINT``
    huggingface_hub's own setting for a Hub mirror (or ``DownloadSettings.hf_endpoint``).
``LAYERCRIT_DOWNLOAD_RETRIES``, ``LAYERCRIT_DOWNLOAD_BACKOFF``, ``LAYERCRIT_DOWNLOAD_TIMEOUT``
    Retries after the first attempt (default 5), first backoff in seconds (2, doubled each
    retry, at most 60) and network timeout in seconds (60).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

import requests
import tenacity
import torch
from filelock import FileLock
from tqdm.auto import tqdm

from layercrit.io import file_sha256, provenance, write_json
from layercrit.study import Architecture
from layercrit.zoo import build_architecture, save_checkpoint

log = logging.getLogger(__name__)

DEFAULT_STATE_KEYS = ("state_dict", "model_state_dict", "online_backbone", "model")
DEFAULT_STRIP_PREFIX = ("module.",)
CONVERSION_FIELDS = frozenset(
    {"key", "keep_prefix", "drop_containing", "rename", "strip_prefix", "mapping", "strict", "allowed_globals"}
)
FILE_KIND_FIELDS = {
    "url": {"url"},
    "torchvision": {"weights"},
    "huggingface": {"repo", "file", "revision"},
    "timm": {"tag", "file", "revision"},
    "gdrive": {"id"},
}
REQUIRED_FIELDS = {"url": "url", "torchvision": "weights", "huggingface": "repo", "timm": "tag", "gdrive": "id"}
PAIR_ROLES = ("backbone", "head")
# HTTP statuses worth another attempt: timeouts, rate limits, server-side trouble.
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
SIDECAR_SUFFIX = ".fetch.json"
CHUNK = 1 << 20

ENV_URL_REWRITE = "LAYERCRIT_URL_REWRITE"
ENV_RETRIES = "LAYERCRIT_DOWNLOAD_RETRIES"
ENV_BACKOFF = "LAYERCRIT_DOWNLOAD_BACKOFF"
ENV_TIMEOUT = "LAYERCRIT_DOWNLOAD_TIMEOUT"


class SourceError(Exception):
    """A model's weights could not be fetched or converted; the message names the model."""


class DownloadError(SourceError):
    """A download failed (after retries, where retrying made sense)."""


class EntryNotFound(DownloadError):
    """The host answered that the file does not exist."""


class ChecksumError(SourceError):
    """A file's sha256 differs from the expected one; the file was moved aside."""


class CheckpointReadError(SourceError):
    """A downloaded file could not be read as a checkpoint."""


class ConversionError(SourceError):
    """The converted state_dict does not fit the architecture."""


class _IncompleteDownload(Exception):
    """Fewer bytes arrived than announced (transient: retried)."""


@dataclass(frozen=True)
class DownloadSettings:
    """Where and how persistently to download; see the module docstring for the variables."""

    mirrors: Mapping[str, str] = field(default_factory=dict)
    hf_endpoint: str | None = None
    retries: int = 5
    backoff: float = 2.0
    max_backoff: float = 60.0
    timeout: float = 60.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DownloadSettings:
        """Settings from ``LAYERCRIT_*`` environment variables (and ``HF_ENDPOINT``)."""
        env = os.environ if environ is None else environ
        mirrors: dict[str, str] = {}
        if env.get(ENV_URL_REWRITE, "").strip():
            try:
                mirrors = json.loads(env[ENV_URL_REWRITE])
            except json.JSONDecodeError as e:
                raise SourceError(f"{ENV_URL_REWRITE} is not valid JSON ({e}); expected an object {{prefix: replacement}}") from e
            if not isinstance(mirrors, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in mirrors.items()):
                raise SourceError(f"{ENV_URL_REWRITE} must be a JSON object mapping URL prefixes to replacement strings")

        def number(name: str, default: float, kind: type) -> Any:
            raw = env.get(name, "").strip()
            try:
                return kind(raw) if raw else default
            except ValueError:
                raise SourceError(f"{name}={raw!r} is not a valid {kind.__name__}") from None

        return cls(
            mirrors=mirrors,
            hf_endpoint=env.get("HF_ENDPOINT") or None,
            retries=number(ENV_RETRIES, cls.retries, int),
            backoff=number(ENV_BACKOFF, cls.backoff, float),
            timeout=number(ENV_TIMEOUT, cls.timeout, float),
        )

    def rewrite(self, url: str) -> str:
        """``url`` with its longest matching mirror prefix replaced (unchanged if none matches)."""
        for prefix in sorted(self.mirrors, key=len, reverse=True):
            if url.startswith(prefix):
                return self.mirrors[prefix] + url[len(prefix) :]
        return url


# ----------------------------------------------------------------------------------------------
# Public API


def fetch_model(
    model: Mapping[str, Any],
    arch: Architecture,
    *,
    cache_dir: Path,
    out: Path,
    progress: bool = True,
    settings: DownloadSettings | None = None,
) -> dict[str, Any]:
    """Download ``model["source"]`` into ``cache_dir``, convert it to ``arch`` and write ``out``.

    ``model`` is a zoo entry (``id``, ``source``, ``normalization``). Returns the metadata stored
    in the checkpoint: source, address, sha256 and size of every file, the conversion applied,
    dropped or filled keys, and versions.
    """
    if not isinstance(model, Mapping):
        model = dataclasses.asdict(model)
    model_id = str(model.get("id", "?"))
    settings = settings or DownloadSettings.from_env()
    cache_dir = Path(cache_dir)
    parts = source_parts(model.get("source"), model_id)

    state_dict: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    files, conversions = [], []
    for role, spec in parts:
        path, record = fetch_file(spec, model_id=model_id, cache_dir=cache_dir, settings=settings, progress=progress, role=role)
        files.append(record)
        checkpoint = read_checkpoint(path, spec.get("allowed_globals", ()), model_id=model_id)
        part_sd, conversion = convert_state_dict(checkpoint, spec, model_id=model_id, where=f"{role} file {path.name}")
        conversions.append({"role": role, **conversion})
        clash = sorted(set(part_sd) & set(state_dict))
        if clash:
            raise ConversionError(
                f"model {model_id!r}: the {role} and the {origin[clash[0]]} both provide key(s) {_listing(clash)}; "
                "a pair must split the weights between its files (fix keep_prefix/drop_containing)"
            )
        state_dict.update(part_sd)
        origin.update(dict.fromkeys(part_sd, role))

    lenient = {role for role, spec in parts if not spec.get("strict", True)}
    state_dict, fit = fit_to_architecture(
        state_dict, arch, model_id=model_id, lenient_keys={k for k, r in origin.items() if r in lenient}
    )

    record = provenance(
        model=model_id,
        architecture=arch.id,
        source=dict(model["source"]),
        files=files,
        conversion=conversions,
        **fit,
        download_tools=_tool_versions(),
    )
    save_checkpoint(out, state_dict, model.get("normalization"), record)
    log.info("model %s: wrote %s (%d tensors)", model_id, out, len(state_dict))
    return record


def source_parts(source: Any, model_id: str) -> list[tuple[str, dict[str, Any]]]:
    """The (role, file spec) pairs of a source: one ``weights`` file, or a pair's two files."""
    if not isinstance(source, Mapping) or "kind" not in source:
        raise SourceError(f"model {model_id!r}: 'source' must be a mapping with a 'kind'; got {source!r}")
    kind = source["kind"]
    if kind == "pair":
        extra = set(source) - {"kind", *PAIR_ROLES}
        missing = [r for r in PAIR_ROLES if r not in source]
        if extra or missing:
            raise SourceError(
                f"model {model_id!r}: a 'pair' source has exactly the fields {list(PAIR_ROLES)}; "
                f"unknown: {sorted(extra)}, missing: {missing}"
            )
        parts = [(role, dict(source[role])) for role in PAIR_ROLES]
    else:
        parts = [("weights", dict(source))]
    for role, spec in parts:
        _validate_file_spec(spec, model_id, role)
    return parts


def fetch_file(
    spec: Mapping[str, Any],
    *,
    model_id: str,
    cache_dir: Path,
    settings: DownloadSettings | None = None,
    progress: bool = True,
    role: str = "weights",
    sha256_origin: str | None = None,
) -> tuple[Path, dict[str, Any]]:
    """The cached, verified local copy of one file spec (downloading it if needed) and its record.

    ``sha256_origin`` names where the spec's ``sha256`` came from in messages (default: the zoo)."""
    settings = settings or DownloadSettings.from_env()
    cache_dir = Path(cache_dir)
    candidates = _remotes(spec, cache_dir)
    if sha256_origin and spec.get("sha256"):
        for remote in candidates:
            remote.expected_origin = sha256_origin
    # A candidate already in the cache wins without any network access (timm's alternatives).
    cached = [r for r in candidates if r.dest.is_file()]
    for remote in cached or candidates:
        try:
            path, record = _ensure_file(remote, model_id=model_id, settings=settings, progress=progress)
        except EntryNotFound:
            if remote is candidates[-1] or cached:
                raise
            log.info("model %s: %s does not exist, trying the next candidate", model_id, remote.url)
            continue
        record = {"role": role, "kind": spec["kind"], **record, "cache_path": str(path.relative_to(cache_dir))}
        return path, record
    raise AssertionError("unreachable")


def read_checkpoint(path: Path, allowed_globals: Any = (), *, model_id: str = "?") -> Any:
    """Load a checkpoint file: safetensors, or a torch pickle with ``weights_only=True``."""
    path = Path(path)
    if _is_safetensors(path):
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as e:
            raise CheckpointReadError(f"model {model_id!r}: cannot read {path} as safetensors: {e}") from e
    names = _as_list(allowed_globals)
    allowed = [_import_dotted(name, model_id) for name in names]
    try:
        with torch.serialization.safe_globals(allowed):
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
            f"it is not a readable torch checkpoint ({_brief(error)}); if the download itself is damaged, "
            f"delete the file and its {SIDECAR_SUFFIX} sidecar to fetch it again"
        )
    classes = [n for n in needed if _looks_like_class(n)]
    functions = [n for n in needed if n not in classes]
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
    missing = [k for k in reference if k not in state]
    unexpected = sorted(k for k in state if k not in reference)
    tolerated = [k for k in unexpected if k in lenient_keys]
    unexpected = [k for k in unexpected if k not in lenient_keys]
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs architecture {tuple(ref.shape)}"
        for k, ref in reference.items()
        if k in state and state[k].shape != ref.shape
    ]
    if missing or unexpected or shapes:
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing key(s): {_listing(missing)}")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected key(s): {_listing(unexpected)}")
        if shapes:
            problems.append(f"{len(shapes)} shape mismatch(es): {_listing(shapes)}")
        if missing and unexpected:
            # Point at the prefix to fix: where does the first missing tensor appear instead?
            lookalikes = sorted((k for k in unexpected if k.endswith("." + missing[0])), key=lambda k: (len(k), k))
            if lookalikes:
                problems.append(f"hint: {missing[0]!r} is present as {_listing(lookalikes, 5)}")
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
            _listing(tolerated),
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


KEY_MAPPINGS: dict[str, Callable[[str], str]] = {"simclrv2": _simclrv2_key}


# ----------------------------------------------------------------------------------------------
# Spec handling


def _validate_file_spec(spec: Mapping[str, Any], model_id: str, role: str) -> None:
    where = f"model {model_id!r} ({role})"
    kind = spec.get("kind")
    if kind not in FILE_KIND_FIELDS:
        allowed = sorted(FILE_KIND_FIELDS) + (["pair"] if role == "weights" else [])
        raise SourceError(f"{where}: unknown source kind {kind!r}; allowed: {allowed}")
    allowed_fields = {"kind", "sha256"} | FILE_KIND_FIELDS[kind] | CONVERSION_FIELDS
    unknown = sorted(set(spec) - allowed_fields)
    if unknown:
        raise SourceError(f"{where}: unknown field(s) {unknown} for kind {kind!r}; allowed: {sorted(allowed_fields)}")
    if not spec.get(REQUIRED_FIELDS[kind]):
        raise SourceError(f"{where}: kind {kind!r} needs the field {REQUIRED_FIELDS[kind]!r}")
    if kind == "huggingface" and not spec.get("file"):
        raise SourceError(f"{where}: kind 'huggingface' needs the field 'file'")
    if "sha256" in spec and not re.fullmatch(r"[0-9a-fA-F]{8,64}", str(spec["sha256"])):
        raise SourceError(f"{where}: sha256 must be 8 to 64 hex digits (a full digest or a prefix); got {spec['sha256']!r}")
    rename = spec.get("rename") or []
    if not isinstance(rename, list) or not all(isinstance(r, (list, tuple)) and len(r) == 2 for r in rename):
        raise SourceError(f"{where}: rename must be a list of [old_prefix, new_prefix] pairs; got {rename!r}")
    if spec.get("mapping") is not None and spec["mapping"] not in KEY_MAPPINGS:
        raise SourceError(f"{where}: unknown mapping {spec['mapping']!r}; allowed: {sorted(KEY_MAPPINGS)}")
    if "strict" in spec and not isinstance(spec["strict"], bool):
        raise SourceError(f"{where}: strict must be true or false; got {spec['strict']!r}")
    if spec.get("key") is not None and not isinstance(spec["key"], str):
        raise SourceError(f"{where}: key must be the name of a checkpoint entry; got {spec['key']!r}")
    for name in ("keep_prefix", "drop_containing", "strip_prefix", "allowed_globals"):
        value = spec.get(name)
        if (
            value is not None
            and not isinstance(value, str)
            and not (isinstance(value, list) and all(isinstance(v, str) for v in value))
        ):
            raise SourceError(f"{where}: {name} must be a string or a list of strings; got {value!r}")


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _select_state(checkpoint: Any, key: str | None, model_id: str, where: str) -> tuple[Mapping[str, Any], str | None]:
    if not isinstance(checkpoint, Mapping):
        raise ConversionError(f"model {model_id!r}: {where} holds a {type(checkpoint).__name__}, not a dict of tensors")
    if key is not None:
        if key not in checkpoint or not isinstance(checkpoint[key], Mapping):
            raise ConversionError(
                f"model {model_id!r}: {where} has no dict entry {key!r}; its entries: {_listing(list(checkpoint))}"
            )
        return checkpoint[key], key
    for candidate in DEFAULT_STATE_KEYS:
        if isinstance(checkpoint.get(candidate), Mapping):
            return checkpoint[candidate], candidate
    return checkpoint, None


def _listing(items: list[str], limit: int = 40) -> str:
    shown = ", ".join(map(str, items[:limit]))
    return shown + (f", … ({len(items) - limit} more)" if len(items) > limit else "")


def _brief(error: BaseException, limit: int = 400) -> str:
    """An error's message on one line, shortened."""
    text = str(error)
    # torch's weights-only message opens with advice to switch weights_only off; keep the cause.
    match = re.search(r"WeightsUnpickler error:(.*)", text, re.S)
    text = " ".join((match.group(1) if match else text).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


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


# ----------------------------------------------------------------------------------------------
# Remote files


@dataclass
class _Remote:
    """One downloadable file: its public address, cache location and expected hash."""

    url: str
    dest: Path
    expected: str | None = None
    expected_origin: str = "the zoo's sha256"

    def fetched_from(self, settings: DownloadSettings) -> str:
        return settings.rewrite(self.url)

    def download(self, tmp: Path, settings: DownloadSettings, progress: bool) -> dict[str, Any]:
        """Write the complete file to ``tmp`` or raise; return extra facts to record."""
        url = self.fetched_from(settings)
        local = local_file(url)
        if local is not None:
            if not local.is_file():
                raise EntryNotFound("no such file")
            shutil.copyfile(local, tmp)
            return {}
        headers = {"Accept-Encoding": "identity", "User-Agent": f"layercrit/{_version('layercrit')}"}
        with requests.get(url, stream=True, timeout=settings.timeout, headers=headers) as response:
            response.raise_for_status()
            announced = response.headers.get("Content-Length")
            total = int(announced) if announced and response.headers.get("Content-Encoding", "identity") == "identity" else None
            written = 0
            with (
                open(tmp, "wb") as f,
                tqdm(
                    total=total,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=self.dest.name,
                    disable=not progress,
                    leave=False,
                ) as bar,
            ):
                for chunk in response.iter_content(chunk_size=CHUNK):
                    f.write(chunk)
                    written += len(chunk)
                    bar.update(len(chunk))
                f.flush()
                os.fsync(f.fileno())
        if total is not None and written != total:
            raise _IncompleteDownload(f"received {written} of {total} bytes from {url}")
        return {}


@dataclass
class _HubRemote(_Remote):
    repo: str = ""
    file: str = ""
    revision: str = "main"

    def fetched_from(self, settings: DownloadSettings) -> str:
        from huggingface_hub import hf_hub_url

        return hf_hub_url(self.repo, self.file, revision=self.revision, endpoint=settings.hf_endpoint)

    def download(self, tmp: Path, settings: DownloadSettings, progress: bool) -> dict[str, Any]:
        from huggingface_hub import get_hf_file_metadata, hf_hub_download
        from huggingface_hub.errors import RemoteEntryNotFoundError
        from huggingface_hub.utils import silent_tqdm

        try:
            # Resolve the revision first, so the download is pinned to one commit and recorded.
            meta = get_hf_file_metadata(self.fetched_from(settings), timeout=settings.timeout, endpoint=settings.hf_endpoint)
        except RemoteEntryNotFoundError as e:
            raise EntryNotFound(f"{self.repo} has no file {self.file!r} at revision {self.revision!r}") from e
        # huggingface_hub downloads into a folder of its own (with its metadata); start it afresh.
        staging = tmp.with_name(tmp.name + ".hub")
        shutil.rmtree(staging, ignore_errors=True)
        path = hf_hub_download(
            self.repo,
            self.file,
            revision=meta.commit_hash or self.revision,
            local_dir=staging,
            endpoint=settings.hf_endpoint,
            etag_timeout=settings.timeout,
            tqdm_class=None if progress else silent_tqdm,
        )
        os.replace(path, tmp)
        shutil.rmtree(staging, ignore_errors=True)
        info: dict[str, Any] = {"hf_commit": meta.commit_hash}
        if meta.etag and re.fullmatch(r"[0-9a-f]{64}", meta.etag):
            info["lfs_sha256"] = meta.etag  # the Hub's ETag of an LFS file is its sha256
        return info


@dataclass
class _DriveRemote(_Remote):
    def download(self, tmp: Path, settings: DownloadSettings, progress: bool) -> dict[str, Any]:
        import gdown

        staging = tmp.with_name(tmp.name + ".gdown")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        try:
            # use_cookies=False: never read or write ~/.cache/gdown/cookies.txt from a batch job.
            result = gdown.download(
                url=self.fetched_from(settings),
                output=str(staging / self.dest.name),
                quiet=not progress,
                use_cookies=False,
                timeout=settings.timeout,
            )
            if not result:
                raise DownloadError(f"gdown returned no file for {self.url}")
            os.replace(result, tmp)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return {}


def _remotes(spec: Mapping[str, Any], cache_dir: Path) -> list[_Remote]:
    """The candidate remote files of a spec, in order of preference."""
    kind = spec["kind"]
    expected = str(spec["sha256"]).lower() if spec.get("sha256") else None
    if kind == "url":
        return [_Remote(spec["url"], cache_dir / _url_cache_path(spec["url"]), expected)]
    if kind == "torchvision":
        from torchvision.models import get_weight

        try:
            url = get_weight(spec["weights"]).url
        except (KeyError, ValueError) as e:
            raise SourceError(
                f"torchvision {_version('torchvision')} has no weights {spec['weights']!r} ({_brief(e)}); "
                "give them as '<Enum>.<member>', e.g. ResNet50_Weights.IMAGENET1K_V1"
            ) from e
        remote = _Remote(url, cache_dir / _url_cache_path(url), expected)
        prefix = re.search(r"-([0-9a-f]{8,64})\.", PurePosixPath(urlsplit(url).path).name)
        if expected is None and prefix:
            remote.expected, remote.expected_origin = prefix.group(1), "the sha256 prefix in torchvision's file name"
        return [remote]
    if kind == "huggingface":
        return [_hub_remote(spec["repo"], spec["file"], spec.get("revision") or "main", expected, cache_dir)]
    if kind == "gdrive":
        url = f"https://drive.google.com/uc?id={spec['id']}"
        return [_DriveRemote(url, cache_dir / "drive.google.com" / _safe_name(spec["id"]), expected)]
    if kind == "timm":
        return _timm_remotes(spec, expected, cache_dir)
    raise SourceError(f"unknown source kind {kind!r}")


def _hub_remote(repo: str, file: str, revision: str, expected: str | None, cache_dir: Path) -> _HubRemote:
    dest = cache_dir / "huggingface.co" / repo / _safe_name(revision) / file
    return _HubRemote(
        f"https://huggingface.co/{repo}/resolve/{revision}/{file}", dest, expected, repo=repo, file=file, revision=revision
    )


def _timm_remotes(spec: Mapping[str, Any], expected: str | None, cache_dir: Path) -> list[_Remote]:
    from timm.models import get_pretrained_cfg

    try:
        cfg = get_pretrained_cfg(spec["tag"])
    except RuntimeError:
        cfg = None
    if cfg is None:
        raise SourceError(f"timm {_version('timm')} has no pretrained weights {spec['tag']!r} (give '<model>.<tag>')")
    if cfg.hf_hub_id:
        repo, _, pinned = cfg.hf_hub_id.partition("@")
        revision = spec.get("revision") or pinned or "main"
        files = [spec.get("file") or cfg.hf_hub_filename]
        if not files[0]:
            # timm prefers the safetensors file and falls back to the pickle (timm.models._hub).
            files = ["model.safetensors", "pytorch_model.bin"]
        return [_hub_remote(repo, f, revision, expected, cache_dir) for f in files]
    if cfg.url:
        return [_Remote(cfg.url, cache_dir / _url_cache_path(cfg.url), expected)]
    raise SourceError(f"timm's pretrained config for {spec['tag']!r} names neither a Hub repository nor a URL")


def local_file(url: str) -> Path | None:
    """The file a ``file://`` URL or a plain path names (relative to the working directory), or
    None for a web address."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        return Path(unquote(parts.path))
    return Path(url) if not parts.scheme else None


def _url_cache_path(url: str) -> Path:
    local = local_file(url)
    if local is not None:  # cached under local/<absolute path>
        return Path("local", *[_safe_name(s) for s in local.absolute().parts[1:]])
    parts = urlsplit(url)
    segments = [_safe_name(unquote(s)) for s in PurePosixPath(parts.path).parts if s not in ("/", "", ".", "..")]
    if not segments:
        segments = ["index"]
    if parts.query:
        # Same path, different query: keep them apart without putting the query in a file name.
        segments.insert(-1, "q-" + hashlib.sha256(parts.query.encode()).hexdigest()[:8])
    return Path(_safe_name(parts.netloc), *segments)


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+@=-]", "_", name) or "_"


# ----------------------------------------------------------------------------------------------
# Download, verify, cache


def _ensure_file(remote: _Remote, *, model_id: str, settings: DownloadSettings, progress: bool) -> tuple[Path, dict[str, Any]]:
    dest = remote.dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    sidecar_path = dest.with_name(dest.name + SIDECAR_SUFFIX)
    # Concurrent jobs fetching the same file wait for each other instead of racing.
    with FileLock(str(dest.with_name(dest.name + ".lock"))):
        sidecar = _read_sidecar(sidecar_path)
        pinned = sidecar.get("sha256") if sidecar else None
        if dest.is_file():
            actual = file_sha256(dest)
            failed = _failed_reference(actual, remote.expected, remote.expected_origin, pinned, sidecar_path)
            if failed is None:
                if not sidecar or sidecar.get("sha256") != actual:
                    log.info("model %s: adopting %s found in the cache without a recorded hash", model_id, dest)
                    sidecar = _write_sidecar(sidecar_path, dest, remote, settings, actual, {"adopted": True})
                return dest, _record(remote, sidecar, cache_hit=True)
            bad = _move_aside(dest, actual)
            log.warning(
                "model %s: cached %s does not match %s (expected %s, found %s); moved it to %s and downloading again",
                model_id,
                dest,
                failed[1],
                failed[0],
                actual,
                bad.name,
            )

        tmp = dest.with_name(f".{dest.name}.part")
        url = remote.fetched_from(settings)
        try:
            info = _retrying(settings, model_id, url)(remote.download, tmp, settings, progress)
        except SourceError as e:
            tmp.unlink(missing_ok=True)
            if not str(e).startswith("model "):
                raise type(e)(f"model {model_id!r}: {url}: {e}") from e
            raise
        except Exception as e:
            tmp.unlink(missing_ok=True)
            transient = _is_transient(e)
            raise DownloadError(
                f"model {model_id!r}: downloading {url} failed"
                + (f" after {settings.retries + 1} attempts" if transient else " (not retried: not a transient error)")
                + f": {_brief(e)}. To provide the file by hand, put it at {dest}"
            ) from e

        actual = file_sha256(tmp)
        expected, origin = remote.expected, remote.expected_origin
        if expected is None and info.get("lfs_sha256"):
            expected, origin = info["lfs_sha256"], "the Hub's LFS sha256"
        if _looks_like_html(tmp):
            bad = _move_aside(tmp, actual, dest)
            raise DownloadError(
                f"model {model_id!r}: {url} returned an HTML page instead of a checkpoint (a login, quota or "
                f"confirmation page?); it was kept at {bad}. To provide the file by hand, put it at {dest}"
            )
        failed = _failed_reference(actual, expected, origin, pinned, sidecar_path)
        if failed is not None:
            bad = _move_aside(tmp, actual, dest)
            raise ChecksumError(
                f"model {model_id!r}: sha256 mismatch for {url}: expected {failed[0]} ({failed[1]}), "
                f"got {actual}; the downloaded file was moved aside to {bad}"
            )
        sidecar = _write_sidecar(sidecar_path, tmp, remote, settings, actual, info)
        os.replace(tmp, dest)
        log.info("model %s: downloaded %s (sha256 %s)", model_id, url, actual)
        return dest, _record(remote, sidecar, cache_hit=False)


def _failed_reference(
    actual: str, expected: str | None, origin: str, pinned: str | None, sidecar_path: Path
) -> tuple[str, str] | None:
    """The first (hash, origin) that ``actual`` fails, or None if it passes all that apply."""
    references = []
    if expected:
        references.append((expected, origin))
    # The recorded hash pins the file seen first, unless the zoo now expects something else.
    if pinned and (not expected or pinned.startswith(expected)):
        references.append((pinned, f"recorded at the first download in {sidecar_path.name}"))
    for reference, where in references:
        if not actual.startswith(reference.lower()):
            return reference, where
    return None


def _retrying(settings: DownloadSettings, model_id: str, url: str) -> tenacity.Retrying:
    def before_sleep(state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        log.warning(
            "model %s: attempt %d of %s failed (%s); retrying in %.1f s",
            model_id,
            state.attempt_number,
            url,
            _brief(error) if error else "?",
            state.next_action.sleep if state.next_action else 0,
        )

    return tenacity.Retrying(
        stop=tenacity.stop_after_attempt(settings.retries + 1),
        wait=tenacity.wait_exponential(multiplier=settings.backoff, min=settings.backoff, max=settings.max_backoff),
        retry=tenacity.retry_if_exception(_is_transient),
        before_sleep=before_sleep,
        reraise=True,
    )


def _is_transient(error: BaseException) -> bool:
    """Worth another attempt: connection trouble, a truncated body, or a 408/429/5xx answer."""
    import gdown.exceptions
    from huggingface_hub.errors import HfHubHTTPError

    for e in _causes(error):
        if isinstance(e, (_IncompleteDownload, requests.Timeout, requests.exceptions.ChunkedEncodingError)):
            return True
        if isinstance(e, requests.ConnectionError) and not isinstance(
            e, (requests.exceptions.SSLError, requests.exceptions.ProxyError)
        ):
            return True
        status = getattr(getattr(e, "response", None), "status_code", None)
        if isinstance(e, (requests.HTTPError, HfHubHTTPError, *_httpx_status_errors())):
            return status in RETRY_STATUS
        if isinstance(e, _httpx_transport_errors()):
            return True
        if isinstance(e, gdown.exceptions.DownloadError) and not isinstance(e, gdown.exceptions.FileURLRetrievalError):
            return True  # gdown's "download is incomplete"
        if isinstance(e, OSError) and "Consistency check failed" in str(e):
            return True  # huggingface_hub: size differs from the announced one
    return False


def _causes(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        # Only explicit causes ("raise ... from"): an error merely raised while handling another
        # is not evidence that the other one is what went wrong.
        current = current.__cause__


def _httpx_module() -> Any:
    # huggingface_hub talks HTTP through httpx (packaged as httpx2 in some releases).
    for name in ("httpx2", "httpx"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


def _httpx_transport_errors() -> tuple[type[BaseException], ...]:
    module = _httpx_module()
    return (module.TransportError,) if module else ()


def _httpx_status_errors() -> tuple[type[BaseException], ...]:
    module = _httpx_module()
    return (module.HTTPStatusError,) if module else ()


def _looks_like_html(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(512).lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html"))


def _move_aside(path: Path, actual: str, dest: Path | None = None) -> Path:
    """Move a bad file to ``<dest name>.bad-<hash8>`` beside it, keeping it for inspection."""
    dest = dest or path
    bad = dest.with_name(f"{dest.name}.bad-{actual[:8]}")
    os.replace(path, bad)
    return bad


def _read_sidecar(path: Path) -> dict[str, Any] | None:
    try:
        with open(path) as f:
            data = json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("sha256"), str) else None


def _write_sidecar(
    path: Path, file: Path, remote: _Remote, settings: DownloadSettings, sha256: str, info: Mapping[str, Any]
) -> dict[str, Any]:
    data = {
        "sha256": sha256,
        "size": file.stat().st_size,
        "url": remote.url,
        "fetched_from": remote.fetched_from(settings),
        "fetched": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **{k: v for k, v in info.items() if k != "lfs_sha256"},
    }
    write_json(path, data)
    return data


def _record(remote: _Remote, sidecar: Mapping[str, Any], *, cache_hit: bool) -> dict[str, Any]:
    record = {
        "url": remote.url,
        "fetched_from": sidecar.get("fetched_from", remote.url),
        "sha256": sidecar["sha256"],
        "size": sidecar.get("size"),
        "fetched": sidecar.get("fetched"),
        "cache_hit": cache_hit,
    }
    if "hf_commit" in sidecar:
        record["hf_commit"] = sidecar["hf_commit"]
    if sidecar.get("adopted"):
        record["adopted"] = True
    return record


def _version(name: str) -> str:
    try:
        return importlib_metadata.version(name)
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


def _tool_versions() -> dict[str, str]:
    return {name: _version(name) for name in ("huggingface_hub", "gdown", "requests", "safetensors", "tenacity")}
