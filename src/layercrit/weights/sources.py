"""Fetch a model's published weights and turn them into its canonical checkpoint.

This module knows the kinds of places weights are published at; it joins the download cache
(:mod:`layercrit.downloads`) and the checkpoint conversion (:mod:`layercrit.weights.conversion`) into
:func:`fetch_model`. A zoo entry's ``source`` says where the weights live and how the published
file is laid out; :func:`fetch_model` checks it against the zoo schema (its one validator,
``workflow/schemas/zoo.schema.yaml``), downloads the file(s), converts them to the plain
state_dict of the architecture, checks that the result fills the architecture exactly and writes
the canonical checkpoint (:func:`layercrit.models.zoo.save_checkpoint`). Adding a model is YAML, never
Python.

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
    resolved to is recorded; for LFS files the Hub's sha256 (the ETag) is verified. For a
    transformers architecture (its ``model.safetensors``) the keys are converted from
    transformers' published layout by transformers itself, strictly.
``{kind: timm, tag: resnet50.a1_in1k}``
    timm's pretrained weights for that tag, located with timm's own pretrained config
    (``hf_hub_id`` and file, unless the spec gives ``file`` or ``revision``; like timm,
    ``model.safetensors`` is preferred over ``pytorch_model.bin``), downloaded like ``huggingface``.
``{kind: gdrive, id: <Google Drive file id>}``
    A public Google Drive file, downloaded with ``gdown`` (which handles Drive's
    virus-scan confirmation page for large files).
``{kind: pair, backbone: <spec>, head: <spec>}``
    Two files whose converted state_dicts are merged (e.g. a self-supervised backbone and its
    linear probe). A key produced by both is an error.
``{kind: train, recipe: ..., checkpoint: {url: ..., sha256: ...}}``
    A model the workflow trained once from that recipe, fetched from the checkpoint that training
    recorded (fetched like ``url``; the file's own record of its training is kept). Studies
    that retrain (config ``training.retrain``) train it instead.

Every file spec may carry ``sha256`` (full hex digest, or a prefix of at least 8 hex digits) and
the conversion fields of :mod:`layercrit.weights.conversion`.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import torch

from layercrit.downloads import (
    ChecksumError,
    DownloadSettings,
    Remote,
    SourceError,
    brief,
    drive_remote,
    fetch_file,
    hub_remote,
    url_remote,
    version,
)
from layercrit.io import provenance
from layercrit.models.builders import library_of
from layercrit.models.zoo import save_checkpoint
from layercrit.study import Architecture, load_schema, schema_problems
from layercrit.weights.checkpoint_files import read_checkpoint, recorded_metadata
from layercrit.weights.conversion import ConversionError, convert_state_dict, fit_to_architecture, listing
from layercrit.weights.specs import fetched_source, source_parts

log = logging.getLogger(__name__)

# The zoo schema's definition of a model fetch_model can fetch (every kind but `train`).
FETCHED_MODEL = "fetched_model"


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
    source = fetched_source(model.get("source"))
    recorded_training = source is not model.get("source")  # a train source's recorded checkpoint
    check_source(source, model_id)
    parts = source_parts(source)

    state_dict: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    files, conversions = [], []
    for role, spec in parts:
        try:
            path, record = fetch_source_file(
                spec, model_id=model_id, cache_dir=cache_dir, settings=settings, progress=progress, role=role
            )
        except ChecksumError as e:
            if not recorded_training:
                raise
            raise ChecksumError(
                f"{e}. This is the checkpoint the zoo records for a training of model {model_id!r}, and the file is no "
                "longer the one recorded: restore it (e.g. git checkout of the zoo's files), or train the model here "
                "(config training.retrain: true) and record the new checkpoint and its sha256 in the zoo "
                "(for the demo zoo: python tools/demo_zoo.py train)"
            ) from e
        recorded = recorded_metadata(path, model_id=model_id)
        files.append(record if recorded is None else {**record, "recorded": recorded})
        if recorded_training:
            check_recorded_training(model, recorded, path)
        checkpoint = read_checkpoint(path, spec.get("allowed_globals", ()), model_id=model_id, trust_pickle=spec.get("trust_pickle", False))
        part_sd, conversion = convert_state_dict(checkpoint, spec, model_id=model_id, where=f"{role} file {path.name}")
        conversions.append({"role": role, **conversion})
        clash = sorted(set(part_sd) & set(state_dict))
        if clash:
            raise ConversionError(
                f"model {model_id!r}: the {role} and the {origin[clash[0]]} both provide key(s) {listing(clash)}; "
                "a pair must split the weights between its files (fix keep_prefix/drop_containing)"
            )
        state_dict.update(part_sd)
        origin.update(dict.fromkeys(part_sd, role))

    to_model_layout = library_of(arch).to_model_layout
    if to_model_layout is not None:  # transformers' published keys: converted by the library
        try:
            state_dict = to_model_layout(arch, state_dict)
        except ValueError as e:
            raise ConversionError(f"model {model_id!r}: {e}") from e
        conversions.append({"role": "model", "library_layout": arch.library})
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


def check_source(source: Any, model_id: str) -> None:
    """Raise :class:`SourceError` unless ``source`` is one fetch_model can fetch.

    The zoo schema is the one validator of source specs (Snakemake checked the zoo with it
    already; callers such as tests and tools have not). What it cannot know is checked where it
    is used: whether torchvision and timm have the named weights, whether ``allowed_globals``
    name importable classes, and whether a pair's files provide disjoint keys."""
    zoo = load_schema("zoo")
    schema = {"$schema": zoo["$schema"], "$defs": zoo["$defs"], "$ref": f"#/$defs/{FETCHED_MODEL}"}
    problems = schema_problems({"source": source}, schema, f"model {model_id!r}")
    if problems:
        raise SourceError("\n".join(problems))


def check_recorded_training(model: Mapping[str, Any], recorded: Mapping[str, Any] | None, path: Path) -> None:
    """A checkpoint recorded for a `train` source must have been trained from the seed and recipe
    the zoo gives now; otherwise it is another model than the zoo describes (a recipe edited
    after the training was recorded) and is refused, naming both."""
    from layercrit.models.training import recipe_of

    source = model["source"]
    wanted = {"seed": source.get("seed", 0), "recipe": recipe_of(source, model.get("adversarial")).to_dict()}
    found = {key: (recorded or {}).get(key) for key in wanted}
    if found != wanted:
        what = "does not record what it was trained from" if recorded is None or found["recipe"] is None else f"was trained from {found}"
        raise SourceError(
            f"model {model.get('id', '?')!r}: its recorded checkpoint {source['checkpoint']['url']} ({path.name}) {what}, "
            f"but the zoo now trains it from {wanted}: the file is not this recipe's model. Train it here (config "
            "training.retrain: true) and record the new checkpoint (for the demo zoo: python tools/demo_zoo.py train), "
            "or restore the recipe"
        )


def fetch_source_file(
    spec: Mapping[str, Any],
    *,
    model_id: str,
    cache_dir: Path,
    settings: DownloadSettings | None = None,
    progress: bool = True,
    role: str = "weights",
) -> tuple[Path, dict[str, Any]]:
    """The cached, verified local copy of one file spec (downloading it if needed) and its record."""
    cache_dir = Path(cache_dir)
    path, record = fetch_file(
        _remotes(spec, cache_dir), model_id=model_id, cache_dir=cache_dir, settings=settings, progress=progress
    )
    return path, {"role": role, "kind": spec["kind"], **record}


def _remotes(spec: Mapping[str, Any], cache_dir: Path) -> list[Remote]:
    """The candidate remote files of a spec, in order of preference."""
    kind = spec["kind"]
    sha256 = spec.get("sha256")
    if kind == "url":
        return [url_remote(spec["url"], cache_dir, sha256)]
    if kind == "torchvision":
        from torchvision.models import get_weight

        try:
            url = get_weight(spec["weights"]).url
        except (KeyError, ValueError) as e:
            raise SourceError(
                f"torchvision {version('torchvision')} has no weights {spec['weights']!r} ({brief(e)}); "
                "give them as '<Enum>.<member>', e.g. ResNet50_Weights.IMAGENET1K_V1"
            ) from e
        remote = url_remote(url, cache_dir, sha256)
        prefix = re.search(r"-([0-9a-f]{8,64})\.", PurePosixPath(urlsplit(url).path).name)
        if remote.expected is None and prefix:
            remote.expected, remote.expected_origin = prefix.group(1), "the sha256 prefix in torchvision's file name"
        return [remote]
    if kind == "huggingface":
        return [hub_remote(spec["repo"], spec["file"], spec.get("revision") or "main", cache_dir, sha256)]
    if kind == "gdrive":
        return [drive_remote(spec["id"], cache_dir, sha256)]
    if kind == "timm":
        return _timm_remotes(spec, cache_dir)
    raise SourceError(f"unknown source kind {kind!r}")


def _timm_remotes(spec: Mapping[str, Any], cache_dir: Path) -> list[Remote]:
    from timm.models import get_pretrained_cfg

    try:
        cfg = get_pretrained_cfg(spec["tag"])
    except RuntimeError:
        cfg = None
    if cfg is None:
        raise SourceError(f"timm {version('timm')} has no pretrained weights {spec['tag']!r} (give '<model>.<tag>')")
    sha256 = spec.get("sha256")
    if cfg.hf_hub_id:
        repo, _, pinned = cfg.hf_hub_id.partition("@")
        revision = spec.get("revision") or pinned or "main"
        files = [spec.get("file") or cfg.hf_hub_filename]
        if not files[0]:
            # timm prefers the safetensors file and falls back to the pickle (timm.models._hub).
            files = ["model.safetensors", "pytorch_model.bin"]
        return [hub_remote(repo, f, revision, cache_dir, sha256) for f in files]
    if cfg.url:
        return [url_remote(cfg.url, cache_dir, sha256)]
    raise SourceError(f"timm's pretrained config for {spec['tag']!r} names neither a Hub repository nor a URL")


def _tool_versions() -> dict[str, str]:
    return {name: version(name) for name in ("huggingface_hub", "gdown", "requests", "safetensors", "tenacity")}
