"""The package's layout: modules moved into subpackages keep their old names (one module object
under both), importing ``layercrit`` imports no torch, and no layercrit module imports itself
through others (read from the source with ast, so it takes no time)."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from layercrit._moved import MOVED, new_name

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "layercrit"


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_module_name_is_the_moved_module_itself(old):
    module = importlib.import_module(old)
    assert module is importlib.import_module(MOVED[old])
    assert sys.modules[old] is sys.modules[MOVED[old]]
    assert module.__name__ == module.__spec__.name == MOVED[old]  # its own name and spec, not the alias's


def test_patching_the_old_name_patches_the_module_that_uses_it(monkeypatch):
    monkeypatch.setattr("layercrit.devices.gpus_visible", lambda: 99)
    from layercrit.evaluation import devices

    assert devices.gpus_visible() == 99


def test_a_module_under_a_moved_package_is_found_under_the_old_name_too():
    assert new_name("layercrit.reset") == "layercrit.evaluation.reset"
    assert new_name("layercrit.evaluation") is None
    for old, new in MOVED.items():
        assert new_name(f"{old}.part") == f"{new}.part"
    assert importlib.import_module("layercrit.training.loop") is importlib.import_module("layercrit.models.training.loop")


def test_python_dash_m_runs_a_moved_module_under_its_old_name():
    proc = subprocess.run([sys.executable, "-m", "layercrit.zoo", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "layers" in proc.stdout


def test_importing_the_package_and_its_parse_time_modules_imports_no_torch():
    parse_time = ["layercrit", "layercrit.evaluation.devices", "layercrit.devices", "layercrit.weights.specs", "layercrit.source_specs"]
    code = f"import sys\nfor m in {parse_time!r}: __import__(m)\nprint(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str, modules: set[str]) -> set[str]:
    """The layercrit modules that ``path`` imports anywhere (also in functions and under
    TYPE_CHECKING), old names read as the new ones, and those its lazy exports name."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], *filter(None, [node.module])])
            for alias in node.names:  # the module base.name where there is one, else a name of base
                target = f"{base}.{alias.name}"
                found.add(target if (new_name(target) or target) in modules else base)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "lazy_exports":
            exports = node.args[1]
            if isinstance(exports, ast.Dict):
                found.update(f"{name}.{value.value}" for value in exports.values if isinstance(value, ast.Constant))
    resolved = set()
    for target in found:
        target = new_name(target) or target
        if target in modules:
            resolved.add(target)
    return resolved - {name}


def test_no_layercrit_module_imports_itself_through_others():
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {name: _imports(path, name, set(paths)) for name, path in paths.items()}
    cycles, state, stack = [], {}, []

    def visit(name: str) -> None:
        state[name] = "open"
        stack.append(name)
        for dep in sorted(graph[name]):
            if state.get(dep) == "open":
                cycles.append(" -> ".join([*stack[stack.index(dep) :], dep]))
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)
