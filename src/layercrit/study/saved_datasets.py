"""A folder saved by the ``datasets`` library (``save_to_disk``) as the text of a language-model
study, checked at parse time from the JSON files ``save_to_disk`` writes beside the Arrow data,
without importing ``datasets`` (slow to import, and run at every parse):

- a ``Dataset``: ``state.json`` (its Arrow files, ``_data_files``, and its ``_fingerprint``) and
  ``dataset_info.json`` (its columns, ``features``);
- a ``DatasetDict``: ``dataset_dict.json`` (``{"splits": [...]}``) and one such folder per split.

The token job reads the rows with ``datasets.load_from_disk`` (``layercrit.text_windows``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layercrit.study.errors import ConfigError

DATASET_FILES = ("state.json", "dataset_info.json")
DATASET_DICT_FILE = "dataset_dict.json"
STRING_TYPES = ("string", "large_string")
SAVE_HINT = (
    "a folder written by the datasets library: datasets.load_dataset(...).save_to_disk(folder) "
    "(README, 'Language models')"
)


@dataclass(frozen=True)
class SavedDataset:
    """The split of a saved dataset that a study reads: its folder and what its JSON files say."""

    folder: Path  # the folder of one Dataset (the split's, for a DatasetDict)
    fingerprint: str  # datasets' own hash of the data (state.json ``_fingerprint``)
    data_files: tuple[Path, ...]  # its Arrow files
    columns: dict[str, Any]  # dataset_info.json ``features``

    @property
    def data_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.data_files)


def is_saved_dataset(path: Path) -> bool:
    """``path`` is a folder (a saved dataset, or meant to be one): not a text file."""
    return path.is_dir()


def _read_json(path: Path, where: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{where}: {path.name} cannot be read ({e}); save the folder again with {SAVE_HINT}") from None


def saved_dataset(path: Path, split: str | None, where: str = "data.path") -> SavedDataset:
    """The split of the saved dataset at ``path`` a study reads: the folder's only ``Dataset``,
    or ``split`` of its ``DatasetDict``; a ``ConfigError`` naming what is there otherwise."""
    folder = path
    if (path / DATASET_DICT_FILE).is_file():
        splits = _read_json(path / DATASET_DICT_FILE, f"{where}: {str(path)!r}").get("splits", [])
        if split is None:
            raise ConfigError(f"{where}: {str(path)!r} is a DatasetDict with splits {splits}; choose one with data.split, e.g. data.split: {splits[0] if splits else 'test'}")
        if split not in splits:
            raise ConfigError(f"data.split: {split!r} is not a split of {str(path)!r}; its splits are {splits}")
        folder = path / split
    elif split is not None and all((path / f).is_file() for f in DATASET_FILES):
        raise ConfigError(f"data.split: {split!r}, but {str(path)!r} holds one Dataset, with no splits; leave data.split out")
    missing = [f for f in DATASET_FILES if not (folder / f).is_file()]
    if missing:
        raise ConfigError(
            f"{where}: {str(folder)!r} is a folder but not a saved dataset (it has no {' or '.join(missing)}, nor "
            f"{DATASET_DICT_FILE}); point data.path at a .txt or .jsonl file, or at {SAVE_HINT}"
        )
    state = _read_json(folder / "state.json", f"{where}: {str(folder)!r}")
    info = _read_json(folder / "dataset_info.json", f"{where}: {str(folder)!r}")
    data_files = tuple(folder / entry["filename"] for entry in state.get("_data_files", []))
    absent = [f.name for f in data_files if not f.is_file()]
    if absent or not data_files:
        raise ConfigError(f"{where}: {str(folder)!r}: its state.json lists data files {absent or 'none'} that are not there; save the folder again with {SAVE_HINT}")
    return SavedDataset(folder, str(state.get("_fingerprint", "")), data_files, dict(info.get("features") or {}))


def check_saved_dataset(data: dict[str, Any]) -> SavedDataset:
    """A saved dataset as a study's text: the split exists, its ``column`` is a string column,
    and its Arrow files are not smaller than N x L bytes (they hold the text and more; see
    ``layercrit.study.text_data`` for why a byte bounds a token)."""
    path = Path(data["path"]).expanduser()
    found = saved_dataset(path, data.get("split"))
    column = data.get("column", "text")
    feature = found.columns.get(column)
    if feature is None:
        raise ConfigError(f"data.column: {column!r} is not a column of {str(found.folder)!r}; its columns are {sorted(found.columns)}")
    if not (isinstance(feature, dict) and feature.get("_type") == "Value" and feature.get("dtype") in STRING_TYPES):
        strings = sorted(name for name, f in found.columns.items() if isinstance(f, dict) and f.get("dtype") in STRING_TYPES)
        raise ConfigError(f"data.column: {column!r} of {str(found.folder)!r} is not a string column ({feature}); its string columns are {strings}")
    needed = data.get("windows", 64) * data.get("window_tokens", 128)
    if found.data_bytes < needed:
        raise ConfigError(
            f"data.path: {str(found.folder)!r} holds {found.data_bytes} bytes of data, too few for data.windows x "
            f"data.window_tokens = {data.get('windows', 64)} x {data.get('window_tokens', 128)} = {needed} tokens (a token "
            "stands for at least one byte of text); give a larger dataset or split, or fewer or shorter windows"
        )
    return found
