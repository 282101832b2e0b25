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

from conftest import REPO, SNAKEMAKE, snakemake_env, standin_imagenet

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


# The last commit before issue 32 moved the package into subpackages and the rules' helpers into
# workflow/rules/functions/ (its job records are the golden ones).
BEFORE_THE_MOVES = "52c7884"


@pytest.mark.rehearsal  # a whole demo run; the job records above check the same on every run
def test_a_demo_made_before_the_moves_plans_nothing_after_them(tmp_path):
    """The demo made in a clone at BEFORE_THE_MOVES, that clone then checked out at this commit
    (as a user's `git pull` does: only changed files get a new modification time)."""
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    if subprocess.run(["git", "-C", str(REPO), "cat-file", "-e", f"{BEFORE_THE_MOVES}^{{commit}}"]).returncode or not head:
        pytest.skip(f"this checkout lacks the history back to {BEFORE_THE_MOVES}")
    clone, run = tmp_path / "layercrit", tmp_path / "run"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    subprocess.run(["git", "-C", str(clone), "checkout", "-q", BEFORE_THE_MOVES], check=True)
    run.mkdir()
    snakemake = [SNAKEMAKE, "-s", str(clone / "Snakefile"), "--directory", str(run)]
    env = snakemake_env(PYTHONPATH=str(clone / "src"))
    subprocess.run([*snakemake, "--cores", "2"], check=True, capture_output=True, env=env, timeout=1200)
    subprocess.run(["git", "-C", str(clone), "checkout", "-q", head], check=True)
    proc = subprocess.run([*snakemake, "-n"], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0 and "Nothing to be done" in proc.stdout + proc.stderr, proc.stdout[-3000:]
