"""Write the workflow's conda environment from the lock file, so both pin the same releases.

    python -m tools.conda_env requirements/lock.txt envs/layercrit.yaml   (part of `make lock`)
    python -m tools.conda_env requirements/lock.txt envs/layercrit.yaml --check

The environment holds what the workflow runs, not the test tools: the packages pyproject.toml
lists as dependencies and everything the lock says they need (its ``# via`` annotations),
each at the lock's exact version, installed by pip inside a conda Python of the lock's minor
version. ``--check`` exits 1 if the file differs from what the lock gives.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = "3.11"  # the interpreter the lock was resolved for (see the Makefile)
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)")
_VIA = re.compile(r"^\s+#\s+(?:via\s+)?([A-Za-z0-9][A-Za-z0-9._-]*)(?:\s|$)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path) -> tuple[dict[str, str], dict[str, set[str]]]:
    """Pins {name: version} and who needs whom {parent: {child, ...}} from a pip-compile lock."""
    pins: dict[str, str] = {}
    children: dict[str, set[str]] = defaultdict(set)
    current = None
    for line in path.read_text().splitlines():
        pin = _PIN.match(line)
        if pin:
            current = canonical(pin.group(1))
            pins[current] = pin.group(2)
            continue
        via = _VIA.match(line)
        if current and via and via.group(1) != "via" and "(pyproject.toml)" not in line:
            children[canonical(via.group(1))].add(current)
    return pins, children


def runtime_packages(pins: dict[str, str], children: dict[str, set[str]]) -> list[str]:
    """pyproject's dependencies and their closure in the lock, sorted."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    todo = [canonical(re.split(r"[\s<>=!~\[;]", dep, maxsplit=1)[0]) for dep in project["dependencies"]]
    missing = [name for name in todo if name not in pins]
    if missing:
        raise SystemExit(f"the lock pins no version of {missing}: run `make lock`")
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(children.get(name, ()))
    return sorted(seen)


def conda_environment(lock: Path) -> str:
    pins, children = read_lock(lock)
    lines = [
        f"# Generated from {lock.relative_to(ROOT) if lock.is_relative_to(ROOT) else lock} by tools/conda_env.py "
        "(`make lock`); do not edit.",
        "# The workflow's packages at the lock's exact versions (the lock also has their sha256), for",
        "# `snakemake --software-deployment-method conda` or `conda env create -f envs/layercrit.yaml`.",
        "# The workflow puts its own package (src/layercrit) on PYTHONPATH, so it needs no install here.",
        "name: layercrit",
        "channels:",
        "  - conda-forge",
        "dependencies:",
        f"  - python={PYTHON}",
        "  - pip",
        "  - pip:",
    ]
    lines += [f"      - {name}=={pins[name]}" for name in runtime_packages(pins, children)]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lock", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--check", action="store_true", help="fail if OUT is not what LOCK gives")
    args = parser.parse_args()
    text = conda_environment(args.lock.resolve())
    if args.check:
        if not args.out.exists() or args.out.read_text() != text:
            sys.exit(f"{args.out} does not match {args.lock}: run `python -m tools.conda_env {args.lock} {args.out}`")
        return
    args.out.write_text(text)


if __name__ == "__main__":
    main()
