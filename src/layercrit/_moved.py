"""Modules that moved into a subpackage keep their old names, without a file at the old path.

``MOVED`` maps an old dotted name to its new one. A finder on ``sys.meta_path`` answers an import
of an old name with the new module itself (``sys.modules`` holds the one object under both names,
so patching either name patches the same module), and ``python -m <old name>`` runs the new
module's code. The workflow's scripts, the README, messages and users' own code name modules
such as ``layercrit.reset`` or ``python -m layercrit.zoo layers``; the scripts must stay
byte-identical (a changed script re-runs its finished jobs). Nothing here imports torch: the
Snakefile imports ``layercrit`` while it parses.

``lazy_exports`` gives a package the names of its modules without importing them before they are
asked for, so that importing one light module of a package (``layercrit.evaluation.devices`` at
parse time) does not import its heavy siblings.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Callable, Mapping, Sequence
from types import CodeType, ModuleType
from typing import Any

MOVED: dict[str, str] = {
    f"layercrit.{old}": f"layercrit.{new}"
    for old, new in {
        "pipelines": "study.pipelines",
        "image_folders": "study.image_folders",
        "reset": "evaluation.reset",
        "metrics": "evaluation.metrics",
        "forward": "evaluation.forward",
        "graph": "evaluation.graph",
        "devices": "evaluation.devices",
        "concurrency": "evaluation.concurrency",
        "readback": "analysis.readback",
        "aggregation": "analysis.aggregation",
        "statistics": "analysis.statistics",
        "published": "analysis.published",
        "replication": "analysis.replication",
        "source_specs": "weights.specs",
        "sources": "weights.sources",
        "conversion": "weights.conversion",
        "zoo": "models.zoo",
        "seed_schemes": "models.seed_schemes",
        "training": "models.training",
        "slurm_checks": "slurm.checks",
        "slurm_cluster": "slurm.cluster",
        "slurm_forcing": "slurm.forcing",
        "slurm_jobs": "slurm.jobs",
    }.items()
}


def new_name(old: str) -> str | None:
    """The name that an old module name (or a module under an old package name) has now."""
    if old in MOVED:
        return MOVED[old]
    package, _, rest = old.rpartition(".")
    while package:
        if package in MOVED:
            return f"{MOVED[package]}.{rest}"
        package, _, parent_rest = package.rpartition(".")
        rest = f"{parent_rest}.{rest}"
    return None


class _MovedLoader(importlib.abc.Loader):
    """Loads an old name as the module at its new name."""

    def __init__(self, new: str) -> None:
        self.new = new

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(self.new)
        self.own_spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # the import system set __spec__ to the old name's spec: the module keeps its own
        module.__spec__ = self.own_spec

    def get_code(self, fullname: str) -> CodeType | None:
        """The new module's code, for ``python -m <old name>`` (runpy asks the loader for it)."""
        spec = importlib.util.find_spec(self.new)
        return spec.loader.get_code(self.new)  # type: ignore[union-attr]

    def is_package(self, fullname: str) -> bool:
        return False


class _MovedFinder(importlib.abc.MetaPathFinder):
    """Finds the modules named in MOVED under their old names."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        new = new_name(fullname) if fullname.startswith("layercrit.") else None
        if new is None:
            return None
        origin = getattr(importlib.util.find_spec(new), "origin", None)
        return importlib.machinery.ModuleSpec(fullname, _MovedLoader(new), origin=origin)


def install() -> None:
    """Put the finder first on sys.meta_path, once."""
    if not any(isinstance(finder, _MovedFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _MovedFinder())


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for a package whose name ``x`` is ``exports[x]``'s ``x``.

    ``exports`` maps a public name to the module of the package that defines it; the module is
    imported when the name is first asked for.
    """
    module = sys.modules[package]

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        setattr(module, name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(module)) | set(exports))

    return __getattr__, __dir__
