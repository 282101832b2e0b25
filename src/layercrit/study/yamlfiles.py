"""Reading the YAML a study is given: config files and zoos, and where their paths point.

PyYAML keeps the last of a key given twice without a word; a study's settings must not depend
on which of two lines won, so every config and zoo file is read here, where that is an error.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from layercrit.study.errors import ConfigError


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error: PyYAML keeps
    the last silently, so a config with ``batch_size`` twice would run with one of them unsaid."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`: its keys may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            if key in first_line:
                raise ConfigError(
                    f"{self.name}, line {key_node.start_mark.line + 1}: key {key!r} is given a second time (first on "
                    f"line {first_line[key]}); YAML would silently keep only the last: remove one of them"
                )
            first_line.setdefault(key, key_node.start_mark.line + 1)
        return super().construct_mapping(node, deep)


def read_yaml(path: str | Path) -> Any:
    """A YAML file (config or zoo); a key given twice, or YAML that does not parse, is a
    :class:`ConfigError` naming the file, the line and the key."""
    with open(path) as f:
        try:
            return yaml.load(f, Loader=_UniqueKeyLoader)
        except yaml.YAMLError as e:
            raise ConfigError(f"{path} is not valid YAML: {e}") from None


def workflow_file(path: str | Path, root: str | Path, workdir: str | Path = ".") -> str:
    """A path from the config: as given (relative to ``workdir``, the directory Snakemake runs
    in) if it exists there, else relative to the workflow's checkout ``root``, so that shipped
    zoos are found from any directory."""
    given = Path(workdir) / path
    if given.exists():
        return str(given)
    shipped = Path(root) / path
    return str(shipped) if shipped.exists() else str(given)


def check_config_files(paths: Iterable[str | Path]) -> None:
    """Snakemake reads config files with PyYAML, which keeps the last of a key given twice: read
    each again with ``read_yaml``, which refuses that (:class:`ConfigError`)."""
    for path in paths:
        read_yaml(path)
