"""The workflow stays lint-clean and snakefmt-formatted (`make lint`), so CI fails on a regression."""

import subprocess
import sys
from pathlib import Path

from conftest import REPO, SNAKEMAKE, snakemake_env

SNAKEFMT = str(Path(sys.executable).parent / "snakefmt")


def test_snakemake_lint_finds_nothing():
    proc = subprocess.run([SNAKEMAKE, "--lint"], cwd=REPO, capture_output=True, text=True, env=snakemake_env(), timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Congratulations, your workflow is in a good condition!" in proc.stdout + proc.stderr


def test_snakefmt_would_change_nothing():
    proc = subprocess.run(
        [SNAKEFMT, "--check", "Snakefile", "workflow/rules"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
