"""A transformers architecture from a local directory instead of a Hub repository.

A zoo entry ``transformers: ./tiny_lm`` (a value that starts with ``./``, ``../`` or ``/``; relative
to the zoo file) names a directory with what ``save_pretrained`` of a config and a tokenizer
writes: ``config.json``, and for a causal language model ``tokenizer.json`` (and optionally
``tokenizer_config.json``). The layer-list command records what it records of a Hub repository
(the config, the files' sha256), without a revision or commit; the directory's absolute path is
not recorded, so that another clone with the same files uses the list as is.

The files are what the model is, so their sha256 are checked at parse time (torch-free): an edited
config or tokenizer stops the workflow until the layer list is written again, as edited code of
one's own does (``layercrit.study.python_code``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from layercrit.io import file_sha256
from layercrit.study.errors import ConfigError

CONFIG_FILE = "config.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")  # the first required of a language model


def is_local_directory(name: str) -> bool:
    """The zoo's ``transformers`` value names a local directory (not ``owner/name`` of the Hub)."""
    return name.startswith(("./", "../", "/"))


def directory_of(name: str, zoo_dir: str | Path) -> Path:
    """The absolute directory of a local transformers architecture (relative to the zoo's)."""
    return (Path(zoo_dir) / name).resolve()


def tokenizer_sha256s(directory: Path) -> dict[str, str]:
    """sha256 of the tokenizer files the directory has, by file name (as a Hub record's)."""
    return {file: file_sha256(directory / file) for file in TOKENIZER_FILES if (directory / file).is_file()}


def check_directory_files(arch_id: str, name: str, extra: dict[str, Any], zoo_dir: str | Path, redo: str) -> None:
    """The directory's config and tokenizer files must be those its layer list recorded
    (``extra``: ``config_sha256``, and ``tokenizer`` for a language model)."""
    directory = directory_of(name, zoo_dir)
    if not directory.is_dir():
        raise ConfigError(
            f"architectures.{arch_id}.transformers: the directory {str(directory)!r} does not exist; set it to the directory "
            f"that holds the model's {CONFIG_FILE} (and tokenizer files), relative to the zoo file"
        )
    recorded = {CONFIG_FILE: extra.get("config_sha256")} | dict(extra.get("tokenizer", {}))
    present = {CONFIG_FILE: file_sha256(directory / CONFIG_FILE)} if (directory / CONFIG_FILE).is_file() else {}
    if "tokenizer" in extra:
        present |= tokenizer_sha256s(directory)
    changed = sorted(file for file in recorded.keys() | present.keys() if recorded.get(file) != present.get(file))
    if changed:
        described = ", ".join(f"{file} ({'added' if file not in recorded else 'removed' if file not in present else 'changed'})" for file in changed)
        raise ConfigError(
            f"architectures.{arch_id}: {described} in {directory} since its layer list was written: the model or its "
            f"tokenizer may differ. Write the layer list again with: {redo}; Snakemake then re-makes the results of its "
            "models, as those of another model"
        )
