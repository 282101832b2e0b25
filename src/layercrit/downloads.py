"""The verified download cache: a remote file's local copy, complete and with the expected sha256.

It exists apart from the source kinds (:mod:`layercrit.weights.sources`) because more than model weights
are downloaded (the authors' published results, ``workflow/scripts/fetch_published.py``), and
because what makes a download trustworthy (atomic renames, checksums, retries, mirrors) does not
depend on what the file is. Callers describe a file as a :class:`Remote` (:func:`url_remote`,
:func:`hub_remote`, :func:`drive_remote`) and get its cached copy from :func:`fetch_file`.

The cache
---------
Files are cached under ``cache_dir`` by their public address (``<host>/<path>``, ``local/<path>``
for local files, ``huggingface.co/<repo>/<revision>/<file>``, ``drive.google.com/<id>``), each
with a sidecar ``<file>.fetch.json`` recording its sha256, size, address and time. A file is
downloaded to a hidden temporary name, checked (Content-Length, HTML-instead-of-checkpoint,
sha256) and only then renamed into place, so a killed or truncated download never looks complete;
the next run starts it over. Transient failures (connection errors, truncated bodies, HTTP
408/429/5xx) are retried with exponential backoff; other errors (404, permission, Drive quota) are
not. A local file (``file:///path`` or a plain path) is copied into the cache, and checked against
the zoo's ``sha256`` where it gives one; it is the user's own and changes (a model retrained and
saved over the last), so its first hash pins nothing: a cached copy that is no longer the file's
is replaced, and the log says so (the workflow also makes local files inputs of the download job,
and their sha256 its param, so a changed file re-makes the checkpoint and what depends on it; the
copy's record keeps the file's identity, from which the workflow knows the file is unchanged
without hashing it again).

Later runs trust a cached file only if it still matches its recorded sha256 (no network then).
A file that does not match is moved aside to ``<file>.bad-<hash8>`` and downloaded again, and the
new download must match the recorded hash (or the expected ``sha256``, which takes precedence);
otherwise it, too, is moved aside and :class:`ChecksumError` names the model, the address and
both hashes. A file put into the cache by hand (for machines without internet) is adopted, and
verified against the expected ``sha256`` when there is one.

Settings (:class:`DownloadSettings`, by default from the environment):

``LAYERCRIT_URL_REWRITE``
    JSON object mapping URL prefixes to replacements, applied (longest prefix first) to the
    addresses of plain and Drive files before downloading, e.g.
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

import hashlib
import importlib
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

import requests
import tenacity
from filelock import FileLock
from tqdm.auto import tqdm

from layercrit.io import file_identity, file_sha256, write_json
from layercrit.weights.specs import local_file

log = logging.getLogger(__name__)

# HTTP statuses worth another attempt: timeouts, rate limits, server-side trouble.
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
SIDECAR_SUFFIX = ".fetch.json"
CHUNK = 1 << 20

ENV_URL_REWRITE = "LAYERCRIT_URL_REWRITE"
ENV_RETRIES = "LAYERCRIT_DOWNLOAD_RETRIES"
ENV_BACKOFF = "LAYERCRIT_DOWNLOAD_BACKOFF"
ENV_TIMEOUT = "LAYERCRIT_DOWNLOAD_TIMEOUT"


class SourceError(Exception):
    """A model's weights (or another file) could not be fetched or converted; the message names
    what the file was for."""


class DownloadError(SourceError):
    """A download failed (after retries, where retrying made sense)."""


class EntryNotFound(DownloadError):
    """The host answered that the file does not exist."""


class ChecksumError(SourceError):
    """A file's sha256 differs from the expected one; the file was moved aside."""


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
# Remote files


@dataclass
class Remote:
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
        headers = {"Accept-Encoding": "identity", "User-Agent": f"layercrit/{version('layercrit')}"}
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
class HubRemote(Remote):
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
class DriveRemote(Remote):
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


def url_remote(url: str, cache_dir: Path, sha256: str | None = None, sha256_origin: str | None = None) -> Remote:
    """A file on a web server, or a local file (``file://`` URL or plain path), cached under
    ``<host>/<path>`` (``local/<absolute path>``). ``sha256``: the expected hash (or a prefix of
    it); ``sha256_origin`` says where it came from in messages (default: the zoo)."""
    remote = Remote(url, Path(cache_dir) / _url_cache_path(url), _expected(sha256))
    if sha256_origin and remote.expected:
        remote.expected_origin = sha256_origin
    return remote


def hub_remote(repo: str, file: str, revision: str, cache_dir: Path, sha256: str | None = None) -> HubRemote:
    """A file of a Hugging Face Hub repository, cached under ``huggingface.co/<repo>/<revision>/<file>``."""
    dest = Path(cache_dir) / "huggingface.co" / repo / _safe_name(revision) / file
    return HubRemote(
        f"https://huggingface.co/{repo}/resolve/{revision}/{file}",
        dest,
        _expected(sha256),
        repo=repo,
        file=file,
        revision=revision,
    )


def drive_remote(file_id: str, cache_dir: Path, sha256: str | None = None) -> DriveRemote:
    """A public Google Drive file, cached under ``drive.google.com/<id>``."""
    url = f"https://drive.google.com/uc?id={file_id}"
    return DriveRemote(url, Path(cache_dir) / "drive.google.com" / _safe_name(file_id), _expected(sha256))


def _expected(sha256: str | None) -> str | None:
    return str(sha256).lower() if sha256 else None


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
# Public API


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


def _retrying(settings: DownloadSettings, model_id: str, url: str) -> tenacity.Retrying:
    def before_sleep(state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        log.warning(
            "model %s: attempt %d of %s failed (%s); retrying in %.1f s",
            model_id,
            state.attempt_number,
            url,
            brief(error) if error else "?",
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


def brief(error: BaseException, limit: int = 400) -> str:
    """An error's message on one line, shortened."""
    text = str(error)
    # torch's weights-only message opens with advice to switch weights_only off; keep the cause.
    match = re.search(r"WeightsUnpickler error:(.*)", text, re.S)
    text = " ".join((match.group(1) if match else text).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def version(name: str) -> str:
    try:
        return importlib_metadata.version(name)
    except importlib_metadata.PackageNotFoundError:
        return "unknown"
