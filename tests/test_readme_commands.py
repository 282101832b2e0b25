"""Every command the README gives runs as written (issue 31 item 3).

The commands are read from the README itself: the lines of its bash blocks that start a
program, and the commands of its scaling table. Each runs in a stand-in of a fresh clone (this
checkout's files, linked), as written, with only what a reader fills in filled in: the number of
GPUs or allocations (N, M), the ImageNet folder (a stand-in of empty files: planning reads no
image) and the study config the README asks the reader to write. Where a real run takes long,
the run is a plan: `snakemake -n`, `make -n`, `layercrit-slurm --dry-run`. The deploy block is
tests/test_deploy.py's.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO, snakemake_env, standin_imagenet

pytestmark = pytest.mark.slow

README = (REPO / "README.md").read_text()
PROGRAMS = ("snakemake", "make", "layercrit-slurm")
# Needs a finished study: tests/test_workflow.py builds a report from one.
NEEDS_RESULTS = ("snakemake --report",)


def readme_commands() -> list[str]:
    commands = []
    for block in re.findall(r"```bash\n(.*?)\n```", README, re.S):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            words = shlex.split(line) if line else []
            program = next((w for w in words if "=" not in w), "")
            if program in PROGRAMS and not line.startswith(NEEDS_RESULTS):
                commands.append(line)
    # the scaling table: | where | `the one command` | cost |
    commands += re.findall(r"^\| [^|`]+ \| `((?:snakemake|layercrit-slurm) [^`]+)` \|", README, re.M)
    # commands in the text (a placeholder such as <that file> is the reader's to fill: left out)
    for code in re.findall(r"`((?:[A-Z_]+=\S+ )*snakemake(?: [^`]*)?)`", README):
        code = " ".join(code.split())
        if "<" not in code and not code.startswith(NEEDS_RESULTS) and code.split()[-1] not in ("--until", "--config", "--forcerun"):
            commands.append(code)
    # the named targets, each a command of its own: "named targets: aggregate (tables), figures, ..."
    named = re.search(r"named targets: ([^\n]*)", README).group(1)
    commands += [f"snakemake {target}" for target in re.findall(r"(\w+)(?: \([^)]*\))?(?:,|$)", named)]
    return list(dict.fromkeys(commands))


def plan_key(command: str) -> str:
    """Commands that differ only in --cores, --resources or where ImageNet is plan the same jobs: one plan of each
    (a plan of the paper study takes 25-60 s here), the others' options are Snakemake's to parse."""
    return re.sub(r"imagenet_val=\S+", "imagenet_val", re.sub(r" --(cores|resources) \S+", "", command))


COMMANDS = list({plan_key(c): c for c in reversed(readme_commands())}.values())[::-1]


def test_the_readme_has_the_commands_a_reader_runs():
    assert "make demo" in COMMANDS and "make test" in COMMANDS and "snakemake aggregate" in COMMANDS
    assert any(c.startswith("layercrit-slurm ") for c in COMMANDS) and len(COMMANDS) >= 10


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    """A fresh clone as the README's reader has it: the checkout's files, no results, plus the
    study config the README tells them to write (config/my_study.yaml) and an ImageNet folder."""
    root = tmp_path_factory.mktemp("readme")
    clone = root / "layercrit"
    clone.mkdir()
    for entry in REPO.iterdir():
        if entry.name not in ("results", ".snakemake", ".git", "logs", "config"):
            (clone / entry.name).symlink_to(entry)
    (clone / "config").mkdir()
    for entry in (REPO / "config").iterdir():
        (clone / "config" / entry.name).symlink_to(entry)
    study = yaml.safe_load((REPO / "config/demo.yaml").read_text())
    (clone / "config/my_study.yaml").write_text(yaml.safe_dump({**study, "study": "my_study"}, sort_keys=False))
    return clone, standin_imagenet(root / "imagenet_val")


# Commands the README gives for a study of a kind the demo is not: run with that study.
STUDY_OF = {"snakemake replication": "config/config.yaml"}  # re-randomizes published models (the paper's)


def as_run(command: str, imagenet: Path) -> list[str]:
    """The command with what a reader fills in, as a plan where the real run is long."""
    if command in STUDY_OF:
        command += f" --configfile {STUDY_OF[command]} --config imagenet_val={imagenet}"
    command = re.sub(r"\bgpu=N\b", "gpu=2", command)
    command = re.sub(r"(--gpus|--allocations) [NM]\b", r"\1 2", command)
    command = command.replace("shard=i/M", "shard=1/2")
    command = re.sub(r"imagenet_val=/data/\S+", f"imagenet_val={imagenet}", command)
    words = shlex.split(command)
    program = next(i for i, w in enumerate(words) if "=" not in w)
    if words[program] == "make":
        return [*words[: program + 1], "-n", *words[program + 1 :]]
    if words[program] == "layercrit-slurm":
        return [*words[: program + 1], "--dry-run", *words[program + 1 :]]
    if "--unlock" in words:
        return words
    return [*words, "-n"]


# Commands that need the Hub before they plan: in a fresh clone they stop as the README says they
# do, naming what to run first (tests/test_llm_study.py runs them after it, on a stand-in Hub).
STOPS_FIRST = {"snakemake -n --configfile config/llm.yaml": "Write every layer list with one command: python -m layercrit.zoo layers config/zoo/llm.yaml"}


@pytest.mark.parametrize("command", COMMANDS)
def test_a_readme_command_runs_as_written(clone, command):
    clone_dir, imagenet = clone
    words = as_run(command, imagenet)
    program = next(i for i, w in enumerate(words) if "=" not in w)
    env = snakemake_env(**dict(w.split("=", 1) for w in words[:program]))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # the clone's .venv/bin, activated
    proc = subprocess.run(words[program:], cwd=clone_dir, env=env, capture_output=True, text=True, timeout=600)
    if command in STOPS_FIRST:
        assert proc.returncode != 0 and STOPS_FIRST[command] in proc.stdout + proc.stderr, proc.stdout[-3000:] + proc.stderr[-3000:]
        return
    assert proc.returncode == 0, f"{command!r} ran as {words[program:]} and failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
