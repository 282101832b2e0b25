"""The verified download cache: a remote file's local copy, complete and with the expected sha256.

It exists apart from the source kinds (:mod:`layercrit.weights.sources`) because more than model weights
are downloaded (the authors' published results, ``workflow/scripts/fetch_published.py``), and
because what makes a download trustworthy (atomic renames, checksums, retries, mirrors) does not
depend on what the file is. Callers describe a file as a :class:`Remote` (:func:`url_remote`,
:func:`hub_remote`, :func:`drive_remote`; ``remotes``) and get its cached copy from
:func:`fetch_file` (``cache``); ``retry`` decides what is retried, ``errors`` what is raised.

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

from layercrit.downloads.cache import SIDECAR_SUFFIX, fetch_file
from layercrit.downloads.errors import ChecksumError, DownloadError, EntryNotFound, SourceError, brief
from layercrit.downloads.remotes import (
    CHUNK,
    ENV_BACKOFF,
    ENV_RETRIES,
    ENV_TIMEOUT,
    ENV_URL_REWRITE,
    DownloadSettings,
    DriveRemote,
    HubRemote,
    Remote,
    drive_remote,
    hub_remote,
    url_remote,
    version,
)
from layercrit.downloads.retry import RETRY_STATUS

# the names of the former module layercrit/downloads.py
__all__ = [
    "CHUNK", "ENV_BACKOFF", "ENV_RETRIES", "ENV_TIMEOUT", "ENV_URL_REWRITE", "RETRY_STATUS", "SIDECAR_SUFFIX",
    "ChecksumError", "DownloadError", "DownloadSettings", "DriveRemote", "EntryNotFound", "HubRemote", "Remote",
    "SourceError", "brief", "drive_remote", "fetch_file", "hub_remote", "url_remote", "version",
]  # fmt: skip
