"""What builds a model: an architecture of timm or torchvision, or a factory of the user's own
Python code (the libraries in ``ARCHITECTURE_LIBRARIES``), its keyword arguments and its layer
list, as the zoo's ``architectures`` give them. Torch-free: the layer list is read from
its file (layercrit.study.layers), and checked to have been written for this entry.

A transformers entry names a Hub repository and revision, or a local directory
(``layercrit.study.transformers_directory``); what builds the model (its config) is what the
layer-list command read from there and recorded in the list's header, so its ``extra`` comes from
that header, for a header written for the entry's revision (a directory's files: their sha256).
"""

from __future__ import annotations

from dataclasses import InitVar, dataclass, field, replace
from pathlib import Path
from typing import Any

from layercrit.study.errors import ConfigError
from layercrit.study.layers import Layer, layer_rows_sha256, read_layer_list_header, read_layer_table
from layercrit.study.python_code import locate_factory_code
from layercrit.study.transformers_directory import check_directory_files, is_local_directory


# timm builds classifiers with this many outputs unless told otherwise (kwargs num_classes).
TIMM_DEFAULT_CLASSES = 1000


# The libraries an architecture can come from (a zoo entry's key names the library); "python" is
# the user's own code: ``python: package.module:build`` (layercrit.study.python_code).
ARCHITECTURE_LIBRARIES = ("timm", "torchvision", "python", "transformers")
# Libraries whose entries the layer-list command completes with what it fetched (the header's
# ``extra`` holds the zoo's ``extra`` keys, as the zoo gives them, and more).
COMPLETED_BY_LAYER_LIST = ("transformers",)


@dataclass(frozen=True)
class Architecture:
    id: str
    name: str = ""  # the library's model name, e.g. resnet50, vit_small_patch16_224
    kwargs: dict[str, Any] = field(default_factory=dict)
    layers: tuple[Layer, ...] = ()
    library: str = "timm"
    input: dict[str, Any] = field(default_factory=dict)  # LayerListHeader.input of its layer list
    # What builds it besides name and kwargs, for libraries that need more (e.g. where the code
    # is and its digest): part of its identity and of its jobs' params, so a change re-runs them.
    extra: dict[str, Any] = field(default_factory=dict)
    # The name's key in the jobs' params before torchvision support (``job_params``).
    timm_name: InitVar[str | None] = None

    def __post_init__(self, timm_name: str | None) -> None:
        if timm_name is not None:
            object.__setattr__(self, "name", timm_name)
        if not self.name:
            raise ValueError(f"architecture {self.id!r} has no model name")

    def job_params(self) -> dict[str, Any]:
        """The architecture as a job's params (what a script builds it from: ``Architecture(**params)``).

        A timm architecture keeps the params it had before torchvision architectures existed:
        Snakemake re-runs a job whose params changed, and for a finished study that would mean
        fetching every model and recomputing every reset result again, for the same numbers.
        """
        if self.library == "timm" and not self.extra:
            return {"id": self.id, "timm_name": self.name, "kwargs": self.kwargs, "layers": ()}
        params = {"id": self.id, "name": self.name, "kwargs": self.kwargs, "layers": (), "library": self.library}
        return params | ({"extra": self.extra} if self.extra else {})


def architecture_from_spec(
    arch_id: str, spec: dict[str, Any], layers: tuple[Layer, ...], input: dict | None = None, zoo_dir: str | Path = "."
) -> Architecture:
    """An ``Architecture`` from its zoo entry (``timm: <name>``, ``torchvision: <name>`` or
    ``python: package.module:build`` with an optional ``path`` relative to ``zoo_dir``; kwargs).

    A python architecture's ``extra`` holds the absolute ``path`` (every job process, also one on
    another node, imports the factory from there) and ``code_sha256``, the digest of its code.
    """
    library = next(lib for lib in ARCHITECTURE_LIBRARIES if lib in spec)  # the schema requires one
    hub = library == "transformers" and not is_local_directory(spec[library])
    extra: dict[str, Any] = {"revision": spec.get("revision", "main")} if hub else {}
    if library == "python":
        path = str((Path(zoo_dir) / spec["path"]).resolve()) if spec.get("path") is not None else None
        try:
            code = locate_factory_code(spec["python"], path)
        except ConfigError as e:
            raise ConfigError(f"architectures.{arch_id}.{e}") from None
        extra = {"path": path, "code_sha256": code.sha256()}
    return Architecture(arch_id, spec[library], dict(spec.get("kwargs", {})), layers, library, dict(input or {}), extra)


def architecture_identity(arch: Architecture) -> dict[str, Any]:
    """What builds the architecture, as data: two entries with the same identity have the same layers.

    Where a python architecture's code lies (``extra.path``) is left out: its digest says what the
    code is, so a layer list stays valid for a copy of the same code elsewhere (another clone).
    """
    identity = {"library": arch.library, "name": arch.name, "kwargs": arch.kwargs}
    extra = {key: value for key, value in arch.extra.items() if key != "path"}
    return identity | ({"extra": extra} if extra else {})


def _zoo_part(recorded: dict[str, Any], expected: dict[str, Any]) -> dict[str, Any]:
    """A header's architecture with only the ``extra`` keys that the zoo entry gives (a local
    directory's entry gives none)."""
    extra = recorded.get("extra")
    if not isinstance(extra, dict):
        return recorded
    given = {k: v for k, v in extra.items() if k in expected.get("extra", {})}
    return {k: v for k, v in recorded.items() if k != "extra"} | ({"extra": given} if given else {})


def check_layer_lists_exist(zoo: dict[str, Any], zoo_dir: Path, zoo_path: str | None = None) -> None:
    """Every architecture's layer list must exist: the ones missing, all in one message, with the
    one command that writes them (a fresh clone of a zoo of hub models has none, as they are
    written from the repositories)."""
    missing = {arch_id: zoo_dir / spec["layers"] for arch_id, spec in zoo["architectures"].items() if not (zoo_dir / spec["layers"]).is_file()}
    if not missing:
        return
    zoo_file = zoo_path or str(zoo_dir / "<zoo>.yaml")
    every = len(missing) == len(zoo["architectures"])
    command = f"python -m layercrit.zoo layers {zoo_file}" + ("" if every else " " + " ".join(missing))
    listed = "; ".join(f"architectures.{arch_id}.layers: {str(path)!r} does not exist" for arch_id, path in missing.items())
    raise ConfigError(f"{listed}. Write {'every layer list' if every else 'these layer lists'} with one command: {command}")


def _layer_list(zoo_dir: Path, arch_id: str, spec: dict[str, Any], zoo: dict[str, Any]) -> Architecture:
    """The architecture of a zoo entry with its layer list, which must have been written for it."""
    layer_file = zoo_dir / spec["layers"]
    redo = f"python -m layercrit.zoo layers {zoo_dir / '<zoo>.yaml'} {arch_id}"
    if not layer_file.is_file():
        raise ConfigError(f"architectures.{arch_id}.layers: layer list {str(layer_file)!r} does not exist; create it with: {redo}")
    header = read_layer_list_header(layer_file)
    arch = architecture_from_spec(arch_id, spec, read_layer_table(layer_file), header.input if header else None, zoo_dir)
    users = [m["id"] for m in zoo.get("models", []) if m.get("architecture") == arch_id]
    expected = architecture_identity(arch)
    if header is not None and _only_code_changed(header.architecture, expected):
        code = locate_factory_code(arch.name, arch.extra["path"])
        raise ConfigError(
            f"architectures.{arch_id}: the code of {arch.name} ({code.describe()}) changed since its layer list "
            f"{str(layer_file)!r} was written: its layers may differ. Write it again with: {redo}; Snakemake then "
            f"re-makes the results of models {users} (their checkpoints, baselines and resets), as those of another model"
        )
    if header is not None and arch.library in COMPLETED_BY_LAYER_LIST and _zoo_part(header.architecture, expected) == expected:
        arch = replace(arch, extra=dict(header.architecture["extra"]))
        expected = architecture_identity(arch)
    if header is None or header.architecture != expected:
        found = "has no header saying which architecture it lists" if header is None else f"was written for {header.architecture}"
        raise ConfigError(
            f"architectures.{arch_id} (models {users}): the layer list {str(layer_file)!r} {found}, but the zoo builds "
            f"{expected}; its layers may not be this model's. Write it for this entry with: {redo}"
        )
    if header.rows_sha256 != layer_rows_sha256(arch.layers):
        found = "records no digest of its rows (written by an older version)" if header.rows_sha256 is None else "was edited after it was written"
        raise ConfigError(
            f"architectures.{arch_id} (models {users}): the layer list {str(layer_file)!r} {found}: a row removed, "
            f"renamed or retyped would skip a layer, fail its jobs or mislabel it in the tables. It must list every "
            f"layer as the model has it; choose the layers to reset with reset.layers (types, include, exclude) in "
            f"the config. Write it again with: {redo}"
        )
    if arch.library == "transformers" and is_local_directory(arch.name):
        check_directory_files(arch_id, arch.name, arch.extra, zoo_dir, redo)
    return arch


def _only_code_changed(written: dict[str, Any], expected: dict[str, Any]) -> bool:
    """The layer list was written for this python factory with these kwargs, from other code."""
    same_entry = all(written.get(key) == expected[key] for key in ("library", "name", "kwargs"))
    digests = (written.get("extra", {}).get("code_sha256"), expected.get("extra", {}).get("code_sha256"))
    return expected["library"] == "python" and same_entry and None not in digests and digests[0] != digests[1]
