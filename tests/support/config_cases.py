"""Config-message checks: a study's config or zoo broken one way, and the message that stops it.

The run's checks are one function call, ``layercrit.study.load_workflow_study`` (common.smk
raises its ConfigError as the WorkflowError the user sees), so the tests call it in the test
process, with the config Snakemake's own code merges from ``--configfile`` and ``--config``
(milliseconds, where a ``snakemake -n`` costs seconds). ``assert_plan_fails`` runs the real
``snakemake -n``, for the few smoke tests that show a message reaches the user.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import REPO, run_snakemake


def break_config(path: Path, mutate: Callable[[dict[str, Any]], Any]) -> None:
    config = yaml.safe_load(path.read_text())
    mutate(config)
    path.write_text(yaml.safe_dump(config))


def break_zoo(workdir: Path, mutate: Callable[[dict[str, Any]], Any]) -> None:
    zoo = yaml.safe_load((workdir / "zoo.yaml").read_text())
    mutate(zoo)
    (workdir / "zoo.yaml").write_text(yaml.safe_dump(zoo, sort_keys=False))


def run_config(configfiles: Iterable[Path], config_args: Iterable[str] = ()) -> dict[str, Any]:
    """The config of ``snakemake --configfile <configfiles> --config <config_args>``, merged by
    Snakemake's own code; the Snakefile's default study (config/demo.yaml) where no file is given."""
    from snakemake.cli import parse_config
    from snakemake.common.configfile import load_configfile
    from snakemake.settings.types import ConfigSettings
    from snakemake.utils import update_config

    configfiles = list(configfiles)
    given = ConfigSettings(config=parse_config(list(config_args)), configfiles=configfiles).overwrite_config
    config = {} if configfiles else load_configfile(REPO / "config/demo.yaml")
    update_config(config, given)
    return config


def plan_error(workdir: Path, path: Path | None, *config_args: str) -> str:
    """The message that stops a run in ``workdir`` with config file ``path`` (None: the default
    study) and ``--config`` entries: the run's own check, in this process (it must fail)."""
    from layercrit.study import ConfigError, load_workflow_study

    configfiles = [Path(path).absolute()] if path else []
    config = run_config(configfiles, config_args)
    # in the run's directory, as the run: relative paths, and the messages that name them, are its
    with contextlib.chdir(workdir), pytest.raises(ConfigError) as error:
        load_workflow_study(config, configfiles, REPO)
    return str(error.value)


def assert_config_fails(workdir: Path, path: Path | None, expected: Iterable[str], *config_args: str) -> None:
    """The run's check refuses the study, and its message holds every expected fragment."""
    message = plan_error(workdir, path, *config_args)
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in:\n{message}"


def assert_plan_fails(workdir: Path, path: Path, expected: Iterable[str], *targets: str) -> None:
    """`snakemake -n` refuses the study, and its output holds every expected fragment."""
    proc = run_snakemake(workdir, "--configfile", str(path), "-n", *targets, check=False)
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    for fragment in expected:
        assert fragment in output, f"{fragment!r} not in:\n{output[-3000:]}"
