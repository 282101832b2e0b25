"""What a zoo entry's source names, as data: its files and which of them are on this machine.

Torch-free, unlike :mod:`layercrit.sources` (which downloads and converts): the workflow reads
this while it is parsed, to make a model's local source files inputs of its download job.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

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
    """The file a ``file://`` URL or a plain path names (relative to the working directory), or
    None for a web address."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        return Path(unquote(parts.path))
    return Path(url) if not parts.scheme else None


def local_source_files(source: Mapping[str, Any]) -> list[str]:
    """The files of a model's source that are on this machine (``url`` specs with a ``file://``
    URL or a path), which it fetches by copying; none for a model trained here."""
    fetched = fetched_source(source)
    if fetched.get("kind") == "train":
        return []
    files = []
    for _, spec in source_parts(fetched):
        if spec.get("kind") == "url" and (path := local_file(spec["url"])) is not None:
            files.append(str(path))
    return files
