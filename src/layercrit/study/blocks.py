"""An architecture's blocks, for reset mode ``remove``: the block list (TSV) and which blocks a
study removes (``reset.blocks``).

Removing a block replaces it by the identity (ShortGPT's layer removal, Veit et al.'s lesion
study of residual networks), which is only possible where the block's output has the shape of
its input. Blocks have no parameters of their own, so they are not rows of the layer lists; the
same command that writes an architecture's layer list writes its block list where the zoo entry
names one (``blocks:``): every module with submodules that is called with a tensor and returns a
tensor (or a tuple that starts with one), with the shapes of both, found by one forward pass.
Its header is a layer list's (architecture identity, input facts, rows digest) and is checked
the same way at parse time, torch-free.
"""

from __future__ import annotations

import csv
import fnmatch
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layercrit.study.architectures import Architecture, architecture_identity
from layercrit.study.errors import ConfigError
from layercrit.study.layers import MODULE_NAME, Layer, LayerListHeader
from layercrit.study.selection import layer_selections


_HEADER_PREFIX = "# layercrit block list: "


@dataclass(frozen=True)
class Block:
    name: str
    type: str
    shape: tuple[int, ...]  # of its input, per sample
    output_shape: tuple[int, ...]  # of its output (the first element of a tuple), per sample
    index: int

    @property
    def removable(self) -> bool:
        """Whether the identity can stand in for it: its output has the shape of its input."""
        return self.shape == self.output_shape

    def as_layer(self) -> Layer:
        """The block as a row of the results: its name goes in ``layer``; it has no weight, so no
        shape (a layer's ``kernel``, read from its weight's shape, stays empty)."""
        return Layer(self.name, self.type, (), self.index)

    def describe(self) -> str:
        return f"{self.name} ({self.type}, {_shape(self.shape)} -> {_shape(self.output_shape)})"


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def block_rows_sha256(blocks: tuple[Block, ...] | list[Block]) -> str:
    """sha256 of a block list's rows, as the header records it (an edit by hand shows at parse time)."""
    rows = "\n".join(f"{b.name}\t{b.type}\t{_shape(b.shape)}\t{_shape(b.output_shape)}" for b in blocks)
    return hashlib.sha256(rows.encode()).hexdigest()


def write_block_table(blocks: list[Block] | tuple[Block, ...], path: str | Path, header: LayerListHeader) -> None:
    from layercrit.io import write_text

    content = json.dumps(
        {"architecture": header.architecture, "input": header.input, "rows_sha256": block_rows_sha256(blocks)}, sort_keys=True
    )
    lines = [
        _HEADER_PREFIX + content,
        "# written by python -m layercrit.zoo layers; shape: the block's input, output_shape: its output (per sample);"
        " reset mode remove can remove the blocks where they agree",
        "name\ttype\tshape\toutput_shape",
    ] + [f"{b.name}\t{b.type}\t{_shape(b.shape)}\t{_shape(b.output_shape)}" for b in blocks]
    write_text(path, "\n".join(lines) + "\n")


def read_block_list(path: str | Path) -> tuple[LayerListHeader | None, tuple[Block, ...]]:
    """The header (None where the file has none) and the rows of a block list."""
    with open(path, newline="") as f:
        first = f.readline()
        rows = list(csv.DictReader((line for line in f if not line.startswith("#")), delimiter="\t"))
    header = None
    if first.startswith(_HEADER_PREFIX):
        content = json.loads(first[len(_HEADER_PREFIX) :])
        header = LayerListHeader(content["architecture"], content.get("input", {}), content.get("rows_sha256"))
    try:
        blocks = tuple(
            Block(row["name"], row["type"], _dims(row["shape"]), _dims(row["output_shape"]), i) for i, row in enumerate(rows)
        )
    except (KeyError, TypeError, ValueError):
        blocks = None
    if blocks is None or not all(MODULE_NAME.fullmatch(b.name) for b in blocks):
        raise ConfigError(
            f"block list {str(path)!r} is not one (columns name, type, shape, output_shape; module names); "
            "write it with: python -m layercrit.zoo layers <zoo.yaml> <architecture>"
        )
    return header, blocks


def _dims(text: str) -> tuple[int, ...]:
    return tuple(int(d) for d in text.split("x")) if text else ()


def architecture_blocks(zoo_dir: Path, arch: Architecture, spec: dict[str, Any]) -> tuple[Block, ...]:
    """The blocks of architecture ``arch`` (its zoo entry ``spec``), from the block list the entry
    names, which must have been written for it and not edited since."""
    redo = f"python -m layercrit.zoo layers {zoo_dir / '<zoo>.yaml'} {arch.id}"
    if "blocks" not in spec:
        raise ConfigError(
            f"architectures.{arch.id}.blocks: reset mode 'remove' needs the architecture's block list, and its zoo "
            f"entry names none: add blocks: <file>.tsv (relative to the zoo) and write it with: {redo}"
        )
    path = zoo_dir / spec["blocks"]
    if not path.is_file():
        raise ConfigError(f"architectures.{arch.id}.blocks: block list {str(path)!r} does not exist; create it with: {redo}")
    header, blocks = read_block_list(path)
    expected = architecture_identity(arch)
    if header is None or header.architecture != expected:
        found = "has no header saying which architecture it lists" if header is None else f"was written for {header.architecture}"
        raise ConfigError(
            f"architectures.{arch.id}: the block list {str(path)!r} {found}, but the zoo builds {expected}; "
            f"write it for this entry with: {redo}"
        )
    if header.rows_sha256 != block_rows_sha256(blocks):
        raise ConfigError(
            f"architectures.{arch.id}: the block list {str(path)!r} was edited after it was written; it must list "
            f"every block as the model has it (choose the blocks to remove with reset.blocks). Write it again with: {redo}"
        )
    return blocks


def selected_blocks(
    selection: dict[str, Any], blocks: dict[str, tuple[Block, ...]], used: list[str], key: str = "reset.blocks"
) -> dict[str, tuple[Layer, ...]]:
    """The blocks each used architecture removes (config ``reset.blocks``: ``types`` required,
    ``include``/``exclude`` globs, ``architectures`` as in ``reset.layers``), as the rows of its
    results. Only removable blocks are selected; one named by its exact name that is not
    removable (a downsampling block) is an error naming its shapes. Messages name it ``key``."""
    unknown = sorted(set(selection.get("architectures", {})) - set(blocks))
    if unknown:
        raise ConfigError(f"{key}.architectures: {unknown} are not architectures of the study; allowed: {list(blocks)}")
    removable = {a: tuple(b.as_layer() for b in bs if b.removable) for a, bs in blocks.items()}
    selections = layer_selections(selection, used, key)
    chosen = {}
    for arch_id in used:
        sel_key, sel = selections[arch_id]
        if "types" not in sel:
            raise ConfigError(
                f"{sel_key}.types: mode remove removes the blocks of the module classes named here; give them, e.g. "
                f"types: {_removable_types(removable[arch_id])[:3]} (the removable block classes of {arch_id!r}: "
                f"{_removable_types(removable[arch_id])})"
            )
        applies = [a for a in used if selections[a][0] == sel_key]  # a type may belong to another of them
        known = {t for a in applies for t in _removable_types(removable[a])}
        if unknown_types := [t for t in sel["types"] if t not in known]:
            raise ConfigError(
                f"{sel_key}.types: {unknown_types} is no class of a removable block of {applies}; their removable "
                "block classes: " + "; ".join(f"{a}: {_removable_types(removable[a])}" for a in applies)
            )
        included = [b for b in blocks[arch_id] if _selected(b.name, b.type, sel)]
        refused = [b for b in included if not b.removable and b.name in sel.get("include", [])]
        if refused:
            raise ConfigError(
                f"{sel_key}.include: {', '.join(b.describe() for b in refused)} of architecture {arch_id!r}: a block "
                "whose output's shape differs from its input's (a downsampling block) cannot be replaced by the "
                f"identity; removable blocks of these types: {[l.name for l in removable[arch_id] if l.type in sel['types']]}"
            )
        chosen[arch_id] = tuple(b.as_layer() for b in included if b.removable)
        if not chosen[arch_id]:
            raise ConfigError(
                f"{sel_key}: the selection {sel} matches no removable block of architecture {arch_id!r}; its removable "
                f"blocks: {[f'{l.name} ({l.type})' for l in removable[arch_id]][:12]}"
            )
    return chosen


def _removable_types(layers: tuple[Layer, ...]) -> list[str]:
    return list(dict.fromkeys(l.type for l in layers))


def _selected(name: str, type_: str, selection: dict[str, Any]) -> bool:
    return (
        type_ in selection["types"]
        and any(fnmatch.fnmatchcase(name, p) for p in selection.get("include", ["*"]))
        and not any(fnmatch.fnmatchcase(name, p) for p in selection.get("exclude", []))
    )
