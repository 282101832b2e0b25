"""Text as evaluation data (``data.kind: text``), checked at parse time without reading the
text: the file exists and is of a kind the data job reads (or the folder is a dataset saved by
``datasets``: ``layercrit.study.saved_datasets``), it is not certainly too short for
the windows asked for, and the zoo's architectures are causal language models that take windows
that long. Which models share a token file: those whose tokenizer files are the same (the
sha256 their layer lists record), whatever their repository or revision.

The exact count of tokens is known only once a tokenizer has cut the text: the data job that
makes a token file (``layercrit.text_windows``) stops with a clear message when the text gives
fewer than N x L tokens. Here, before any job, a file with fewer bytes than N x L is refused: a
byte-level or byte-fallback tokenizer (GPT-NeoX's, Llama's, Qwen2's) makes at most one token
per byte of text, plus one end-of-text token per document (which its separator pays for).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from layercrit.study.architectures import Architecture
from layercrit.study.errors import ConfigError
from layercrit.study.saved_datasets import check_saved_dataset, is_saved_dataset
from layercrit.study.transformers_directory import directory_of, is_local_directory

TEXT = "text"
CAUSAL_LM = "causal-lm"  # layercrit.models.transformers_models.CAUSAL_LM (that module imports torch)


def is_text(config: dict[str, Any]) -> bool:
    return config.get("data", {}).get("kind") == TEXT


def is_language_model(arch: Architecture) -> bool:
    return arch.extra.get("task") == CAUSAL_LM


def check_text_file(data: dict[str, Any]) -> None:
    """The text (``path``) must exist: a .txt or .jsonl file (a JSONL file's first line an object
    with a string ``text``, or ``data.column``) that holds at least N x L bytes (see the module's
    docstring), or a folder saved by ``datasets`` (``saved_datasets``). Generated text
    (``synthetic``) is made by a job: its length in tokens is checked by the token job."""
    if "path" not in data:
        return
    path = Path(data["path"]).expanduser()
    if is_saved_dataset(path):
        check_saved_dataset(data)
        return
    if not path.is_file():
        raise ConfigError(
            f"data.path: {str(path)!r} does not exist; set it to a .txt file (documents separated by blank lines), a .jsonl "
            'file (one {"text": ...} object per line) or a folder saved by the datasets library (save_to_disk)'
        )
    if "split" in data:
        raise ConfigError(f"data.split: {data['split']!r}, but data.path {str(path)!r} is a file, with no splits; leave data.split out")
    column = data.get("column", "text")
    if path.suffix == ".jsonl":
        with path.open(encoding="utf-8", errors="replace") as lines:
            first = next((line for line in lines if line.strip()), "")
        try:
            record = json.loads(first)
        except json.JSONDecodeError as e:
            raise ConfigError(f"data.path: {str(path)!r}: its first line is not JSON ({e}); a .jsonl file holds one JSON object per line") from None
        if not isinstance(record, dict) or not isinstance(record.get(column), str):
            found = sorted(record) if isinstance(record, dict) else type(record).__name__
            raise ConfigError(
                f"data.path: {str(path)!r}: its first line has no string field {column!r} (it has {found}); each line of a "
                f'text .jsonl file is an object {{"{column}": "<document>"}} (data.column names the field)'
            )
    needed = data.get("windows", 64) * data.get("window_tokens", 128)
    size = path.stat().st_size
    if size < needed:
        raise ConfigError(
            f"data.path: {str(path)!r} has {size} bytes, too short for data.windows x data.window_tokens = "
            f"{data.get('windows', 64)} x {data.get('window_tokens', 128)} = {needed} tokens (a token stands for at least one "
            "byte of text); give a longer text, or fewer or shorter windows"
        )


def check_language_models(config: dict[str, Any], architectures: dict[str, Architecture]) -> None:
    """Text goes with causal language models only, and images with no language model; a window
    must fit each model's positions."""
    text = is_text(config)
    wrong = [a.id for a in architectures.values() if is_language_model(a) != text]
    if wrong and text:
        raise ConfigError(
            f"data.kind text evaluates causal language models, but architectures {wrong} are not (a transformers "
            "repository whose config names a ...ForCausalLM class, with its layer list written by python -m layercrit.zoo "
            "layers); evaluate them on images, or leave them out (models: ...)"
        )
    if wrong:
        raise ConfigError(
            f"architectures {wrong} are causal language models, evaluated on text: set data.kind: text with data.path "
            f"(README, 'Language models'), or leave them out of this {config['data']['kind']!r} study (models: ...)"
        )
    tokens = config.get("data", {}).get("window_tokens", 128)
    for arch in architectures.values():
        limit = arch.input.get("max_positions")
        if text and limit and tokens > limit:
            raise ConfigError(
                f"data.window_tokens: {tokens}, but architectures.{arch.id} ({arch.name}) takes at most {limit} positions "
                f"(max_position_embeddings); set data.window_tokens to at most {limit}"
            )


# What one batch's clean and reset logits of a language model may take (float32, both at once):
# the vocabulary makes them large (B x L x V x 4 bytes each), and batch_size is the images' setting.
LOGITS_MEMORY_LIMIT_BYTES = 8 * 2**30


def check_logits_memory(config: dict[str, Any], architectures: dict[str, Architecture]) -> None:
    """A text study's ``batch_size`` must keep one batch's clean and reset logits within
    ``LOGITS_MEMORY_LIMIT_BYTES`` for every model: the default of 500 (windows) that suits
    images would ask for tens of GB at a vocabulary of 50k-150k, and fail in the first job or
    swap the machine to a halt."""
    if not is_text(config):
        return
    batch, tokens = config["batch_size"], config["data"].get("window_tokens", 128)
    for arch in architectures.values():
        vocab = arch.input.get("vocab_size")
        if not vocab:
            continue
        per_window = 2 * tokens * vocab * 4
        if batch * per_window > LOGITS_MEMORY_LIMIT_BYTES:
            most = max(LOGITS_MEMORY_LIMIT_BYTES // per_window, 1)
            raise ConfigError(
                f"batch_size: {batch} windows of {tokens} tokens at the vocabulary of {vocab:,} of architectures.{arch.id} "
                f"({arch.name}) hold 2 x {batch} x {tokens} x {vocab:,} x 4 bytes = {batch * per_window / 2**30:.1f} GiB of "
                f"clean and reset logits per batch; set batch_size to at most {most} (at most "
                f"{LOGITS_MEMORY_LIMIT_BYTES / 2**30:g} GiB), or shorter windows (data.window_tokens)"
            )


def tokenizer_key(arch: Architecture) -> str:
    """The name of ``arch``'s tokenizer among the study's token files: a digest of its tokenizer
    files' sha256 (models whose tokenizer files are equal share one token file)."""
    record = json.dumps(arch.extra["tokenizer"], sort_keys=True)
    return hashlib.sha256(record.encode()).hexdigest()[:12]


def token_file(arch: Architecture) -> str:
    """The token windows of ``arch``'s tokenizer, relative to results/<study>/."""
    return f"data/tokens-{tokenizer_key(arch)}.safetensors"


def tokenizers(architectures: dict[str, Architecture], zoo_dir: str | Path = ".") -> dict[str, dict[str, Any]]:
    """The study's distinct tokenizers by ``tokenizer_key``: where the data job takes each from
    (the first architecture's repository and revision that has it, or its local directory,
    absolute, found from ``zoo_dir``) and its files' sha256."""
    found: dict[str, dict[str, Any]] = {}
    for arch in architectures.values():
        if not is_language_model(arch):
            continue
        files = dict(arch.extra["tokenizer"])
        if is_local_directory(arch.name):
            found.setdefault(tokenizer_key(arch), {"directory": str(directory_of(arch.name, zoo_dir)), "files": files})
        else:
            found.setdefault(tokenizer_key(arch), {"repo": arch.name, "revision": arch.extra["revision"], "files": files})
    return found


def _tokenizer_name(arch: Architecture) -> str:
    """A repository (with its revision unless main), or a local directory's own name."""
    if is_local_directory(arch.name):
        return f"{Path(arch.name).name} (local directory)"
    return arch.name + ("" if arch.extra.get("revision", "main") == "main" else f"@{arch.extra['revision']}")


def tokenizer_names(architectures: dict[str, Architecture]) -> dict[str, str]:
    """Each language model architecture's tokenizer as a reader knows it: the repository (and
    revision, unless main; a local directory's name) of the first of ``architectures`` that has those tokenizer files, so
    that architectures with equal files get one name."""
    keys = {arch_id: tokenizer_key(arch) for arch_id, arch in architectures.items() if is_language_model(arch)}
    first = {key: architectures[arch_id] for arch_id, key in reversed(keys.items())}
    named = {key: _tokenizer_name(arch) for key, arch in first.items()}
    return {arch_id: named[key] for arch_id, key in keys.items()}
