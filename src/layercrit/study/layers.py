"""An architecture's layers as data: the layer-list files (TSV) and their header.

Building a model at parse time would import torch; discovering layers with a checkpoint rule
would hide the reset jobs from ``snakemake -n`` until the models exist. So each architecture's
layers are a TSV (module name, type, weight shape) written by ``python -m layercrit.zoo layers``,
whose header records the architecture it was written for and what the model says of its input,
and a digest of its rows, so that a list that does not belong to its zoo entry, or was edited
by hand, stops at parse time.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layercrit.study.errors import ConfigError


# A module name: dot-separated identifiers (no empty, "." or ".." component: it is a path part).
MODULE_NAME = re.compile(r"[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*")


@dataclass(frozen=True)
class Layer:
    name: str
    type: str
    shape: tuple[int, ...]
    index: int

    @property
    def kernel(self) -> str:
        """Kernel size as ``HxW`` for convolutions, empty for linear layers."""
        return "x".join(map(str, self.shape[2:])) if len(self.shape) > 2 else ""


@dataclass(frozen=True)
class LayerListHeader:
    """The first line of a layer list: the architecture it was written for and what the model
    says about its input (``zoo.model_input_facts``)."""

    architecture: dict[str, Any]
    input: dict[str, Any]
    rows_sha256: str | None = None  # of the rows as written (layer_rows_sha256): an edit shows


_HEADER_PREFIX = "# layercrit layer list: "


def layer_rows_sha256(layers: tuple[Layer, ...] | list[Layer]) -> str:
    """sha256 of a layer list's rows (name, type, shape in order): the header records it, so a
    row removed, renamed or retyped by hand is found at parse time, not at job time."""
    rows = "\n".join(f"{l.name}\t{l.type}\t{'x'.join(map(str, l.shape))}" for l in layers)
    return hashlib.sha256(rows.encode()).hexdigest()


def read_layer_table(path: str | Path) -> tuple[Layer, ...]:
    """Read an architecture's layer list (TSV with columns name, type, shape; ``#`` lines are its header)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader((line for line in f if not line.startswith("#")), delimiter="\t"))
    bad = [row.get("name") for row in rows if not MODULE_NAME.fullmatch(row.get("name") or "")]
    if bad:
        raise ConfigError(
            f"layer list {str(path)!r}: {bad[:5]} are not module names (dot-separated letters, digits, _); "
            "write the list with: python -m layercrit.zoo layers <zoo.yaml> <architecture>"
        )
    return tuple(
        Layer(row["name"], row["type"], tuple(int(d) for d in row["shape"].split("x")), i) for i, row in enumerate(rows)
    )


def read_layer_list_header(path: str | Path) -> LayerListHeader | None:
    """The header of a layer list, or None for a list without one (written by hand or by an older version)."""
    with open(path) as f:
        first = f.readline()
    if not first.startswith(_HEADER_PREFIX):
        return None
    content = json.loads(first[len(_HEADER_PREFIX) :])
    return LayerListHeader(content["architecture"], content.get("input", {}), content.get("rows_sha256"))


def write_layer_table(layers: list[Layer] | tuple[Layer, ...], path: str | Path, header: LayerListHeader) -> None:
    from layercrit.io import write_text

    content = json.dumps(
        {"architecture": header.architecture, "input": header.input, "rows_sha256": layer_rows_sha256(layers)}, sort_keys=True
    )
    lines = [
        _HEADER_PREFIX + content,
        "# written by python -m layercrit.zoo layers; the workflow checks this header against its zoo entry",
        "name\ttype\tshape",
    ] + [f"{l.name}\t{l.type}\t{'x'.join(map(str, l.shape))}" for l in layers]
    write_text(path, "\n".join(lines) + "\n")
