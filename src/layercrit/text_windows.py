"""The evaluation text of language models as token windows: one file per distinct tokenizer.

The documents of the text (``data.path``: a .txt file whose documents are separated by blank
lines, a .jsonl file of ``{"text": ...}`` objects, or a folder saved by ``datasets``, a row of
its ``text`` column each) are put in one seeded order
(``document_order``), the same for every tokenizer. Each tokenizer cuts them into tokens, one
document after the other, each followed by its end-of-text token where its
``tokenizer_config.json`` names one, and the first N x L tokens make N windows of L tokens. So
every model reads the same documents from the start of that order; a tokenizer that makes more
tokens of the same text reads less far into it.

The tokenizer is the ``tokenizers`` library's ``tokenizer.json`` of the model's repository,
fetched through the verified download cache with the sha256 its layer list recorded.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from layercrit.downloads import fetch_file, hub_remote
from layercrit.io import atomic_path

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"


class TextTooShort(ValueError):
    """The text gives fewer tokens than the windows need."""


def read_dataset_rows(path: Path, column: str = "text", split: str | None = None) -> list[str]:
    """The rows of ``column`` of a folder saved by ``datasets`` (``split`` of a DatasetDict), one
    document each: the unit of most datasets (one article or web page a row). WikiText's rows
    are its lines (a paragraph or a heading each, with empty rows between sections), so its
    documents are paragraphs and headings; empty rows are left out, as blank lines in a .txt."""
    from datasets import DatasetDict, load_from_disk

    dataset = load_from_disk(str(path))
    if isinstance(dataset, DatasetDict):
        dataset = dataset[split]
    return [row for row in dataset[column] if row and row.strip()]


def read_documents(path: str | Path, column: str = "text", split: str | None = None) -> list[str]:
    """The documents of a .txt (separated by blank lines) or .jsonl (field ``column``) file, or
    the rows of a folder saved by ``datasets`` (``read_dataset_rows``)."""
    path = Path(path)
    if path.is_dir():
        documents = read_dataset_rows(path, column, split)
        if not documents:
            raise ValueError(f"{path}: no documents in it (every row of column {column!r} is empty)")
        return documents
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        documents = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: line {number} is not JSON ({e}); a .jsonl file holds one JSON object per line") from None
            if not isinstance(record, dict) or not isinstance(record.get(column), str):
                raise ValueError(f'{path}: line {number} has no string field "{column}"; each line is an object {{"{column}": "<document>"}}')
            documents.append(record[column])
    else:
        blocks = [block.strip() for block in text.replace("\r\n", "\n").split("\n\n")]
        documents = [block for block in blocks if block]
    documents = [d for d in documents if d.strip()]
    if not documents:
        raise ValueError(f"{path}: no documents in it")
    return documents


def document_order(n_documents: int, seed: int) -> list[int]:
    """The documents' evaluation order: a permutation drawn by Python's ``random`` under ``seed``
    (the same on every machine and for every tokenizer)."""
    order = list(range(n_documents))
    random.Random(seed).shuffle(order)
    return order


def end_of_text_id(tokenizer: Any, tokenizer_config: dict[str, Any]) -> int | None:
    """The id of the end-of-text token the tokenizer config names (``eos_token``), if any."""
    eos = tokenizer_config.get("eos_token")
    if isinstance(eos, dict):
        eos = eos.get("content")
    return tokenizer.token_to_id(eos) if isinstance(eos, str) else None


def document_tokens(
    tokenizer: Any, tokenizer_config: dict[str, Any], documents: list[str], order: list[int], needed: int | None = None
) -> tuple[list[int], int]:
    """The token ids of ``documents`` in ``order``, each followed by the end-of-text token, up to
    the first document that brings them to ``needed`` (every document if None), and how many
    documents that took."""
    eos = end_of_text_id(tokenizer, tokenizer_config)
    ids: list[int] = []
    used = 0
    for index in order:
        if needed is not None and len(ids) >= needed:
            break
        ids.extend(tokenizer.encode(documents[index], add_special_tokens=False).ids)
        if eos is not None:
            ids.append(eos)
        used += 1
    return ids, used


def token_windows(
    tokenizer: Any, tokenizer_config: dict[str, Any], documents: list[str], order: list[int], windows: int, window_tokens: int, where: str
) -> tuple[torch.Tensor, int]:
    """``windows`` x ``window_tokens`` token ids (int64) of ``documents`` in ``order``, and how
    many documents they reach into; ``TextTooShort`` if the text gives fewer tokens."""
    needed = windows * window_tokens
    ids, used = document_tokens(tokenizer, tokenizer_config, documents, order, needed)
    if len(ids) < needed:
        raise TextTooShort(
            f"{where}: the text gives {len(ids)} tokens ({len(documents)} documents), fewer than data.windows x "
            f"data.window_tokens = {windows} x {window_tokens} = {needed}; give a longer text, or fewer or shorter windows"
        )
    return torch.tensor(ids[:needed], dtype=torch.int64).view(windows, window_tokens), used


class TokenizerChanged(ValueError):
    """A local directory's tokenizer file is not the one the layer list recorded."""


def local_tokenizer_files(tokenizer: dict[str, Any]) -> dict[str, Path]:
    """The files of a tokenizer of a local directory (``directory``, files' sha256), verified:
    a file changed since the layer list was written stops here (parse time checks it too, but
    a run may be under way when it changes)."""
    from layercrit.io import file_sha256

    paths = {file: Path(tokenizer["directory"]) / file for file in tokenizer["files"]}
    for file, sha256 in tokenizer["files"].items():
        found = file_sha256(paths[file]) if paths[file].is_file() else "none (the file is missing)"
        if found != sha256:
            raise TokenizerChanged(
                f"{paths[file]}: sha256 {found}, but the layer list of its architecture recorded {sha256}: the tokenizer "
                "changed since the list was written. Write it again with: python -m layercrit.zoo layers <zoo.yaml> <architecture>"
            )
    return paths


def tokenizer_source(tokenizer: dict[str, Any]) -> str:
    """Where a study's tokenizer comes from, for records: its repository, or its local directory."""
    return tokenizer["repo"] if "repo" in tokenizer else tokenizer["directory"]


def fetch_tokenizer(tokenizer: dict[str, Any], cache_dir: str | Path) -> tuple[Any, dict[str, Any]]:
    """The tokenizer (``tokenizers.Tokenizer``) and tokenizer config of a study's tokenizer
    (``layercrit.study.text_data.tokenizers``: repo and revision, or a local directory, and the
    files' sha256), verified."""
    from tokenizers import Tokenizer

    paths = local_tokenizer_files(tokenizer) if "directory" in tokenizer else {}
    for file, sha256 in tokenizer["files"].items() if "repo" in tokenizer else ():
        remote = hub_remote(tokenizer["repo"], file, tokenizer["revision"], Path(cache_dir), sha256=sha256)
        paths[file], _ = fetch_file([remote], model_id=tokenizer["repo"], cache_dir=Path(cache_dir), progress=False)
    config = json.loads(Path(paths[TOKENIZER_CONFIG_FILE]).read_text()) if TOKENIZER_CONFIG_FILE in paths else {}
    return Tokenizer.from_file(str(paths[TOKENIZER_FILE])), config


def write_token_windows(
    out: str | Path, data: dict[str, Any], tokenizer: dict[str, Any], cache_dir: str | Path, text: str | Path | None = None
) -> dict[str, Any]:
    """Write the token windows of ``data`` (config ``data``, kind text) for ``tokenizer`` to
    ``out`` (tensor ``tokens``, N x L int64, with what made it in the header); returns that record.
    ``text`` is the text file (default ``data.path``; generated text's is made by a job)."""
    tok, tok_config = fetch_tokenizer(tokenizer, cache_dir)
    text = Path(text if text is not None else data["path"]).expanduser()
    documents = read_documents(text, data.get("column", "text"), data.get("split"))
    order = document_order(len(documents), data["seed"])
    source = f"data.path {data['path']!r}" if "path" in data else f"the generated text {text}"
    made_by = f"{tokenizer['repo']} ({tokenizer['revision']})" if "repo" in tokenizer else tokenizer_source(tokenizer)
    tokens, used = token_windows(tok, tok_config, documents, order, data["windows"], data["window_tokens"], f"{source} with the tokenizer of {made_by}")
    vocab = tok.get_vocab_size(with_added_tokens=True)
    record = {
        "kind": "text",
        "path": str(text) if "path" not in data else str(data["path"]),
        **({"synthetic": data["synthetic"]} if "synthetic" in data else {}),
        "column": data.get("column", "text"),
        "split": data.get("split"),
        "dataset_fingerprint": data.get("dataset_fingerprint"),  # a saved dataset's, from the token job's params
        "seed": data["seed"],
        "windows": data["windows"],
        "window_tokens": data["window_tokens"],
        "documents": len(documents),
        "documents_used": used,
        "order_head": order[:16],  # the seeded order's start: equal in every token file of a study
        "tokenizer": tokenizer,
        "vocab_size": vocab,
    }
    with atomic_path(out) as tmp:
        save_file({"tokens": tokens.contiguous()}, tmp, metadata={"text_windows": json.dumps(record)})
    return record


def read_token_windows(path: str | Path) -> tuple[torch.Tensor, dict[str, Any]]:
    """The token windows (N x L int64) of a token file and the record it was written with."""
    from layercrit.io import read_safetensors

    tensors, metadata = read_safetensors(path, names=("tokens",))
    return tensors["tokens"], json.loads(metadata["text_windows"])
