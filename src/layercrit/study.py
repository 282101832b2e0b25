"""The study: which models, layers, seeds and settings a run covers.

This module is imported by the Snakefile at parse time, so it must stay free of torch: on a
cluster every job re-parses the workflow, and importing torch costs seconds each time.

Layer lists are therefore *data*: one TSV per architecture (module name, type, weight shape),
written by ``python -m layercrit.zoo layers`` and checked against the real model by a test.
Building a model at parse time would import torch; discovering layers with a checkpoint rule
would hide the reset jobs from ``snakemake -n`` until the models exist. Each list's header
records the architecture it was written for (library, name, keyword arguments) and what the
model says of its input (its pretrained config's normalization, the input size it was built
for), so that a list that does not belong to its zoo entry, or a study whose data the model
cannot take, stops at parse time without torch.
"""

from __future__ import annotations

import csv
import json
import os
import re
import fnmatch
import hashlib
from collections.abc import Iterable
from dataclasses import InitVar, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from layercrit.image_folders import IMAGE_EXTENSIONS, FolderCount, count_images
from layercrit.pipelines import PER_MODEL, STUDY, InputPipeline, PipelineError, model_pipeline, study_pipeline

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "workflow" / "schemas"


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


def load_schema(name: str) -> dict[str, Any]:
    """A schema of ``workflow/schemas/`` (``name``: ``config`` or ``zoo``), as data."""
    with open(SCHEMA_DIR / f"{name}.schema.yaml") as f:
        return yaml.safe_load(f)


# The reset modes: the config schema's list is the one list (layercrit.reset says what each does).
RESET_MODES: tuple[str, ...] = tuple(load_schema("config")["properties"]["reset"]["properties"]["mode"]["enum"])
# How a randomize reset's seed names its fresh model (layercrit.seed_schemes).
SEED_SCHEMES: tuple[str, ...] = tuple(load_schema("config")["properties"]["reset"]["properties"]["seed_scheme"]["enum"])


def needs_initial_weights(mode: str) -> bool:
    """Whether a reset mode takes the layer from the model's weights at initialization (reinit)."""
    return mode == "reinit"


# The authors' released results as a study (with the published zoo; the workflow's PUBLISHED,
# its tables: aggregation.published_tables): they re-randomized each layer of every model in three
# trials, ``trial`` 0, 1, 2 of their results file, which are its seeds.
PUBLISHED_STUDY = {
    "study": "published",
    "reset": {"mode": "randomize", "seeds": [0, 1, 2], "seed_scheme": "authors"},
}
# Where one reset result lives under results/<study>/ (every field a single path component).
RESET_RESULT = "resets/{mode}/{model}/{layer}/seed{seed}.json"
# ... and its inverse, derived from it: each field one path component, the seed a number.
_RESET_RESULT_TAIL = re.compile(
    "(?:^|/)"
    + re.escape(RESET_RESULT)
    .replace(r"\{seed\}", r"(?P<seed>\d+)")
    .replace(r"\{mode\}", "(?P<mode>[^/]+)")
    .replace(r"\{model\}", "(?P<model>[^/]+)")
    .replace(r"\{layer\}", "(?P<layer>[^/]+)")
    + "$"
)
# A module name: dot-separated identifiers (no empty, "." or ".." component: it is a path part).
MODULE_NAME = re.compile(r"[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*")
# timm builds classifiers with this many outputs unless told otherwise (kwargs num_classes).
TIMM_DEFAULT_CLASSES = 1000
# The layer types reset unless reset.layers.types says otherwise: the paper's.
DEFAULT_LAYER_TYPES = ("Conv2d", "Linear")


class ConfigError(ValueError):
    """A study configuration that cannot run; the message names the key and what is allowed."""


@dataclass(frozen=True)
class Layer:
    name: str
    type: str
    shape: tuple[int, ...]
    index: int

    @property
    def kernel(self) -> str:
        """Kernel size as ``HxW`` for convolutions, empty for linear layers."""
        return "x".join(map(str, self.shape[2:])) if len(self.shape) > 2 else ""


# The libraries an architecture can come from (a zoo entry's key names the library).
ARCHITECTURE_LIBRARIES = ("timm", "torchvision")


@dataclass(frozen=True)
class Architecture:
    id: str
    name: str = ""  # the library's model name, e.g. resnet50, vit_small_patch16_224
    kwargs: dict[str, Any] = field(default_factory=dict)
    layers: tuple[Layer, ...] = ()
    library: str = "timm"
    input: dict[str, Any] = field(default_factory=dict)  # LayerListHeader.input of its layer list
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
        if self.library == "timm":
            return {"id": self.id, "timm_name": self.name, "kwargs": self.kwargs, "layers": ()}
        return {"id": self.id, "name": self.name, "kwargs": self.kwargs, "layers": (), "library": self.library}


def architecture_from_spec(arch_id: str, spec: dict[str, Any], layers: tuple[Layer, ...], input: dict | None = None) -> Architecture:
    """An ``Architecture`` from its zoo entry (``timm: <name>`` or ``torchvision: <name>``, kwargs)."""
    library = next(lib for lib in ARCHITECTURE_LIBRARIES if lib in spec)  # the schema requires one
    return Architecture(arch_id, spec[library], dict(spec.get("kwargs", {})), layers, library, dict(input or {}))


def architecture_identity(arch: Architecture) -> dict[str, Any]:
    """What builds the architecture, as data: two entries with the same identity have the same layers."""
    return {"library": arch.library, "name": arch.name, "kwargs": arch.kwargs}


@dataclass(frozen=True)
class LayerListHeader:
    """The first line of a layer list: the architecture it was written for and what the model
    says about its input (``zoo.model_input_facts``)."""

    architecture: dict[str, Any]
    input: dict[str, Any]
    rows_sha256: str | None = None  # of the rows as written (layer_rows_sha256): an edit shows


_HEADER_PREFIX = "# layercrit layer list: "


def layer_rows_sha256(layers: tuple[Layer, ...] | list[Layer]) -> str:
    """sha256 of a layer list's rows (name, type, shape in order): the header records it, so a
    row removed, renamed or retyped by hand is found at parse time, not at job time."""
    rows = "\n".join(f"{l.name}\t{l.type}\t{'x'.join(map(str, l.shape))}" for l in layers)
    return hashlib.sha256(rows.encode()).hexdigest()


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


def trains_here(source: dict[str, Any], retrain: bool) -> bool:
    """Whether a study trains a model with this source (else it downloads it): a `train` source is
    trained unless it records a checkpoint of that training and the study does not retrain
    (config training.retrain). Only models trained here know their weights at initialization."""
    return source.get("kind") == "train" and (retrain or "checkpoint" not in source)


# Every figure a study can have, in the order of its targets; layercrit.figures.FIGURES draws
# them by these names, and Study.figures says which of them a study's zoo supports.
FIGURE_NAMES = (
    "criticality_heatmap",
    "criticality_vs_accuracy",
    "seed_std_heatmap",
    "difference_heatmap",
    "criticality_vs_epsilon",
)
# Table 1, rendered beside the figures (layercrit.figures.table).
MODEL_TABLE = "model_table"
# The comparisons with the published results (layercrit.replication): of the means over seeds,
# and, under reset.seed_scheme authors, trial by trial.
REPLICATION_FIGURES = ("replication", "replication_trials")
# Every figure the workflow draws into a study's figures/<mode>/, the one list of them: the
# targets name theirs from it, and the figure index moves any a study no longer makes to outdated/.
STUDY_FIGURE_FILES = (*FIGURE_NAMES, MODEL_TABLE, *REPLICATION_FIGURES)


@dataclass
class Study:
    """A validated study: resolved zoo, selected layers per architecture, seeds, settings."""

    name: str
    config: dict[str, Any]
    architectures: dict[str, Architecture]
    models: dict[str, Model]
    categories: list[dict[str, Any]]
    baseline: str | None
    selected_layers: dict[str, tuple[Layer, ...]] = field(default_factory=dict)
    trained_models: tuple[str, ...] = ()  # the models this study trains (trains_here); others are downloaded
    # each model's input pipeline where the images are read from files (none for generated images)
    pipelines: dict[str, InputPipeline] = field(default_factory=dict)

    @property
    def mode(self) -> str:
        return self.config["reset"]["mode"]

    @property
    def seeds(self) -> list[int]:
        return list(self.config["reset"]["seeds"])

    @property
    def seed_scheme(self) -> str:
        return self.config["reset"]["seed_scheme"]

    def fresh_architecture(self, model_id: str) -> Architecture:
        """What a randomize reset of ``model_id`` draws its fresh model from: the model's own
        architecture, or under seed scheme ``authors`` the constructor the authors' code used."""
        model = self.models[model_id]
        if self.seed_scheme == "authors" and model.authors_constructor is not None:
            return model.authors_constructor
        return self.architectures[model.architecture]

    @property
    def per_model_pipelines(self) -> bool:
        """Whether each model's images are prepared as its own pipeline says (data.pipeline per_model)."""
        return self.config.get("data", {}).get("pipeline", STUDY) == PER_MODEL

    def eval_data(self, model_id: str) -> str:
        """The evaluation images of ``model_id``, relative to results/<study>/: the study's one
        file, or with per-model pipelines its pipeline's (models that share one share the file)."""
        if self.per_model_pipelines:
            return f"data/eval-{self.pipelines[model_id].name}.safetensors"
        return "data/eval.safetensors"

    def layers_of(self, model_id: str) -> tuple[Layer, ...]:
        return self.selected_layers[self.models[model_id].architecture]

    def reset_jobs(self) -> list[tuple[str, str, int]]:
        """Every (model, layer, seed) evaluation of the study, in model, seed, layer order: the
        order the workflow runs them in (one model's loaded state, one seed's fresh weights serve
        consecutive jobs) and shards them by."""
        return [
            (model_id, layer.name, seed)
            for model_id in self.models
            for seed in self.seeds
            for layer in self.layers_of(model_id)
        ]

    def reset_jobs_shard(self, shard: str) -> list[tuple[str, str, int]]:
        """The ``i/N`` shard of ``reset_jobs()``: the i-th (from 1) of N contiguous, nearly equal
        parts. Contiguous in model order, so a shard holds few models and each model's loaded
        state and clean activations serve many of its jobs."""
        index, count = parse_shard(shard)
        jobs = self.reset_jobs()
        if count > len(jobs):
            raise ConfigError(f"shard: {shard!r} asks for {count} shards of {len(jobs)} reset jobs; use at most {len(jobs)}")
        size, extra = divmod(len(jobs), count)
        start = (index - 1) * size + min(index - 1, extra)
        return jobs[start : start + size + (index <= extra)]

    @property
    def has_adversarial_models(self) -> bool:
        return any(m.adversarial and m.in_figures for m in self.models.values())

    @property
    def figures(self) -> tuple[str, ...]:
        """The figures (of ``FIGURE_NAMES``, in its order) this study's zoo supports (the others:
        ``figures_left_out``)."""
        return tuple(name for name in FIGURE_NAMES if name not in self.figures_left_out)

    def share_layers(self, model_a: str, model_b: str) -> bool:
        """Whether two models have the same layers selected: one architecture, or two whose
        selected layer lists name the same layers (one network from two sources). Other
        architectures' layers are other layers, even where names agree."""
        arch_a, arch_b = self.models[model_a].architecture, self.models[model_b].architecture
        if arch_a == arch_b:
            return True
        lists = [[layer.name for layer in self.selected_layers.get(arch, ())] for arch in (arch_a, arch_b)]
        return bool(lists[0]) and lists[0] == lists[1]

    @property
    def figures_left_out(self) -> dict[str, str]:
        """The figures this study cannot have, each with the reason: the difference heatmap needs
        a baseline model and another figure model with its layers to compare with it, criticality
        vs ε adversarially trained figure models, the seed-std heatmap two seeds or more."""
        reasons = {}
        others = [m for m in self.models.values() if m.in_figures and m.id != self.baseline]
        if not self.baseline:
            reasons["difference_heatmap"] = "the study has no baseline model (the zoo's `baseline`, if it is among config `models`)"
        elif not others:
            reasons["difference_heatmap"] = "no figure model besides the baseline to compare with it"
        elif not any(self.share_layers(m.id, self.baseline) for m in others):
            base_arch = self.models[self.baseline].architecture
            archs = ", ".join(dict.fromkeys(m.architecture for m in others))
            reasons["difference_heatmap"] = (
                f"no figure model besides the baseline {self.baseline!r} ({base_arch}) shares its layers (the others: "
                f"{archs}): another architecture's layers are other layers, so only the baseline's own row, all zeros, "
                "would be drawn"
            )
        if not self.has_adversarial_models:
            reasons["criticality_vs_epsilon"] = "no adversarially trained model (zoo `adversarial`) among the figure models"
        if len(self.seeds) < 2:
            reasons["seed_std_heatmap"] = "one seed (reset.seeds): there is no spread across seeds to show"
        return reasons


def parse_shard(shard: str | None) -> tuple[int, int]:
    """``"i/N"`` → (i, N) with 1 ≤ i ≤ N."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(shard or ""))
    if not match or not 1 <= int(match[1]) <= int(match[2]):
        raise ConfigError(
            f"shard: {shard!r} is not 'i/N' with 1 <= i <= N; the shard target needs it, "
            "e.g. snakemake shard --config shard=2/4 (the second of four parts of the reset jobs)"
        )
    return int(match[1]), int(match[2])


def reset_result_path(mode: str, model: str, layer: str, seed: int | str) -> str:
    """A reset result's path relative to results/<study>/."""
    return RESET_RESULT.format(mode=mode, model=model, layer=layer, seed=seed)


def reset_result_identity(path: str | Path) -> dict[str, Any]:
    """The model, layer, seed and mode a reset result's path stands for."""
    match = _RESET_RESULT_TAIL.search(Path(path).as_posix())
    if match is None:
        raise ValueError(f"{path} is not a reset result path (…/{RESET_RESULT})")
    return {"model": match["model"], "layer": match["layer"], "seed": int(match["seed"]), "mode": match["mode"]}


def read_layer_table(path: str | Path) -> tuple[Layer, ...]:
    """Read an architecture's layer list (TSV with columns name, type, shape; ``#`` lines are its header)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader((line for line in f if not line.startswith("#")), delimiter="\t"))
    bad = [row.get("name") for row in rows if not MODULE_NAME.fullmatch(row.get("name") or "")]
    if bad:
        raise ConfigError(
            f"layer list {str(path)!r}: {bad[:5]} are not module names (dot-separated letters, digits, _); "
            "write the list with: python -m layercrit.zoo layers <zoo.yaml> <architecture>"
        )
    return tuple(
        Layer(row["name"], row["type"], tuple(int(d) for d in row["shape"].split("x")), i) for i, row in enumerate(rows)
    )


def read_layer_list_header(path: str | Path) -> LayerListHeader | None:
    """The header of a layer list, or None for a list without one (written by hand or by an older version)."""
    with open(path) as f:
        first = f.readline()
    if not first.startswith(_HEADER_PREFIX):
        return None
    content = json.loads(first[len(_HEADER_PREFIX) :])
    return LayerListHeader(content["architecture"], content.get("input", {}), content.get("rows_sha256"))


def write_layer_table(layers: list[Layer] | tuple[Layer, ...], path: str | Path, header: LayerListHeader) -> None:
    from layercrit.io import write_text

    content = json.dumps(
        {"architecture": header.architecture, "input": header.input, "rows_sha256": layer_rows_sha256(layers)}, sort_keys=True
    )
    lines = [
        _HEADER_PREFIX + content,
        "# written by python -m layercrit.zoo layers; the workflow checks this header against its zoo entry",
        "name\ttype\tshape",
    ] + [f"{l.name}\t{l.type}\t{'x'.join(map(str, l.shape))}" for l in layers]
    write_text(path, "\n".join(lines) + "\n")


def _layer_list(zoo_dir: Path, arch_id: str, spec: dict[str, Any], zoo: dict[str, Any]) -> Architecture:
    """The architecture of a zoo entry with its layer list, which must have been written for it."""
    layer_file = zoo_dir / spec["layers"]
    redo = f"python -m layercrit.zoo layers {zoo_dir / '<zoo>.yaml'} {arch_id}"
    if not layer_file.is_file():
        raise ConfigError(f"architectures.{arch_id}.layers: layer list {str(layer_file)!r} does not exist; create it with: {redo}")
    header = read_layer_list_header(layer_file)
    arch = architecture_from_spec(arch_id, spec, read_layer_table(layer_file), header.input if header else None)
    users = [m["id"] for m in zoo.get("models", []) if m.get("architecture") == arch_id]
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
    return arch


def layer_selections(layers: dict[str, Any], architectures: Iterable[str]) -> dict[str, tuple[str, dict[str, Any]]]:
    """Each architecture's selection (``reset.layers``, or its own ``reset.layers.architectures.<id>``)
    with the key that gives it."""
    own = layers.get("architectures", {})
    study_wide = {k: v for k, v in layers.items() if k != "architectures"}
    return {a: (f"reset.layers.architectures.{a}", own[a]) if a in own else ("reset.layers", study_wide) for a in architectures}


def selected_layers(layers: dict[str, Any], architectures: dict[str, Architecture], used: list[str]) -> dict[str, tuple[Layer, ...]]:
    """The layers each used architecture resets (``reset.layers``). A pattern or type is checked
    against every architecture of the zoo its selection applies to, used by the study or not: one
    that fits none of them is a typo; one that fits only an architecture outside this study's
    ``models`` is meant for that one. An architecture whose selection keeps no layer is an error."""
    unknown = sorted(set(layers.get("architectures", {})) - set(architectures))
    if unknown:
        raise ConfigError(f"reset.layers.architectures: {unknown} are not architectures of the zoo; allowed: {list(architectures)}")
    selections = layer_selections(layers, architectures)
    for key in dict.fromkeys(key for key, _ in selections.values()):
        applies = {a: architectures[a] for a, (k, _) in selections.items() if k == key}
        selection = next(sel for k, sel in selections.values() if k == key)
        check_layer_types(selection, applies, key)
        for field_name in ("include", "exclude"):
            for pattern in selection.get(field_name, []):
                if not any(fnmatch.fnmatchcase(l.name, pattern) for arch in applies.values() for l in arch.layers):
                    raise ConfigError(
                        f"{key}.{field_name}: pattern {pattern!r} matches no layer of {sorted(applies)}, the "
                        f"architectures it applies to (a typo?); e.g. {[l.name for a in sorted(applies) for l in applies[a].layers][:6]}"
                    )
    chosen = {}
    for arch_id in used:
        key, selection = selections[arch_id]
        chosen[arch_id] = select_layers(architectures[arch_id].layers, selection)
        if not chosen[arch_id]:
            raise ConfigError(
                f"{key}: the selection {selection} matches no layer of architecture {arch_id!r}; its layers are "
                f"{[l.name for l in architectures[arch_id].layers]}. A selection for it alone: "
                f"reset.layers.architectures.{arch_id}: {{include: [...]}}"
            )
    return chosen


def select_layers(layers: tuple[Layer, ...], selection: dict[str, Any]) -> tuple[Layer, ...]:
    """Layers whose type is in ``types``, whose name matches an ``include`` and no ``exclude`` glob."""
    types = set(selection.get("types", DEFAULT_LAYER_TYPES))
    include = selection.get("include", ["*"])
    exclude = selection.get("exclude", [])
    return tuple(
        l
        for l in layers
        if l.type in types
        and any(fnmatch.fnmatchcase(l.name, p) for p in include)
        and not any(fnmatch.fnmatchcase(l.name, p) for p in exclude)
    )


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
    """The zoo at ``path`` with its layer lists as absolute paths, so that a modified copy can be
    written anywhere (layer lists are otherwise relative to the zoo file)."""
    zoo = load_zoo(path)
    for arch in zoo.get("architectures", {}).values():
        if "layers" in arch:
            arch["layers"] = str((Path(path).parent / arch["layers"]).resolve())
    return zoo


def model_normalization(entry: dict[str, Any], arch: Architecture) -> dict[str, Any] | None:
    """A model's input normalization: the zoo entry's (``null``: raw [0, 1] input), else the
    mean/std of its architecture's pretrained config (recorded in the layer list)."""
    if "normalization" in entry:
        return entry["normalization"]
    if "mean" in arch.input and "std" in arch.input:
        return {"mean": list(arch.input["mean"]), "std": list(arch.input["std"])}
    raise ConfigError(
        f"zoo.models.{entry['id']}.normalization: not given, and architecture {arch.id!r} ({arch.library} {arch.name}) "
        "has no pretrained config that says; set it, e.g. {mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}, "
        "or null for a model that takes raw [0, 1] input"
    )


def check_layer_types(selection: dict[str, Any], architectures: dict[str, Architecture], key: str = "reset.layers") -> None:
    """Every layer type a selection (``key``) names must be a module class of one of the
    architectures it applies to (a type in none of them is a typo, or the wrong study)."""
    available = {a.id: sorted({l.type for l in a.layers}) for a in architectures.values()}
    unknown = [t for t in selection.get("types", DEFAULT_LAYER_TYPES) if not any(t in types for types in available.values())]
    if unknown:
        raise ConfigError(
            f"{key}.types: {unknown} is no module class of the architectures it applies to; allowed, per architecture: "
            + "; ".join(f"{a}: {types}" for a, types in available.items())
        )


def data_image_side(config: dict[str, Any]) -> tuple[int | None, str]:
    """The side of the square images the study's data gives the models, and the config key that says so."""
    data = config.get("data", {})
    if data.get("kind") == "synthetic":
        return data.get("image_size", 32), "data.image_size"
    if data.get("kind") in ("imagenet", "folder") and data.get("pipeline", STUDY) == STUDY:
        return data.get("crop", 224), "data.crop"
    return None, ""  # none, or each model's own (input_pipelines checks those)


def input_pipelines(config: dict[str, Any], zoo: dict[str, Any], models: dict[str, Model], architectures: dict[str, Architecture]) -> dict[str, InputPipeline]:
    """Each model's input pipeline (layercrit.pipelines): the study's one, or with data.pipeline
    per_model its zoo entry's ``input``, else its architecture's pretrained config. None where the
    images are generated (data.kind synthetic: the schema allows only study there)."""
    data = config.get("data", {})
    if data.get("kind") not in ("imagenet", "folder"):
        return {}
    try:
        if data.get("pipeline", STUDY) == STUDY:
            shared = study_pipeline({"resize": 256, "crop": 224, **data})  # the schema's defaults, for unvalidated configs
            shared.check("data.resize, data.crop")
            return dict.fromkeys(models, shared)
        given = {entry["id"]: entry.get("input") for entry in zoo["models"]}
        return {
            m.id: model_pipeline(m.id, given[m.id], architectures[m.architecture].input, m.architecture)
            for m in models.values()
        }
    except PipelineError as error:
        raise ConfigError(str(error)) from None


def check_input_size(config: dict[str, Any], models: dict[str, Model], architectures: dict[str, Architecture]) -> None:
    """A model that takes only the input size it was built for (a ViT's patch grid and position
    embedding) cannot run on images of another size: stop before any job, naming what to set."""
    side, key = data_image_side(config)
    for arch in architectures.values():
        size = arch.input.get("input_size")
        if side is None or not arch.input.get("fixed_input_size") or not size or list(size) == [side, side]:
            continue
        users = [m.id for m in models.values() if m.architecture == arch.id]
        raise ConfigError(
            f"architectures.{arch.id} (models {users}): {arch.library} {arch.name} takes only {size[0]}x{size[1]} input "
            f"(it was built for that size), but the study's images are {side}x{side} ({key}); build it for the data "
            f"(e.g. kwargs img_size: {side}, then rewrite its layer list) or set {key} to {size[0]}"
        )


def build_study(config: dict[str, Any], zoo: dict[str, Any], zoo_dir: str | Path) -> Study:
    """Resolve a schema-valid config and zoo into a Study, checking cross-references.

    The JSON schemas catch unknown keys and wrong types; this catches what a schema cannot
    see: references between entries, files that must exist, modes a model cannot support.
    """
    zoo_dir = Path(zoo_dir)
    architectures = {arch_id: _layer_list(zoo_dir, arch_id, spec, zoo) for arch_id, spec in zoo["architectures"].items()}

    categories = list(zoo["categories"])
    category_ids = [c["id"] for c in categories]
    models: dict[str, Model] = {}
    for entry in zoo["models"]:
        mid = entry["id"]
        if mid in models:
            raise ConfigError(f"zoo.models: model id {mid!r} appears twice; ids must be unique")
        if entry["category"] not in category_ids:
            raise ConfigError(f"zoo.models.{mid}.category: unknown category {entry['category']!r}; allowed: {category_ids}")
        if entry["architecture"] not in architectures:
            raise ConfigError(
                f"zoo.models.{mid}.architecture: unknown architecture {entry['architecture']!r}; "
                f"allowed: {sorted(architectures)}"
            )
        models[mid] = Model(
            id=mid,
            display_name=entry.get("name", mid),
            category=entry["category"],
            architecture=entry["architecture"],
            source=dict(entry["source"]),
            reported_top1=entry.get("reported_top1"),
            adversarial=entry.get("adversarial"),
            in_figures=entry.get("in_figures", True),
            normalization=model_normalization(entry, architectures[entry["architecture"]]),
            method=entry.get("method", ""),
            authors_constructor=(
                architecture_from_spec(f"{mid} (authors' constructor)", entry["authors_constructor"], ())
                if "authors_constructor" in entry
                else None
            ),
        )

    wanted = config.get("models")
    if wanted:
        unknown = [m for m in wanted if m not in models]
        if unknown:
            raise ConfigError(f"models: unknown model id(s) {unknown}; allowed: {list(models)}")
        models = {m: models[m] for m in wanted}

    baseline = zoo.get("baseline")
    if baseline is not None and baseline not in models:
        baseline = None if wanted else baseline
        if baseline is not None:
            raise ConfigError(f"zoo.baseline: {zoo['baseline']!r} is not a model of the zoo; allowed: {list(models)}")

    check_data_source(config)
    retrain = config.get("training", {}).get("retrain", False)
    trained = tuple(m.id for m in models.values() if trains_here(m.source, retrain))
    if trained and config.get("data", {}).get("kind", "synthetic") != "synthetic":
        raise ConfigError(
            f"models {list(trained)} train here (zoo source kind train), which needs the generated training images "
            f"of data.kind synthetic, but this study's data is {config['data']['kind']!r}: give them as recorded or "
            "own checkpoints (source kind url, …), or set training.retrain: false where the zoo records checkpoints"
        )
    mode = config["reset"]["mode"]  # one of RESET_MODES: the config schema says which
    if needs_initial_weights(mode):
        lacking = [m for m in models if m not in trained]
        if lacking:
            recorded = [m for m in lacking if models[m].source.get("kind") == "train"]
            hint = (
                f"; {recorded} are fetched from their recorded checkpoints: set training.retrain: true to train them "
                "here (one draw per CPU, see config/demo_training.yaml)"
                if recorded
                else ""
            )
            raise ConfigError(
                f"reset.mode: {mode!r} needs each model's weights at initialization, which only models trained in "
                f"this study have; these are not: {lacking}. Use mode 'randomize' or 'zero', or restrict 'models' "
                f"to models trained here{hint}"
            )

    used = {m.architecture for m in models.values()}
    used_archs = [a for a in architectures if a in used]  # zoo order: messages do not depend on set order
    used_architectures = {a: architectures[a] for a in used_archs}
    selected = selected_layers(config["reset"].get("layers", {}), architectures, used_archs)
    check_class_count(config, used_architectures)
    check_input_size(config, models, used_architectures)
    pipelines = input_pipelines(config, zoo, models, used_architectures)

    return Study(
        name=config["study"],
        config=config,
        architectures=architectures,
        models=models,
        categories=categories,
        baseline=baseline,
        selected_layers=selected,
        trained_models=trained,
        pipelines=pipelines,
    )


IMAGENET_LAYOUTS = (
    "class folders (val/<wnid>/*.JPEG), or flat (val/*.JPEG) with LOC_val_solution.csv "
    "or the devkit's ILSVRC2012_validation_ground_truth.txt (+ meta.mat) beside or above it"
)


OWN_FOLDER_HINT = "for your own images use data.kind: folder with data.root (README, 'Your own images')"


def check_data_source(config: dict[str, Any]) -> None:
    """Stop before any job when the study's image folder cannot give its evaluation images:
    missing, empty, other classes than ImageNet's, fewer images than the subset asks for.

    Only counts here (no decoding; this runs at every parse); the data rule checks every file.
    """
    data = config.get("data", {})
    if data.get("kind") == "folder":
        check_own_folder(data)
    if data.get("kind") != "imagenet":
        return
    root = config.get("imagenet_val")
    if not root:
        raise ConfigError(
            "imagenet_val: not set; this study evaluates on ImageNet-1k validation images. "
            f"Set it to the validation folder, e.g. --config imagenet_val=/data/imagenet/val. Accepted: {IMAGENET_LAYOUTS}"
        )
    path = Path(root)
    if not path.is_dir():
        raise ConfigError(f"imagenet_val: {root!r} is not a directory. Set it to the validation folder; accepted: {IMAGENET_LAYOUTS}")
    with os.scandir(path) as entries:
        if next(entries, None) is None:
            raise ConfigError(f"imagenet_val: {root!r} is empty. Accepted: {IMAGENET_LAYOUTS}")
    found = count_images(path)
    check_no_stray_images(found, f"imagenet_val: {root!r}")
    expected = data.get("expected_classes")
    if found.classes and expected is not None and len(found.classes) != expected:
        raise ConfigError(
            f"imagenet_val: {root!r} has {len(found.classes)} class folders, but ImageNet-1k has {expected} "
            f"(data.expected_classes); {OWN_FOLDER_HINT}"
        )
    check_subset_size(data, found, f"imagenet_val {root!r}")


def check_subset_size(data: dict[str, Any], found: FolderCount, where: str) -> None:
    """The subset must not ask for more images than the folder holds."""
    wanted = data.get("subset_size")
    if wanted is not None and wanted > found.n_images:
        raise ConfigError(
            f"data.subset_size: {wanted} images asked for, but {where} holds {found.n_images}; "
            f"set data.subset_size to at most {found.n_images}, or to null for every image"
        )


def check_own_folder(data: dict[str, Any]) -> None:
    """An own image folder (data.kind folder) must hold class subfolders, each with images, and
    no image beside them."""
    root = Path(data["root"]).expanduser()
    if not root.is_dir():
        raise ConfigError(f"data.root: {str(root)!r} is not a directory; set it to a folder with one subfolder per class")
    found = count_images(root)
    if not found.classes:
        raise ConfigError(
            f"data.root: {str(root)!r} has no subfolders; it needs one per class (<root>/<class>/<image>), "
            f"as torchvision's ImageFolder reads it ({len(found.top_level_images)} images lie directly in it)"
        )
    check_no_stray_images(found, f"data.root: {str(root)!r}")
    if found.empty_classes:
        raise ConfigError(
            f"data.root: {len(found.empty_classes)} of the {len(found.classes)} subfolders of {str(root)!r} hold no "
            f"images ({', '.join(IMAGE_EXTENSIONS)}): {found.empty_classes[:5]}. Every subfolder is a class: "
            "remove the stray folders or add their images"
        )
    check_subset_size(data, found, f"data.root {str(root)!r}")


def check_no_stray_images(found: FolderCount, where: str) -> None:
    """Images directly in a folder of class folders belong to no class: ImageFolder's data job
    would refuse the folder (which layout is meant?) after the run has started."""
    if found.classes and found.top_level_images:
        stray = found.top_level_images
        raise ConfigError(
            f"{where} holds {len(stray)} image(s) directly in it, beside its {len(found.classes)} class folders: "
            f"{list(stray[:5])}{' …' if len(stray) > 5 else ''}. Every image must lie in the folder of its class "
            "(<root>/<class>/<image>): move these into their class folders, or out of the folder"
        )


def data_class_count(config: dict[str, Any]) -> tuple[int | None, str]:
    """How many classes the evaluation (and training) data has, and the config key that says so."""
    data = config.get("data", {})
    if data.get("kind") == "synthetic":
        return data.get("n_classes", 10), "data.n_classes"
    if data.get("kind") == "imagenet":
        return data.get("expected_classes"), "data.expected_classes"
    if data.get("kind") == "folder" and Path(data["root"]).expanduser().is_dir():
        return len(count_images(data["root"]).classes), f"the class folders of data.root {data['root']!r}"
    return None, ""


def check_class_count(config: dict[str, Any], architectures: dict[str, Architecture]) -> None:
    """Every architecture must have one output per class of the data: with fewer, training fails
    (a label without an output) and accuracies compare different label sets."""
    n_classes, data_key = data_class_count(config)
    if n_classes is None:
        return
    problems = []
    for arch in architectures.values():
        outputs = arch.kwargs.get("num_classes", TIMM_DEFAULT_CLASSES)
        if outputs != n_classes:
            where = "kwargs.num_classes" if "num_classes" in arch.kwargs else f"{arch.library}'s default, no kwargs.num_classes"
            problems.append(
                f"architectures.{arch.id}: {outputs} outputs ({where}), but the data has {n_classes} classes "
                f"({data_key}); set architectures.{arch.id}.kwargs.num_classes to {n_classes}"
            )
    if problems:  # every architecture at once, in zoo order
        raise ConfigError("\n".join(problems))


def load_study(config: dict[str, Any]) -> Study:
    """The Study of a (schema-validated) Snakemake config, zoo file included."""
    zoo_path = Path(config["zoo"])
    return build_study(config, load_zoo(zoo_path), zoo_path.parent)


def validated(data: Any, name: str, what: str) -> Any:
    """``data`` checked against schema ``name`` (``config`` or ``zoo``) as the workflow checks it:
    by Snakemake's validate, which also fills in the defaults, then by the same schema's strict
    validator (an integer is an int: 500.0 is not). A :class:`ConfigError` says briefly what is
    wrong (``what`` names the data). The workflow and layercrit-slurm's submission check use it."""
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    schema = SCHEMA_DIR / f"{name}.schema.yaml"
    try:
        validate(data, str(schema))
        failed = False
    except WorkflowError:
        failed = True
    problems = schema_problems(data, load_schema(name), what)
    if failed or problems:
        raise ConfigError(f"Invalid {what}:\n" + ("\n".join(problems) or f"{what} does not match {schema}"))
    return data


def check_config_files(paths: Iterable[str | Path]) -> None:
    """Snakemake reads config files with PyYAML, which keeps the last of a key given twice: read
    each again with ``read_yaml``, which refuses that (:class:`ConfigError`)."""
    for path in paths:
        read_yaml(path)


def schema_validator(schema: dict[str, Any]) -> Any:
    """jsonschema's validator of ``schema``, where ``integer`` means an int: JSON Schema counts
    500.0 (or 1e3 from ``--config``) as an integer, but a batch size, seed or count given as a
    float fails later in torch or in a file name (``seed0.0.json``)."""
    import jsonschema

    base = jsonschema.validators.validator_for(schema)
    strict = base.TYPE_CHECKER.redefine("integer", lambda _, value: isinstance(value, int) and not isinstance(value, bool))
    return jsonschema.validators.extend(base, type_checker=strict)(schema)


def schema_problems(data: Any, schema: dict[str, Any] | Any, what: str) -> list[str]:
    """What is wrong with ``data`` under ``schema`` (a schema, or its ``schema_validator``), one
    line per problem (none: it is valid)."""
    validator = schema_validator(schema) if isinstance(schema, dict) else schema
    lines = []
    for error in sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path))):
        key = ".".join(map(str, error.absolute_path)) or "(top level)"
        if error.validator == "additionalProperties":
            allowed = sorted(error.schema.get("properties", {}))
            unexpected = sorted(set(error.instance) - set(allowed))
            unexpected = [u for u in unexpected if not any(re.match(p, u) for p in error.schema.get("patternProperties", {}))]
            lines.append(f"{what} key {key!r}: unknown key(s) {unexpected}; allowed: {allowed}")
        elif error.validator == "enum":
            lines.append(f"{what} key {key!r}: {error.instance!r} is not allowed; allowed: {error.validator_value}")
        elif error.validator == "required":
            lines.append(f"{what} key {key!r}: {error.message}")
        else:
            # jsonschema's message already says what is wrong and allowed ("-1 is less than the
            # minimum of 0"); the key's description says what it is for.
            about = error.schema.get("description")
            lines.append(f"{what} key {key!r}: {error.message}" + (f" ({key}: {about})" if about else "") + _string_hint(error))
    return lines


def _string_hint(error: Any) -> str:
    """Why a number or list may have arrived as a string: Snakemake reads the values inside a
    nested ``--config`` entry (``reset={seeds: [0, 1, 2]}``) as strings, top-level ones typed."""
    expected = error.validator_value if error.validator == "type" else None
    expected = {expected} if isinstance(expected, str) else set(expected or ())
    if isinstance(error.instance, str) and expected and "string" not in expected:
        return (
            f". It is the string {error.instance!r}: Snakemake passes the values inside a nested --config entry "
            "(e.g. reset={seeds: [0, 1, 2]}) as strings. Put nested settings in a config file and give it with "
            "--configfile (top-level ones such as batch_size=250 arrive typed)"
        )
    return ""
