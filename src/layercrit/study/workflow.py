"""The one way to build a study from a workflow config: what the Snakefile, the scripts, the
Slurm launcher and the tests all call, so that none of them can check less than another.

``load_workflow_study`` does, in order, what a run does between reading its config and having
its two studies: the config files read again for keys given twice, the config checked against
its schema (defaults filled in), the zoo paths found from any directory, each zoo checked
against its schema and its recorded checkpoints found from any directory, the study and the
authors' published study built, the published study's name kept for it, and every local source
file of a downloaded model there. Each problem is a :class:`ConfigError` with the message the
run stops with (the Snakefile raises it as a WorkflowError).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layercrit.weights.specs import missing_local_files
from layercrit.study.core import PUBLISHED_STUDY, Study, build_study
from layercrit.study.errors import ConfigError
from layercrit.study.schemas import CHECKOUT, validated
from layercrit.study.yamlfiles import check_config_files, workflow_file
from layercrit.study.zoo import load_zoo


@dataclass(frozen=True)
class WorkflowStudies:
    """A run's config (validated, defaults filled in, zoo paths resolved), its study, and the
    authors' published results as a study of their own (drawn with the paper's zoo)."""

    config: dict[str, Any]
    study: Study
    published: Study


def load_workflow_study(
    config: dict[str, Any], configfiles: Iterable[str | Path] = (), root: str | Path = CHECKOUT, workdir: str | Path = "."
) -> WorkflowStudies:
    """The studies of a run with ``config`` (Snakemake's, merged from ``configfiles`` and
    --config; checked and completed in place), the workflow's checkout at ``root``, run in
    ``workdir``. A :class:`ConfigError` says what stops the run, in the words the run uses."""
    config = workflow_config(config, configfiles, root, workdir)
    study = zoo_study(config, config["zoo"], "zoo", f"zoo {config['zoo']!r}", "Invalid configuration", root, workdir)
    published = zoo_study(
        PUBLISHED_STUDY,
        config["published"]["zoo"],
        "published.zoo",
        "published zoo",
        "Invalid configuration of published",
        root,
        workdir,
    )
    if study.name == published.name:
        raise ConfigError(
            f"Invalid configuration: study name {published.name!r} is reserved for the authors' results; choose another"
        )
    # A local source file that is not there stops the run here, naming its zoo key (as data.root does).
    downloaded = [m for m in study.models if m not in study.trained_models]
    missing = [p for m in downloaded for p in missing_local_files(m, study.models[m].source)]
    if missing:
        raise ConfigError("Invalid zoo:\n" + "\n".join(missing))
    return WorkflowStudies(config, study, published)


def workflow_config(
    config: dict[str, Any], configfiles: Iterable[str | Path] = (), root: str | Path = CHECKOUT, workdir: str | Path = "."
) -> dict[str, Any]:
    """``config`` checked as a run checks it, in place: ``configfiles`` read again for a key given
    twice (Snakemake keeps the last silently), the schema with its defaults, and the zoo paths
    resolved once (``workflow_file``), so that job scripts read the same paths."""
    try:
        check_config_files(configfiles)
    except ConfigError as error:
        raise ConfigError(f"Invalid config file: {error}") from None
    validated(config, "config", "config")
    config["zoo"] = workflow_file(config["zoo"], root, workdir)
    config["published"]["zoo"] = workflow_file(config["published"]["zoo"], root, workdir)
    return config


def zoo_study(
    study_config: dict[str, Any],
    zoo_path: str | Path,
    zoo_key: str,
    what: str,
    problem: str,
    root: str | Path = CHECKOUT,
    workdir: str | Path = ".",
) -> Study:
    """The study of ``study_config`` with the zoo at ``zoo_path`` (named by config key ``zoo_key``),
    that zoo schema-checked (``what``: how messages name it); a problem of the zoo file or of
    the study is said after ``problem``, one of the zoo's schema as the schema check says it."""
    zoo_path = Path(zoo_path)
    try:
        zoo = load_zoo(zoo_path, zoo_key)
    except ConfigError as error:
        raise ConfigError(f"{problem}: {error}") from None
    validated(zoo, "zoo", what)
    for model in zoo["models"]:
        # a recorded checkpoint shipped with the workflow (the demo's) is found from any directory
        recorded = model["source"].get("checkpoint")
        if recorded and not re.match(r"^[a-z]+://", recorded["url"]):
            recorded["url"] = workflow_file(recorded["url"], root, workdir)
    try:
        return build_study(study_config, zoo, zoo_path.parent)
    except ConfigError as error:
        raise ConfigError(f"{problem}: {error}") from None


def load_study(config: dict[str, Any], root: str | Path = CHECKOUT) -> Study:
    """The Study of a Snakemake config, zoo file included, built as the run builds it (a job
    script's ``snakemake.config`` is already checked: checking it again changes nothing)."""
    return load_workflow_study(config, (), root).study
