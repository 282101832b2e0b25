"""A local stand-in for the hosts model weights are published on, for tests without internet.

One threaded HTTP server on 127.0.0.1 (random port) serves registered files and imitates, as far
as the clients we use need:

- plain web servers: files with Content-Length; injected faults (an error status a number of
  times, or a truncated body: fewer bytes than announced, then the connection closes);
- the Hugging Face Hub's resolve endpoint ``/{repo}/resolve/{revision}/{file}`` (HEAD and GET,
  with ``X-Repo-Commit``, ``ETag`` = the sha256 as for LFS files, ``Content-Length``; missing
  files answer 404 with ``X-Error-Code: EntryNotFound``), as used by ``hf_hub_download``;
- Google Drive: ``drive.google.com/uc?id=`` redirects to ``drive.usercontent.google.com/download``,
  which returns small files directly (``Content-Disposition: attachment``) and, for large files,
  the "can't scan this file for viruses" page whose ``download-form`` leads to the file.

Drive is reached under its real host names (gdown only runs its Drive flow for them):
:func:`route_drive_hosts` makes ``requests`` send those hosts' requests to this server, with
the host name as the first path segment (``/drive.google.com/uc?...``).
"""

from __future__ import annotations

import hashlib
import html
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

DRIVE_HOSTS = ("drive.google.com", "drive.usercontent.google.com", "docs.google.com")


@dataclass
class Route:
    data: bytes
    content_type: str = "application/octet-stream"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class DriveFile:
    data: bytes
    name: str
    large: bool
    uuid: str = "5a1e0b2c-0000-4000-8000-000000000000"


class FakeHosts:
    """The server; register content with :meth:`serve`, :meth:`add_hf_file`, :meth:`add_drive_file`."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.drive: dict[str, DriveFile] = {}
        self.faults: dict[str, list[tuple[str, int]]] = defaultdict(list)
        self.log: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        hosts = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                hosts._handle(self, "GET")

            def do_HEAD(self) -> None:  # noqa: N802
                hosts._handle(self, "HEAD")

            def log_message(self, format: str, *args) -> None:  # keep test output clean
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        # A short poll interval keeps shutdown (once per test) fast.
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    # -- registration -----------------------------------------------------------------------

    @property
    def netloc(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    @property
    def base(self) -> str:
        return f"http://{self.netloc}"

    def url(self, path: str) -> str:
        return self.base + path

    def serve(self, path: str, data: bytes, content_type: str = "application/octet-stream", headers: dict | None = None) -> str:
        """Serve ``data`` at ``path``; returns its URL."""
        self.routes[path] = Route(data, content_type, dict(headers or {}))
        return self.url(path)

    def fail(self, path: str, status: int = 503, times: int = 1) -> None:
        """Answer the next ``times`` requests for ``path`` with ``status``."""
        self.faults[path].extend([("status", status)] * times)

    def truncate(self, path: str, times: int = 1) -> None:
        """Send only half of the body of the next ``times`` GETs of ``path``, then close."""
        self.faults[path].extend([("truncate", 0)] * times)

    def add_hf_file(self, repo: str, filename: str, data: bytes, *, revision: str = "main", etag: str | None = None) -> str:
        """Serve a Hub file under its branch and its commit; returns the commit hash.

        The ETag is the data's sha256, as the Hub reports it for LFS files, unless ``etag`` is given.
        """
        commit = hashlib.sha1(f"{repo}@{revision}".encode()).hexdigest()
        headers = {"X-Repo-Commit": commit, "ETag": f'"{etag or hashlib.sha256(data).hexdigest()}"'}
        for rev in (revision, commit):
            self.serve(f"/{repo}/resolve/{rev}/{filename}", data, headers=headers)
        return commit

    def add_drive_file(self, file_id: str, data: bytes, *, name: str = "checkpoint.pth", large: bool = False) -> None:
        """A public Drive file; ``large`` files go through the virus-scan confirmation page."""
        self.drive[file_id] = DriveFile(data, name, large)

    # -- inspection -------------------------------------------------------------------------

    def count(self, path: str | None = None, method: str | None = None) -> int:
        """Requests received (for ``path``, ignoring the query, and/or ``method``)."""
        with self.lock:
            return sum(1 for m, p in self.log if (path is None or urlsplit(p).path == path) and (method is None or m == method))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- serving ----------------------------------------------------------------------------

    def _handle(self, request: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(request.path)
        path, query = parts.path, parse_qs(parts.query)
        with self.lock:
            self.log.append((method, request.path))
            fault = self.faults[path].pop(0) if self.faults.get(path) else None
        if fault and fault[0] == "status":
            return self._send(request, method, fault[1], b"<html><body>Service Unavailable</body></html>", "text/html")
        truncate = fault is not None and fault[0] == "truncate"

        if path == "/drive.google.com/uc":
            file_id = query.get("id", [""])[0]
            target = "https://drive.usercontent.google.com/download?" + urlencode({"id": file_id, "export": "download"})
            return self._send(request, method, 303, b"", "text/html", {"Location": target})
        if path == "/drive.usercontent.google.com/download":
            return self._drive_download(request, method, query, truncate)

        route = self.routes.get(path)
        if route is None:
            headers = {"X-Error-Code": "EntryNotFound"} if "/resolve/" in path else {}
            return self._send(request, method, 404, b"Not Found", "text/plain", headers)
        self._send(request, method, 200, route.data, route.content_type, route.headers, truncate=truncate)

    def _drive_download(self, request: BaseHTTPRequestHandler, method: str, query: dict, truncate: bool) -> None:
        file = self.drive.get(query.get("id", [""])[0])
        if file is None:
            page = b"<html><head><title>Google Drive - Page Not Found</title></head><body>Sorry</body></html>"
            return self._send(request, method, 404, page, "text/html; charset=utf-8")
        confirmed = query.get("confirm") == ["t"] and query.get("uuid") == [file.uuid]
        if file.large and not confirmed:
            return self._send(request, method, 200, self._virus_scan_page(query["id"][0], file), "text/html; charset=utf-8")
        disposition = f'attachment; filename="{file.name}"'
        self._send(
            request, method, 200, file.data, "application/octet-stream", {"Content-Disposition": disposition}, truncate=truncate
        )

    @staticmethod
    def _virus_scan_page(file_id: str, file: DriveFile) -> bytes:
        # Drive sends this page minified on one line; gdown parses it line by line.
        inputs = "".join(
            f'<input type="hidden" name="{k}" value="{html.escape(v)}">'
            for k, v in (("id", file_id), ("export", "download"), ("confirm", "t"), ("uuid", file.uuid))
        )
        page = (
            "<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head><body>"
            '<div class="uc-main"><p class="uc-warning-caption">Google Drive can\'t scan this file for viruses.</p>'
            f'<p class="uc-warning-subcaption">{html.escape(file.name)} ({len(file.data)} bytes) is too large for '
            "Google to scan for viruses. Would you still like to download this file?</p>"
            '<form id="download-form" action="https://drive.usercontent.google.com/download" method="get">'
            f'<input type="submit" id="uc-download-link" value="Download anyway">{inputs}</form></div></body></html>'
        )
        return page.encode() + b"\n"

    @staticmethod
    def _send(
        request: BaseHTTPRequestHandler,
        method: str,
        status: int,
        body: bytes,
        content_type: str,
        headers: dict | None = None,
        truncate: bool = False,
    ) -> None:
        request.send_response(status)
        request.send_header("Content-Type", content_type)
        request.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            request.send_header(key, value)
        request.end_headers()
        if method == "HEAD":
            return
        try:
            request.wfile.write(body[: len(body) // 2] if truncate else body)
            request.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        # HTTP/1.0: the connection closes after each response, so a short body reads as truncated.
        request.close_connection = True


def route_drive_hosts(monkeypatch, hosts: FakeHosts) -> None:
    """Make ``requests`` send Google Drive's hosts' requests to ``hosts`` (like a DNS override)."""
    import requests.adapters

    original = requests.adapters.HTTPAdapter.send

    def send(adapter, request, *args, **kwargs):
        parts = urlsplit(request.url)
        if parts.hostname in DRIVE_HOSTS:
            request.url = urlunsplit(("http", hosts.netloc, f"/{parts.hostname}{parts.path}", parts.query, ""))
        return original(adapter, request, *args, **kwargs)

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", send)
