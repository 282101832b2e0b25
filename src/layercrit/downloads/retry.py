"""Which failures are worth another attempt (connection trouble, truncated bodies, HTTP
408/429/5xx, whatever library raised them), and the retries with exponential backoff."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterator
from typing import Any

import requests
import tenacity

from layercrit.downloads.errors import IncompleteDownload, brief
from layercrit.downloads.remotes import DownloadSettings

log = logging.getLogger(__name__)

# HTTP statuses worth another attempt: timeouts, rate limits, server-side trouble.
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def retrying(settings: DownloadSettings, model_id: str, url: str) -> tenacity.Retrying:
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
        retry=tenacity.retry_if_exception(is_transient),
        before_sleep=before_sleep,
        reraise=True,
    )


def is_transient(error: BaseException) -> bool:
    """Worth another attempt: connection trouble, a truncated body, or a 408/429/5xx answer."""
    import gdown.exceptions
    from huggingface_hub.errors import HfHubHTTPError

    for e in _causes(error):
        if isinstance(e, (IncompleteDownload, requests.Timeout, requests.exceptions.ChunkedEncodingError)):
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
