"""What the layer-list command records of a causal language model besides its config: the
sha256 of its repository's tokenizer files, and the input facts of a model that reads tokens.

A language model is evaluated on text its own tokenizer cuts into tokens, so its repository must
have a ``tokenizer.json`` (the ``tokenizers`` library's file; ``tokenizer_config.json``, where the
repository has one, names the end-of-text token that separates documents). Both are fetched
through the verified download cache at the zoo entry's revision; their sha256 go into the layer
list (``extra["tokenizer"]``), so that the study knows at parse time which models share a
tokenizer (and so a token file), and the data job fetches exactly these files again, verified.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from layercrit.downloads import DownloadSettings, EntryNotFound, fetch_file, hub_remote
from layercrit.study import Architecture

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"


class NoTokenizer(LookupError):
    """The repository has no tokenizer.json at the revision."""


def tokenizer_record(arch: Architecture, cache_dir: Path, settings: DownloadSettings | None = None) -> dict[str, str]:
    """sha256 of ``arch``'s repository's tokenizer files at its revision, by file name, fetched
    into the verified download cache; ``NoTokenizer`` where it has no tokenizer.json."""
    record = {}
    for file in (TOKENIZER_FILE, TOKENIZER_CONFIG_FILE):
        remote = hub_remote(arch.name, file, arch.extra["revision"], Path(cache_dir))
        try:
            _, fetched = fetch_file([remote], model_id=arch.id, cache_dir=Path(cache_dir), settings=settings, progress=False)
        except EntryNotFound:
            if file == TOKENIZER_FILE:
                raise NoTokenizer(file) from None
            continue
        record[file] = fetched["sha256"]
    return record


def language_input_facts(config: dict[str, Any]) -> dict[str, Any]:
    """The layer list's input facts of a causal LM: it reads token ids (no image size), at most
    ``max_position_embeddings`` of them per window where its config says so, of a vocabulary of
    ``vocab_size``."""
    return {
        "input_size": None,
        "fixed_input_size": False,
        "tokens": True,
        "max_positions": config.get("max_position_embeddings"),
        "vocab_size": config.get("vocab_size"),
    }
