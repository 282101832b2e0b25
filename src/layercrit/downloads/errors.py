"""What can go wrong while fetching a file, as exceptions whose messages name what the file was
for, and an error's message shortened to one line for those messages and the logs."""

from __future__ import annotations

import re


class SourceError(Exception):
    """A model's weights (or another file) could not be fetched or converted; the message names
    what the file was for."""


class DownloadError(SourceError):
    """A download failed (after retries, where retrying made sense)."""


class EntryNotFound(DownloadError):
    """The host answered that the file does not exist."""


class ChecksumError(SourceError):
    """A file's sha256 differs from the expected one; the file was moved aside."""


class IncompleteDownload(Exception):
    """Fewer bytes arrived than announced (transient: retried)."""


def brief(error: BaseException, limit: int = 400) -> str:
    """An error's message on one line, shortened."""
    text = str(error)
    # torch's weights-only message opens with advice to switch weights_only off; keep the cause.
    match = re.search(r"WeightsUnpickler error:(.*)", text, re.S)
    text = " ".join((match.group(1) if match else text).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"
