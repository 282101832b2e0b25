"""Where a file comes from: a plain or local URL, a Hugging Face Hub file or a Google Drive file
(``Remote`` and its kinds, each knowing its cache path and how to download itself), and the
settings of every download (mirrors, retries, timeouts; ``layercrit.downloads`` lists the
environment variables)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

import requests
from tqdm.auto import tqdm

from layercrit.downloads.errors import DownloadError, EntryNotFound, IncompleteDownload, SourceError
from layercrit.weights.specs import local_file

CHUNK = 1 << 20

ENV_URL_REWRITE = "LAYERCRIT_URL_REWRITE"
ENV_RETRIES = "LAYERCRIT_DOWNLOAD_RETRIES"
ENV_BACKOFF = "LAYERCRIT_DOWNLOAD_BACKOFF"
ENV_TIMEOUT = "LAYERCRIT_DOWNLOAD_TIMEOUT"


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
            raise IncompleteDownload(f"received {written} of {total} bytes from {url}")
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


def version(name: str) -> str:
    try:
        return importlib_metadata.version(name)
    except importlib_metadata.PackageNotFoundError:
        return "unknown"
