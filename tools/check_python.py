"""Stop `make install` on a Python the lock does not install on, before it builds anything.

The supported versions are pyproject's ``requires-python`` (the lock, requirements/lock.txt,
installs on each of them: tests/test_environment.py resolves it on every one this machine has).
Runs on any Python 3 (no tomllib before 3.11), so it reads the one line it needs.
"""

import re
import sys
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def lowest_supported() -> tuple[int, int]:
    spec = re.search(r'^requires-python\s*=\s*"([^"]*)"', PYPROJECT.read_text(), re.M).group(1)
    match = re.fullmatch(r">=\s*3\.(\d+)", spec.strip())
    if not match:
        raise SystemExit(f"tools/check_python.py reads requires-python of the form '>=3.N', not {spec!r}")
    return 3, int(match.group(1))


def main() -> int:
    lowest = lowest_supported()
    have = sys.version_info[:2]
    if have >= lowest:
        return 0
    print(
        f"make install: this project needs Python {lowest[0]}.{lowest[1]} or newer (its locked packages do not "
        f"install on older ones), but {sys.executable} is Python {have[0]}.{have[1]}.\n"
        f"Pick another interpreter, e.g.: make demo PYTHON=python3.12  (or make test PYTHON=/path/to/python3.11)",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
