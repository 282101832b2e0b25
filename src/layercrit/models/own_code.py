"""Architectures from the user's own Python code: import the factory a zoo entry names
(``python: package.module:build``, from its ``path``), call it with the entry's kwargs.

The code imported must be the code the workflow planned with: its files' digest
(``Architecture.extra["code_sha256"]``, layercrit.study.python_code) is checked again where
the model is built, so an edit between planning and a job, or a module of the same name
imported from elsewhere, stops the job instead of measuring another model under this one's name.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch

from layercrit.study import Architecture, ConfigError
from layercrit.study.python_code import locate_factory_code, split_factory_name

_IMPORTS = threading.Lock()  # jobs run as threads: one sys.path edit and import at a time
# The digest of the code each top-level package was imported from by this module: Python imports
# a module once per process, so code edited later is not what this process runs.
_IMPORTED: dict[str, str] = {}


class FactoryError(RuntimeError):
    """The factory of a python architecture cannot be imported or called as the zoo names it."""


def _module(arch: Architecture) -> ModuleType:
    """The factory's module, imported from the entry's path, and checked to be the planned code."""
    module_name, _ = split_factory_name(arch.name)
    path = arch.extra.get("path")
    code = locate_factory_code(arch.name, path)
    planned = arch.extra.get("code_sha256")
    if code.sha256() != planned:
        raise FactoryError(
            f"architecture {arch.id!r}: the code of {arch.name} ({code.describe()}) is not the code the workflow "
            f"was planned with (its digest {planned}): it changed since. Run the workflow again; its plan stops "
            "until the layer list is written again (python -m layercrit.zoo layers <zoo.yaml> "
            f"{arch.id}), then re-makes this architecture's results"
        )
    top = module_name.split(".")[0]
    with _IMPORTS:
        if top in sys.modules:
            _check_imported_from(arch, sys.modules[top], code.root)
        if top in sys.modules and _IMPORTED.get(top, planned) != planned:
            raise FactoryError(
                f"architecture {arch.id!r}: this process imported {top!r} before its code ({code.describe()}) "
                "changed, and Python does not import a module twice: build it in a new process"
            )
        first_import = top not in sys.modules
        if path is not None and path not in sys.path:
            sys.path.insert(0, path)
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name is None or not (module_name == e.name or module_name.startswith(e.name + ".")):
                raise  # the factory's own imports: its message names what is missing
            raise FactoryError(f"architecture {arch.id!r}: cannot import {module_name!r} from {code.root}: {e}") from None
        if first_import:
            _IMPORTED[top] = planned
    _check_imported_from(arch, module, code.root)
    return module


def _check_imported_from(arch: Architecture, module: ModuleType, root: Path) -> None:
    where = Path(getattr(module, "__file__", None) or "").resolve()
    if not where.is_relative_to(root):
        raise FactoryError(
            f"architecture {arch.id!r}: module {module.__name__!r} is imported from {where}, not from {root} where "
            "the workflow found its code (a module of that name was imported before, or comes first on sys.path); "
            "rename your package or remove the other one from the path"
        )


def _callables(module: ModuleType) -> list[str]:
    return [name for name, value in vars(module).items() if callable(value) and not name.startswith("_")]


def _factory(arch: Architecture) -> Callable[..., object]:
    module = _module(arch)
    _, attribute = split_factory_name(arch.name)
    found: object = module
    for part in attribute.split("."):
        if not hasattr(found, part):
            names = _callables(module)
            close = difflib.get_close_matches(attribute, names, n=6, cutoff=0.5)
            raise FactoryError(
                f"architecture {arch.id!r}: module {module.__name__!r} ({module.__file__}) has no {attribute!r}; "
                + (f"close names: {close}" if close else f"its callables: {sorted(names)[:12]}")
            )
        found = getattr(found, part)
    if not callable(found):
        raise FactoryError(
            f"architecture {arch.id!r}: {arch.name} is a {type(found).__name__}, not a function or class that "
            "returns the model"
        )
    return found


def python_prepare(arch: Architecture) -> None:
    """Import the factory's module before any seeded draw: code that runs on import (and draws
    random numbers) would otherwise make the first model built under a seed differ from the rest."""
    _factory(arch)


def python_create(arch: Architecture) -> torch.nn.Module:
    """The model the factory returns for the entry's kwargs."""
    factory = _factory(arch)
    try:
        inspect.signature(factory).bind(**arch.kwargs)
    except TypeError as e:
        raise FactoryError(f"architecture {arch.id!r}: {arch.name} does not take kwargs {arch.kwargs}: {e}") from None
    except ValueError:
        pass  # no signature to check (a builtin): the call says
    model = factory(**arch.kwargs)
    if not isinstance(model, torch.nn.Module):
        raise FactoryError(
            f"architecture {arch.id!r}: {arch.name}(**{arch.kwargs}) returned a {type(model).__name__}, not a "
            "torch.nn.Module; the factory must return the model"
        )
    return model


def python_unknown(arch: Architecture) -> str | None:
    """None if the factory can be imported and called, else why not."""
    try:
        _factory(arch)
    except (FactoryError, ConfigError) as e:
        return str(e)
    return None
