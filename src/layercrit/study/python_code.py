"""An architecture built by the user's own Python code: its factory name and the files of its code.

A zoo entry ``python: package.module:build`` names a callable that returns the model. Its code
is part of what the architecture is: its layers and its initializer come from it. So the
workflow records a digest of that code (every ``.py`` file of the factory's top-level package,
or its single module file) in the architecture's identity, and a change shows at parse time.
The files are found as Python's import system would find them — the entry's ``path`` first,
then ``sys.path`` — without importing anything: parse time is torch-free, and importing a
package runs its code.
"""

from __future__ import annotations

import hashlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from layercrit.study.errors import ConfigError


# package.module:attribute (the attribute may be dotted: Class.method); the zoo schema's pattern too.
FACTORY_NAME = re.compile(r"(?P<module>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):(?P<attribute>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)")


@dataclass(frozen=True)
class FactoryCode:
    """Where a factory's code lies: the directory its top-level package (or module) was found in,
    and every ``.py`` file of it, relative to that directory."""

    root: Path
    files: tuple[str, ...]

    def sha256(self) -> str:
        """One digest of the files' relative paths and contents: an edit, an added, removed or
        renamed file changes it; touching a file or moving the whole package does not."""
        digest = hashlib.sha256()
        for name in self.files:
            digest.update(name.encode() + b"\0" + (self.root / name).read_bytes() + b"\0")
        return digest.hexdigest()

    def describe(self, limit: int = 6) -> str:
        shown = ", ".join(self.files[:limit]) + (f" and {len(self.files) - limit} more" if len(self.files) > limit else "")
        return f"{shown} in {self.root}"


def split_factory_name(name: str) -> tuple[str, str]:
    """``package.module:build`` → (``package.module``, ``build``); a clear error for anything else."""
    match = FACTORY_NAME.fullmatch(name)
    if not match:
        raise ConfigError(
            f"python: {name!r} is not a factory name; write it as package.module:callable (the module's dotted "
            "import name, a colon, and the function or class that returns the model), e.g. tinynets.resnet:build"
        )
    return match["module"], match["attribute"]


def search_path(path: str | Path | None) -> list[Path]:
    """Where the factory's top-level package is looked for, in order: ``path``, then ``sys.path``
    (its empty entry is the current directory, as for imports)."""
    entries = [Path(path)] if path is not None else []
    return entries + [Path(entry or ".") for entry in sys.path]


def locate_factory_code(name: str, path: str | Path | None) -> FactoryCode:
    """The files of the top-level package (or module) of factory ``name``, found on ``path`` then
    ``sys.path`` as the import system finds it: the first directory that holds ``<top>/__init__.py``
    or ``<top>.py``. No code is imported."""
    module, _ = split_factory_name(name)
    top = module.split(".")[0]
    searched = search_path(path)
    for directory in searched:
        package = directory / top
        if (package / "__init__.py").is_file():
            files = sorted(p.relative_to(directory).as_posix() for p in package.rglob("*.py") if "__pycache__" not in p.parts)
            return _with_module(FactoryCode(directory.resolve(), tuple(files)), name, module)
        if (directory / f"{top}.py").is_file():
            return _with_module(FactoryCode(directory.resolve(), (f"{top}.py",)), name, module)
    where = f"path {str(path)!r}, then sys.path" if path is not None else "sys.path (the entry gives no path)"
    raise ConfigError(
        f"python: {name!r}: no package or module {top!r} ({top}/__init__.py or {top}.py) on {where}: "
        f"{[str(d) for d in searched[:6]]}{' …' if len(searched) > 6 else ''}; set the architecture's path to the "
        "directory that holds it (relative to the zoo file)"
    )


def _with_module(code: FactoryCode, name: str, module: str) -> FactoryCode:
    """``code``, once the factory's module is one of its files (a typo in the module's name
    stops at parse time, with the modules there)."""
    stem = module.replace(".", "/")
    if f"{stem}.py" in code.files or f"{stem}/__init__.py" in code.files:
        return code
    modules = [f[: -len("/__init__.py")] if f.endswith("/__init__.py") else f[: -len(".py")] for f in code.files]
    raise ConfigError(
        f"python: {name!r}: {code.root} has no module {module!r} ({stem}.py); its modules: "
        f"{[m.replace('/', '.') for m in modules][:12]}"
    )
