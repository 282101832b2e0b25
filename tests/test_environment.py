"""The pinned environment and the README's demo numbers are what they claim to be."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import pandas as pd
import pytest

from tools import check_python, conda_env, config_docs, demo_compare, demo_docs, demo_zoo

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "lock.txt"


def test_every_locked_package_is_installed_at_its_locked_version():
    pins, _ = conda_env.read_lock(LOCK)
    assert {"torch", "torchvision", "timm", "snakemake", "pytest"} <= set(pins)
    installed = {conda_env.canonical(d.metadata["Name"]): d.version for d in metadata.distributions()}
    wrong = {name: (version, installed.get(name)) for name, version in pins.items() if installed.get(name) != version}
    assert not wrong, f"not the lock's environment (locked, installed): {wrong}; run `make install`"


def test_every_locked_package_has_hashes():
    # pip then refuses any file whose sha256 is not in the lock (`--require-hashes`).
    blocks = LOCK.read_text().split("==")[1:]
    assert blocks and all("--hash=sha256:" in block for block in blocks)


# The Pythons the README and pyproject claim (issue 31 item 2): the lock must install on each.
SUPPORTED_MINORS = (11, 12, 13)


def _python(minor: int) -> str | None:
    """An interpreter of Python 3.minor on this machine that runs: on PATH, or one pyenv installed
    (its shims on PATH answer only for the versions it has activated)."""
    import os

    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    candidates = [shutil.which(f"python3.{minor}"), *map(str, sorted(pyenv.glob(f"3.{minor}.*/bin/python3.{minor}")))]
    for python in filter(None, candidates):
        ok = subprocess.run([python, "-c", f"import sys; sys.exit(sys.version_info[:2] != (3, {minor}))"], capture_output=True)
        if ok.returncode == 0:
            return python
    return None


@pytest.mark.slow
@pytest.mark.parametrize("minor", [SUPPORTED_MINORS[0], SUPPORTED_MINORS[-1]])
def test_the_lock_installs_on_the_lowest_and_the_highest_python_claimed(tmp_path, minor):
    """pip resolves every locked file for that interpreter (a dry run: its metadata, not its wheels)."""
    python = _python(minor)
    if python is None:
        pytest.skip(f"no python3.{minor} on this machine")
    subprocess.run([python, "-m", "venv", str(tmp_path / "venv")], check=True)
    proc = subprocess.run([str(tmp_path / "venv/bin/python"), "-m", "pip", "install", "--dry-run", "--quiet", "--disable-pip-version-check",
                           "--require-hashes", "--no-deps", "-r", str(LOCK)], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, f"the lock does not install on Python 3.{minor}:\n{proc.stderr[-3000:]}"


def test_make_install_stops_at_once_on_a_python_the_lock_does_not_install_on(tmp_path):
    python = _python(SUPPORTED_MINORS[0] - 1)
    if python is None:
        pytest.skip(f"no python3.{SUPPORTED_MINORS[0] - 1} on this machine")
    started = time.monotonic()
    proc = subprocess.run(["make", "-C", str(ROOT), "install", f"PYTHON={python}", f"VENV={tmp_path / 'venv'}"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode != 0 and time.monotonic() - started < 30
    assert f"needs Python 3.{SUPPORTED_MINORS[0]} or newer" in proc.stderr and "make demo PYTHON=python3.12" in proc.stderr
    assert not (tmp_path / "venv").exists()


def test_the_versions_claimed_are_pyprojects():
    assert check_python.lowest_supported() == (3, SUPPORTED_MINORS[0])
    claimed = ", ".join(f"3.{m}" for m in SUPPORTED_MINORS[:-1]) + f" or 3.{SUPPORTED_MINORS[-1]}"
    assert f"(Python {claimed}:" in (ROOT / "README.md").read_text()


def test_the_conda_environment_pins_what_the_lock_pins():
    result = subprocess.run(
        [sys.executable, "-m", "tools.conda_env", str(LOCK), str(ROOT / "envs/layercrit.yaml"), "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    text = (ROOT / "envs/layercrit.yaml").read_text()
    pins, _ = conda_env.read_lock(LOCK)
    for name in ("torch", "timm", "snakemake", "pandas"):
        assert f"- {name}=={pins[name]}\n" in text
    assert "pytest" not in text  # the workflow's environment, not the test tools


@pytest.mark.parametrize("block", sorted(demo_docs.BLOCKS))
def test_the_readme_numbers_are_what_the_committed_runs_say(block):
    assert demo_docs.current_block(demo_docs.README.read_text(), block) == demo_docs.BLOCKS[block](), (
        f"README.md's {block} block differs from docs/: run `python -m tools.demo_docs render`"
    )


def test_the_readme_demo_block_changes_with_the_tables(tmp_path, monkeypatch):
    # The check above could not fail if the block ignored the tables: a changed accuracy must show.
    for name in (*demo_docs.TABLES, "run.json"):
        (tmp_path / name).write_bytes((demo_docs.DOCS / name).read_bytes())
    models = pd.read_csv(tmp_path / "models.csv")
    assert "| 12.3 % |" not in demo_docs.readme_block()
    models.loc[0, "top1"] = 12.345
    models.to_csv(tmp_path / "models.csv", index=False)
    monkeypatch.setattr(demo_docs, "DOCS", tmp_path)
    assert f"| {models.loc[0, 'display_name']} | " in demo_docs.readme_block()
    assert "| 12.3 % |" in demo_docs.readme_block()


def _fresh_copy(tmp_path):
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    for name in demo_docs.TABLES:
        (fresh / name).write_bytes((demo_docs.DOCS / name).read_bytes())
    return fresh


def _nudge(fresh, table, column, by, row=0):
    frame = pd.read_csv(fresh / table)
    frame.loc[row, column] += by
    frame.to_csv(fresh / table, index=False)


def test_a_run_equal_to_the_committed_one_passes(tmp_path):
    assert demo_compare.compare_tables(_fresh_copy(tmp_path), demo_compare.DOCS) == []


def test_float_noise_passes_on_any_cpu(tmp_path):
    fresh = _fresh_copy(tmp_path)  # what other kernels change in an evaluation: ~1e-5 points
    for table, column in demo_compare.TOLERANCE:
        if table != "layer profile":
            _nudge(fresh, table, column, 1e-4, row=3)
    assert demo_compare.compare_tables(fresh, demo_compare.DOCS) == []


@pytest.mark.parametrize("table, column", [key for key in demo_compare.TOLERANCE if key[0] != "layer profile"])
def test_any_number_moved_beyond_its_bound_fails(tmp_path, table, column):
    fresh = _fresh_copy(tmp_path)
    _nudge(fresh, table, column, 1.5 * demo_compare.TOLERANCE[(table, column)], row=2)
    problems = demo_compare.compare_tables(fresh, demo_compare.DOCS)
    assert any(p.startswith(f"{table}:{column}: differs by") for p in problems), problems


def test_a_shifted_layer_profile_fails_even_when_each_cell_stays_within_its_bound(tmp_path):
    fresh = _fresh_copy(tmp_path)
    summary = pd.read_csv(fresh / "summary.csv")
    summary.loc[summary["layer"] == "conv1", "criticality_mean"] += 0.09  # every model, just under 0.1
    summary.to_csv(fresh / "summary.csv", index=False)
    problems = demo_compare.compare_tables(fresh, demo_compare.DOCS)
    assert [p.split(":")[0] for p in problems] == ["layer profile"], problems


def test_a_number_missing_on_one_side_fails(tmp_path):
    fresh = _fresh_copy(tmp_path)
    _nudge(fresh, "models.csv", "top1", float("nan"))
    assert any(p.startswith("models.csv:top1") for p in demo_compare.compare_tables(fresh, demo_compare.DOCS))


def test_a_run_with_other_rows_fails(tmp_path):
    fresh = _fresh_copy(tmp_path)
    models = pd.read_csv(fresh / "models.csv")
    models.iloc[1:].to_csv(fresh / "models.csv", index=False)
    assert "models.csv: rows differ (['model'])" in demo_compare.compare_tables(fresh, demo_compare.DOCS)


def test_config_readme_is_what_the_schemas_say():
    assert config_docs.OUT.read_text() == config_docs.render(), "config/README.md is stale: run make config-docs"


def test_config_readme_describes_every_key():
    undescribed = [key for name in ("config", "zoo") for key, _, _, _, text in config_docs.rows(config_docs.load(name), "") if not text]
    assert not undescribed, f"keys without a description in workflow/schemas/: {undescribed}"


def test_config_readme_follows_a_schema_change(tmp_path, monkeypatch):
    for name in ("config", "zoo"):
        (tmp_path / f"{name}.schema.yaml").write_text((config_docs.SCHEMAS / f"{name}.schema.yaml").read_text())
    schema = tmp_path / "config.schema.yaml"
    schema.write_text(schema.read_text().replace("images per forward pass (the paper's 500)", "images per batch"))
    monkeypatch.setattr(config_docs, "SCHEMAS", tmp_path)
    text = config_docs.render()
    assert "images per batch" in text and text != config_docs.OUT.read_text()



def test_the_shipped_demo_zoo_is_what_its_zoo_records_and_was_trained_from_its_recipes():
    assert demo_zoo.check() == []


def test_a_recipe_edited_after_its_training_was_shipped_is_found(tmp_path, monkeypatch):
    import yaml

    from layercrit.study import relocatable_zoo

    zoo = relocatable_zoo(demo_zoo.ZOO)
    zoo["models"][1]["source"]["recipe"]["epochs"] = 39
    (tmp_path / "demo.yaml").write_text(yaml.safe_dump(zoo, sort_keys=False))
    monkeypatch.setattr(demo_zoo, "ZOO", tmp_path / "demo.yaml")
    problems = demo_zoo.check()
    assert len(problems) == 1 and problems[0].startswith(f"{zoo['models'][1]['id']}: trained from recipe"), problems
