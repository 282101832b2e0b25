"""The zoo file and its models: ``load_zoo`` reads it, ``Model`` is one entry resolved, and
``trains_here`` says whether a study trains a model or downloads it.

(The torch side of a model, building it and its checkpoints, is ``layercrit.models.zoo``.)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from layercrit.study.architectures import Architecture
from layercrit.study.errors import ConfigError
from layercrit.study.yamlfiles import read_yaml


@dataclass(frozen=True)
class Model:
    id: str
    display_name: str
    category: str
    architecture: str
    source: dict[str, Any]
    reported_top1: float | None = None
    adversarial: dict[str, Any] | None = None
    in_figures: bool = True
    normalization: dict[str, Any] | None = None
    method: str = ""
    # what the authors' code built this model with, where not its architecture (seed scheme authors)
    authors_constructor: Architecture | None = None


def model_record(model: Model) -> dict[str, Any]:
    """A model's zoo entry as data (the tables' params). An ``authors_constructor`` without
    ``extra`` is written without the key, as before that field existed: a finished study's
    tables would otherwise be re-made for the same content."""
    record = asdict(model)
    if record["authors_constructor"] is not None and not record["authors_constructor"]["extra"]:
        del record["authors_constructor"]["extra"]
    return record


def trains_here(source: dict[str, Any], retrain: bool) -> bool:
    """Whether a study trains a model with this source (else it downloads it): a `train` source is
    trained unless it records a checkpoint of that training and the study does not retrain
    (config training.retrain). Only models trained here know their weights at initialization."""
    return source.get("kind") == "train" and (retrain or "checkpoint" not in source)


def load_zoo(path: str | Path, key: str = "zoo") -> dict[str, Any]:
    """The zoo YAML at ``path``; ``key`` is the config key that named it (for the messages)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{key}: file {str(path)!r} does not exist; set {key!r} to a zoo YAML such as config/zoo/paper.yaml")
    zoo = read_yaml(path)
    if not isinstance(zoo, dict):
        raise ConfigError(
            f"{key}: {str(path)!r} holds {'nothing' if zoo is None else type(zoo).__name__ + ' ' + repr(zoo)[:60]}, "
            "not a zoo; a zoo is a mapping with architectures, categories and models (see config/zoo/demo.yaml)"
        )
    return zoo


def relocatable_zoo(path: str | Path) -> dict[str, Any]:
    """The zoo at ``path`` with its layer lists (and a python architecture's code ``path``) as
    absolute paths, so that a modified copy can be written anywhere (they are otherwise relative
    to the zoo file)."""
    zoo = load_zoo(path)
    for arch in zoo.get("architectures", {}).values():
        for key in ("layers", "blocks", "path"):
            if arch.get(key) is not None:
                arch[key] = str((Path(path).parent / arch[key]).resolve())
    return zoo


def model_normalization(entry: dict[str, Any], arch: Architecture) -> dict[str, Any] | None:
    """A model's input normalization: the zoo entry's (``null``: raw [0, 1] input), else the
    mean/std of its architecture's pretrained config (recorded in the layer list)."""
    if "normalization" in entry:
        return entry["normalization"]
    if arch.input.get("tokens"):  # a language model reads token ids: nothing to normalize
        return None
    if "mean" in arch.input and "std" in arch.input:
        return {"mean": list(arch.input["mean"]), "std": list(arch.input["std"])}
    raise ConfigError(
        f"zoo.models.{entry['id']}.normalization: not given, and architecture {arch.id!r} ({arch.library} {arch.name}) "
        "has no pretrained config that says; set it, e.g. {mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}, "
        "or null for a model that takes raw [0, 1] input"
    )
