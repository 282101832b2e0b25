"""A stand-in Hugging Face Hub for tests that fetch repositories: ``hosts`` serves files on
127.0.0.1 (layercrit.testing.fake_hosts) and points ``HF_ENDPOINT`` at it, without proxies or
offline mode from the environment and without download retries (a missing file fails at once)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from layercrit.testing.fake_hosts import FakeHosts


@pytest.fixture
def hosts(monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    server = FakeHosts()
    monkeypatch.setenv("HF_ENDPOINT", server.base)
    monkeypatch.setenv("LAYERCRIT_DOWNLOAD_RETRIES", "0")
    yield server
    server.close()


def layer_command(zoo: Path, arch: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """``python -m layercrit.zoo layers`` in ``cwd`` (its download cache ``cwd/downloads``), as a user runs it."""
    proc = subprocess.run(
        [sys.executable, "-m", "layercrit.zoo", "layers", str(zoo), arch, "--downloads", str(cwd / "downloads")],
        cwd=cwd, capture_output=True, text=True, env=os.environ.copy(), timeout=300,
    )  # fmt: skip
    if check and proc.returncode:
        raise AssertionError(proc.stderr[-4000:])
    return proc
