"""A study made with an earlier tree plans nothing with this one, as long as what Snakemake
compares stays the same for every job: params, inputs, the code of run blocks and the bytes of
scripts (layercrit.testing.job_records). The records of the demo, the paper and the
beyond-ResNet studies are pinned in tests/golden/job_records/; moving code must leave them equal.

A change that is meant to re-run jobs updates them, and says so in its commit:
    LAYERCRIT_UPDATE_GOLDEN=1 pytest tests/test_finished_studies.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, snakemake_env, standin_imagenet

GOLDEN = REPO / "tests" / "golden" / "job_records"
STUDIES = {
    "demo": ("config/demo.yaml", False),
    "beyond_resnet": ("config/beyond_resnet.yaml", True),
    "paper": ("config/config.yaml", True),
}


def fixed_standin_imagenet(root):
    """A stand-in validation folder whose listing digest (names, sizes, mtimes) is the same in every run."""
    standin_imagenet(root)
    for path in root.rglob("*"):
        os.utime(path, ns=(1_700_000_000_000_000_000,) * 2)
    return root


@pytest.mark.parametrize("study", list(STUDIES))
def test_the_jobs_of_a_finished_study_are_unchanged(study, tmp_path):
    configfile, needs_imagenet = STUDIES[study]
    config = {"imagenet_val": str(fixed_standin_imagenet(tmp_path / "val"))} if needs_imagenet else {}
    proc = subprocess.run(
        [sys.executable, "-m", "layercrit.testing.job_records", "--configfile", str(REPO / configfile),
         "--workdir", str(tmp_path), "--config", json.dumps(config)],
        capture_output=True, text=True, env=snakemake_env(), timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    now = json.loads(proc.stdout)
    golden = GOLDEN / f"{study}.json"
    if os.environ.get("LAYERCRIT_UPDATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(json.dumps(now, indent=1, sort_keys=True) + "\n")
    pinned = json.loads(golden.read_text())
    assert {rule: entry["jobs"] for rule, entry in now.items()} == {rule: entry["jobs"] for rule, entry in pinned.items()}
    for rule, entry in pinned.items():
        # the first jobs in full, so that a failure shows which field moved
        assert now[rule]["samples"] == entry["samples"], f"rule {rule}: its jobs' records changed"
        assert now[rule]["digest"] == entry["digest"], (
            f"rule {rule}: the records of some of its {entry['jobs']} jobs changed (see `python -m "
            "layercrit.testing.job_records --full` before and after)"
        )
