"""`make gpu-check` (tools/gpu_check.py) on its CPU-only paths: the command is ready for the
rare GPU machine. What only a GPU shows is in tests/test_gpu.py and runs there."""

import json
import subprocess
import sys

import pytest
import torch

from tools import gpu_check
from conftest import REPO, snakemake_env

pytestmark = pytest.mark.slow
CHECK = [sys.executable, "-m", "tools.gpu_check"]


@pytest.mark.rehearsal  # its study and benchmark repeat test_workflow's and test_side_by_side's runs
def test_the_check_runs_on_the_cpu_in_quick_mode(tmp_path):
    # Its tests step runs test files this suite runs anyway: here only that they exist (below).
    proc = subprocess.run([*CHECK, "--device", "cpu", "--quick", "--precision", "fp32", "bf16", "--steps", "study", "benchmark", "side_by_side",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=900, env=snakemake_env(), cwd=REPO)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    record = json.loads((tmp_path / "gpu_check.json").read_text())
    assert "tests" not in record
    comparisons = record["study"]["comparisons"]
    assert set(comparisons) == {"cpu_fp32", "cpu_bf16"} and all(c["ok"] for c in comparisons.values())
    assert comparisons["cpu_fp32"]["max_abs_diff"] == 0.0  # the same device and precision: identical
    bench = record["benchmark"]
    assert {"ours_fp32", "ours_fp32_reuse", "ours_bf16", "authors_style_fp32"} <= set(bench) and bench["images"] == 16
    side = record["side_by_side"]  # 2 emulated GPUs on the CPU
    assert side["ok"] and side["devices"] == 2 and side["per_job"]["load_image_set"] < 0.1
    table = (tmp_path / "gpu_check.md").read_text()
    assert "| cpu_bf16 |" in table and "Authors'-style / ours" in table
    assert "Side by side on 2 device(s), 20 reset jobs: bitwise the serial results: yes" in table


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_a_gpu_it_says_so_and_how_to_check_the_command(tmp_path):
    proc = subprocess.run([*CHECK, "--out", str(tmp_path)], capture_output=True, text=True, timeout=120, env=snakemake_env(), cwd=REPO)
    assert proc.returncode == 2 and "torch sees no CUDA GPU" in proc.stderr and "--device cpu --quick" in proc.stderr
    assert not list(tmp_path.iterdir())


def test_the_test_files_the_check_runs_exist():
    assert gpu_check.TEST_FILES and all((REPO / f).is_file() for f in gpu_check.TEST_FILES)
