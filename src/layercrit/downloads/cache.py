"""The cache itself: a file's verified local copy under its public address, with a sidecar
recording its sha256; written under a hidden name and renamed into place once complete and
checked, moved aside where it does not match (``layercrit.downloads`` says how it decides)."""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock

from layercrit.downloads.errors import ChecksumError, DownloadError, EntryNotFound, SourceError, brief
from layercrit.downloads.remotes import DownloadSettings, Remote
from layercrit.downloads.retry import is_transient, retrying
from layercrit.io import file_identity, file_sha256, write_json
from layercrit.weights.specs import local_file

log = logging.getLogger(__name__)

SIDECAR_SUFFIX = ".fetch.json"


def fetch_file(
    candidates: Sequence[Remote],
    *,
    model_id: str,
    cache_dir: Path,
    settings: DownloadSettings | None = None,
    progress: bool = True,
) -> tuple[Path, dict[str, Any]]:
    """The cached, verified local copy of the first of ``candidates`` that exists (downloading it
    if needed) and its record. ``model_id`` names what the file is for in messages and logs."""
    settings = settings or DownloadSettings.from_env()
    cache_dir = Path(cache_dir)
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
        return path, {**record, "cache_path": str(path.relative_to(cache_dir))}
    raise AssertionError("unreachable")


# ----------------------------------------------------------------------------------------------
# Download, verify, cache


def _ensure_file(remote: Remote, *, model_id: str, settings: DownloadSettings, progress: bool) -> tuple[Path, dict[str, Any]]:
    source = local_file(remote.url)
    if source is not None:
        return _ensure_local_copy(remote, source, model_id=model_id, settings=settings)
    dest, sidecar_path = remote.dest, _sidecar_path(remote.dest)
    with _cache_lock(dest):
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
            info = retrying(settings, model_id, url)(remote.download, tmp, settings, progress)
        except SourceError as e:
            tmp.unlink(missing_ok=True)
            if not str(e).startswith("model "):
                raise type(e)(f"model {model_id!r}: {url}: {e}") from e
            raise
        except Exception as e:
            tmp.unlink(missing_ok=True)
            transient = is_transient(e)
            raise DownloadError(
                f"model {model_id!r}: downloading {url} failed"
                + (f" after {settings.retries + 1} attempts" if transient else " (not retried: not a transient error)")
                + f": {brief(e)}. To provide the file by hand, put it at {dest}"
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
            fix = (
                f"If the file at this address was replaced on purpose, delete {sidecar_path} to accept the new one "
                f"(or pin its sha256 in the zoo)"
                if failed[1].startswith("recorded")
                else "Check the zoo's sha256 and the address"
            )
            raise ChecksumError(
                f"model {model_id!r}: sha256 mismatch for {url}: expected {failed[0]} ({failed[1]}), "
                f"got {actual}; the downloaded file was moved aside to {bad}. {fix}"
            )
        sidecar = _write_sidecar(sidecar_path, tmp, remote, settings, actual, info)
        os.replace(tmp, dest)
        log.info("model %s: downloaded %s (sha256 %s)", model_id, url, actual)
        return dest, _record(remote, sidecar, cache_hit=False)


def _sidecar_path(dest: Path) -> Path:
    return dest.with_name(dest.name + SIDECAR_SUFFIX)


def _cache_lock(dest: Path) -> FileLock:
    """The lock of one cached file: concurrent jobs fetching it wait for each other instead of racing."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(dest.with_name(dest.name + ".lock")))


def _ensure_local_copy(remote: Remote, source: Path, *, model_id: str, settings: DownloadSettings) -> tuple[Path, dict[str, Any]]:
    """The cached copy of a local file, current with the file. A local file is the user's own and
    changes (a retrained model saved over the last one), so unlike a download its first hash
    pins nothing: a copy whose sha256 is not the file's is replaced, and the log says so. Only a
    sha256 the zoo gives is enforced."""
    if not source.is_file():
        raise EntryNotFound(f"model {model_id!r}: {source}: no such file")
    # what the file is, recorded with its hash: while it stays the same, the workflow takes the
    # file's sha256 from the record instead of hashing it at every parse (source_specs.local_source_param)
    identity = list(file_identity(source))
    actual = file_sha256(source)
    if list(file_identity(source)) != identity:
        raise DownloadError(f"model {model_id!r}: {source} changed while it was being read; run again once it is written")
    if remote.expected and not actual.startswith(remote.expected):
        raise ChecksumError(
            f"model {model_id!r}: sha256 mismatch for {source}: expected {remote.expected} ({remote.expected_origin}), "
            f"got {actual}. If you changed the file on purpose, update {remote.expected_origin} to {actual} (or "
            "remove it); otherwise restore the file"
        )
    dest, sidecar_path = remote.dest, _sidecar_path(remote.dest)
    with _cache_lock(dest):
        sidecar = _read_sidecar(sidecar_path)
        cached = sidecar.get("sha256") if sidecar else None
        if cached == actual and dest.is_file() and file_sha256(dest) == actual:
            if sidecar.get("source_identity") != identity:  # the same content, rewritten or moved
                sidecar = {**sidecar, "source_identity": identity}
                write_json(sidecar_path, sidecar)
            return dest, _record(remote, sidecar, cache_hit=True)
        if cached and cached != actual:
            log.warning(
                "model %s: %s has changed since it was cached (sha256 %s then, %s now): copying it again",
                model_id, source, cached, actual,
            )  # fmt: skip
        tmp = dest.with_name(f".{dest.name}.part")
        shutil.copyfile(source, tmp)
        copied = file_sha256(tmp)
        if copied != actual:
            tmp.unlink(missing_ok=True)
            raise DownloadError(f"model {model_id!r}: {source} changed while it was being copied; run again once it is written")
        info = {"source_identity": identity, **({"replaced_sha256": cached} if cached and cached != actual else {})}
        sidecar = _write_sidecar(sidecar_path, tmp, remote, settings, actual, info)
        os.replace(tmp, dest)
        log.info("model %s: copied %s (sha256 %s)", model_id, source, actual)
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
    path: Path, file: Path, remote: Remote, settings: DownloadSettings, sha256: str, info: Mapping[str, Any]
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


def _record(remote: Remote, sidecar: Mapping[str, Any], *, cache_hit: bool) -> dict[str, Any]:
    record = {
        "url": remote.url,
        "fetched_from": sidecar.get("fetched_from", remote.url),
        "sha256": sidecar["sha256"],
        "size": sidecar.get("size"),
        "fetched": sidecar.get("fetched"),
        "cache_hit": cache_hit,
    }
    for key in ("hf_commit", "source_identity"):
        if key in sidecar:
            record[key] = sidecar[key]
    if sidecar.get("adopted"):
        record["adopted"] = True
    return record
