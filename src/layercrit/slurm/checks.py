"""What layercrit-slurm refuses before it submits anything, because the steps would find it out
only in their allocations, after queueing, or never: a config the steps refuse, more allocations
than reset jobs, a study that needs GPUs without them (``check_study``); a step whose time limit
its partition does not allow, which Slurm accepts and leaves pending for good
(``check_partition_limits``); and a chain of the same study already queued or running in the same
directory, beside which a second one would compute, and delete, the same results
(``check_no_chain_queued``).

What the cluster cannot be asked here (no Slurm commands on this machine, a controller that does
not answer) is not a reason to refuse: the check is skipped with a note.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from layercrit.slurm.cluster import partitions, queued_chain_jobs, slurm_seconds, slurm_time
from layercrit.slurm.jobs import NEVER_SATISFIED, PARTITION_OPTION, TIME_OPTION

if TYPE_CHECKING:
    from layercrit.slurm.steps import SlurmSettings, Step


def _note(text: str) -> None:
    print(f"layercrit-slurm: note: {text}", file=sys.stderr)


def study_config(options: argparse.Namespace) -> dict[str, Any]:
    """The config the steps' Snakemake will have: the user's --configfile and --config merged by
    Snakemake's own code, over the default study where they name none (the Snakefile's
    ``configfile:``), with the schema's defaults filled in as the Snakefile's validation does."""
    from snakemake.cli import parse_config
    from snakemake.common.configfile import load_configfile
    from snakemake.settings.types import ConfigSettings
    from snakemake.utils import update_config

    from layercrit.study import CHECKOUT, check_config_files, workflow_config, workflow_file

    workdir = snakemake_workdir(options)
    root = Path(options.snakefile).resolve().parent if options.snakefile else CHECKOUT
    # a key given twice first: Snakemake's merge below reads the files without that check
    check_config_files(p for p in options.configfile or [] if Path(p).is_file())
    given = ConfigSettings(config=parse_config(options.config), configfiles=options.configfile).overwrite_config
    config = {} if "study" in given else load_configfile(workflow_file("config/demo.yaml", root, workdir))
    update_config(config, given)
    # then the steps' own checks of the merged config (layercrit.study.workflow, as common.smk)
    return workflow_config(config, (), root, workdir)


def snakemake_workdir(options: argparse.Namespace) -> Path:
    """The directory the steps' Snakemake runs in (its --directory, else this one), absolute."""
    return Path(options.directory or ".").resolve()


def check_study(settings: SlurmSettings, options: argparse.Namespace, gpus: int) -> dict[str, Any]:
    """Refuse what the shards would only find out in their allocations; the study's config. More
    allocations than reset jobs leaves a shard without any (it fails); GPUs that the study's
    evaluations need but the allocations lack make every evaluation refuse."""
    from layercrit.study import ConfigError, load_study

    try:
        config = study_config(options)
    except ConfigError as error:  # the steps would fail on it in their allocations, after queueing
        raise SystemExit(f"layercrit-slurm: nothing submitted: {error}") from None
    try:
        jobs = len(load_study(config).reset_jobs())
    except Exception as error:  # noqa: BLE001 - any reason: the steps check the config on the nodes
        # e.g. data only the compute nodes see (imagenet_val): not a reason to refuse here
        _note(f"could not read the study here to check it ({type(error).__name__}: {error}); submitting anyway, the steps check it on the nodes")
        return config
    if settings.allocations > jobs:
        raise SystemExit(
            f"layercrit-slurm: --allocations {settings.allocations} is more than the study's {jobs} reset jobs; "
            f"each allocation runs a part of them, at least one: use --allocations {jobs} or fewer"
        )
    if config["device"] != "cpu" and not gpus:
        raise SystemExit(
            f"layercrit-slurm: the study's evaluations need a GPU each (device: {config['device']}), but the allocations "
            "have none (--gpus 0): ask for GPUs (--gpus, --gres), or set device: cpu for a study on CPUs "
            "(e.g. -- --config device=cpu)"
        )
    return config


def requested_partitions(sbatch: Sequence[str]) -> list[str]:
    """The partitions an sbatch command line asks for: its last -p/--partition, as sbatch reads
    it, else $SBATCH_PARTITION; [] for the cluster's default partition."""
    found = os.environ.get("SBATCH_PARTITION", "")
    for option, value in zip(sbatch, [*sbatch[1:], ""]):
        if option.startswith("--partition="):
            found = option.partition("=")[2]
        elif option in ("--partition", "-p"):
            found = value
        elif option.startswith("-p") and not option.startswith("--"):
            found = option[2:]
    return [name for name in found.split(",") if name]


def check_partition_limits(commands: Sequence[tuple[Step, Sequence[str]]]) -> None:
    """Refuse a step whose time limit exceeds the MaxTime of every partition it may run in: Slurm
    accepts it and leaves it PENDING (PartitionTimeLimit) for good. (``sbatch --test-only`` does
    not tell: on the test cluster it gives a start time for such a job.)"""
    known = partitions()
    if isinstance(known, str):
        _note(f"could not read the partitions' time limits ({known}); not checked")
        return
    for step, sbatch in commands:
        asked = slurm_seconds(step.time)
        names = requested_partitions(sbatch) or [p.name for p in known.values() if p.default]
        limits = [known[name] for name in names if name in known]  # an unknown name: sbatch refuses it itself
        allowed = [p.max_time_s for p in limits]
        if asked is None or not limits or any(limit is None or asked <= limit for limit in allowed):
            continue
        most = max(limit for limit in allowed if limit is not None)
        where = ", ".join(f"{p.name} (MaxTime {slurm_time(p.max_time_s or 0)})" for p in limits)
        raise SystemExit(
            f"layercrit-slurm: nothing submitted: the {step.name} step asks for {TIME_OPTION[step.name]} {step.time}, more than "
            f"its partition allows: {where}. Slurm would accept it and leave it pending for good (PartitionTimeLimit). "
            f"Give {TIME_OPTION[step.name]} {slurm_time(most)} or less, or another partition ({PARTITION_OPTION[step.name]})."
        )


def check_no_chain_queued(study: str, workdir: Path, step_names: Sequence[str]) -> None:
    """Refuse a second chain for the study ``study`` in ``workdir`` while one is queued or running.

    A chain is recognised by its steps' job names (``layercrit-<step>``) and comment (study and
    directory, ``layercrit.slurm.cluster.chain_comment``), as squeue lists them for every user it
    shows; a step left waiting on a dependency that failed does not count (it can never run)."""
    queued = queued_chain_jobs(step_names)
    if isinstance(queued, str):
        _note(f"could not look for a chain of this study already in the queue ({queued}); not checked")
        return
    chain = [job for job in queued if (job.study, job.workdir) == (study, str(workdir)) and job.reason != NEVER_SATISFIED]
    if not chain:
        return
    ids = sorted({job.array_job for job in chain}, key=int)
    jobs = "; ".join(f"{job.name.removeprefix('layercrit-')} (Slurm job {job.job}): {job.state}"
                     + (f" ({job.reason})" if job.reason not in ("", "None") else "") for job in chain)  # fmt: skip
    raise SystemExit(
        f"layercrit-slurm: nothing submitted: study '{study}' in {workdir} already has a chain queued or running: {jobs}. "
        f"A second chain would compute the same results beside it. Watch it with: squeue --jobs={','.join(ids)}; once it "
        f"has ended, this command computes what is still missing. To stop it instead: scancel {' '.join(ids)}"
    )
