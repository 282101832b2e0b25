"""What a zoo entry's source names, as data: its files and which of them are on this machine.

Torch-free, unlike :mod:`layercrit.weights.sources` (which downloads and converts): the workflow reads
this while it is parsed, to make a model's local source files inputs of its download job.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from layercrit.io import CHECKPOINT_HEADER, file_identity, file_sha256, safetensors_metadata

PAIR_ROLES = ("backbone", "head")


def fetched_source(source: Any) -> Any:
    """The source to download for a zoo source: itself, or for a model trained once by the
    workflow the checkpoint that training recorded (a local or web file like ``url``)."""
    if isinstance(source, Mapping) and source.get("kind") == "train" and "checkpoint" in source:
        return {"kind": "url", **source["checkpoint"]}
    return source


def source_parts(source: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The (role, file spec) pairs of a (valid) source: one ``weights`` file, or a pair's two files."""
    if source["kind"] == "pair":
        return [(role, dict(source[role])) for role in PAIR_ROLES]
    return [("weights", dict(source))]


def local_file(url: str) -> Path | None:
    """The file a ``file://`` URL or a plain path names (relative to the working directory, ``~``
    for the home directory as in ``data.root``), or None for a web address."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        return Path(unquote(parts.path))
    return Path(url).expanduser() if not parts.scheme else None


def local_source_parts(source: Mapping[str, Any]) -> list[tuple[str, dict[str, Any], Path]]:
    """The files of a model's source that are on this machine (``url`` specs with a ``file://``
    URL or a path), which it fetches by copying: (its key below the zoo entry, its spec, its
    path) each; none for a model trained here."""
    fetched = fetched_source(source)
    if fetched.get("kind") == "train":
        return []
    parts = []
    for role, spec in source_parts(fetched):
        if spec.get("kind") == "url" and (path := local_file(spec["url"])) is not None:
            key = "source.checkpoint.url" if fetched is not source else "source.url" if role == "weights" else f"source.{role}.url"
            parts.append((key, spec, path))
    return parts


def local_source_files(source: Mapping[str, Any]) -> list[str]:
    """The paths of ``local_source_parts``."""
    return [str(path) for _, _, path in local_source_parts(source)]


def missing_local_files(model_id: str, source: Mapping[str, Any]) -> list[str]:
    """A message for each local source file of a model that does not exist, naming its zoo key."""
    return [
        f"zoo.models.{model_id}.{key}: {spec['url']!r} names the local file {str(path)!r}, which does not exist; "
        "a path is relative to the directory Snakemake runs in (~ is your home directory), file:///… is absolute"
        for key, spec, path in local_source_parts(source)
        if not path.is_file()
    ]


def local_source_param(source: Mapping[str, Any], checkpoint: str | Path) -> dict[str, Any]:
    """``{"local_sha256": {path: sha256}}`` of a model's local source files that the zoo does not
    pin with a ``sha256``, for its download job's params: a file whose content changed re-makes
    ``checkpoint`` (and every result of the model), also when it was saved over with an older
    modification time (``cp -p``, ``rsync -a``), which Snakemake's own check cannot see.

    Hashing every local checkpoint at every parse would cost seconds, so a file's sha256 is taken
    from the record ``checkpoint`` keeps of it where the file's identity (device, inode, size,
    mtime, ctime: a rewrite changes the ctime, which no tool sets back) is the one recorded when it
    was fetched; only a changed file is hashed. A checkpoint fetched before identities were
    recorded (its job's params have no digest) keeps its params while its files are unchanged
    since it was written (or hash as recorded), so a finished study is not fetched again.
    """
    parts = [(spec, path) for _, spec, path in local_source_parts(source) if not spec.get("sha256")]
    if not parts:
        return {}
    fetched = checkpoint_files(checkpoint)
    records = [(fetched or {}).get(spec["url"]) for spec, _ in parts]
    if fetched is not None and all(r is not None and "source_identity" not in r for r in records):
        written = os.stat(checkpoint).st_mtime_ns
        if all(os.stat(path).st_ctime_ns <= written or file_sha256(path) == r["sha256"] for (_, path), r in zip(parts, records)):
            return {}
    digests = {}
    for (_, path), record in zip(parts, records):
        unchanged = record is not None and record.get("source_identity") == list(file_identity(path))
        digests[str(path)] = record["sha256"] if unchanged else file_sha256(path)
    return {"local_sha256": digests}


def checkpoint_files(checkpoint: str | Path) -> dict[str, dict[str, Any]] | None:
    """The records of the files a canonical checkpoint was fetched from (``sources.fetch_model``:
    address, sha256, …), by address; None where there is no checkpoint yet."""
    metadata = safetensors_metadata(checkpoint)
    if metadata is None:
        return None
    try:
        recorded = json.loads(metadata.get(CHECKPOINT_HEADER, "{}")).get("metadata") or {}
    except (ValueError, AttributeError):
        return {}
    return {f["url"]: f for f in recorded.get("files", []) if isinstance(f, dict) and "url" in f}
