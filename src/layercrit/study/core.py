"""The study: which models, layers, seeds and settings a run covers (``Study``), and
``build_study``, which resolves a schema-valid config and zoo into one, checking what a schema
cannot see: references between entries, files that must exist, modes a model cannot support.

Torch-free, like the whole package: the Snakefile builds the study at parse time, and on a
cluster every job parses the workflow again, where importing torch costs seconds each time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from layercrit.study.architectures import Architecture, _layer_list, architecture_from_spec, check_layer_lists_exist
from layercrit.study.blocks import architecture_blocks, selected_blocks
from layercrit.study.data_source import check_class_count, check_data_source, check_input_size, input_pipelines
from layercrit.study.errors import ConfigError
from layercrit.study.layers import Layer
from layercrit.study.pipelines import PER_MODEL, STUDY, InputPipeline
from layercrit.study.results import FIGURE_NAMES, LANGUAGE_FIGURE_NAMES
from layercrit.study.selection import selected_layers
from layercrit.study.text_data import check_language_models, check_logits_memory, is_text, token_file, tokenizer_names
from layercrit.study.language_training import check_language_training, trains_language_model
from layercrit.study.zoo import Model, model_normalization, trains_here


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
    # the zoo's comparisons among this study's models: (model, reference), drawn as differences
    comparisons: tuple[tuple[str, str], ...] = ()

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
        file, or with per-model pipelines its pipeline's (models that share one share the file);
        for a text study, the token windows of its tokenizer."""
        if is_text(self.config):  # the token windows of its tokenizer
            return token_file(self.architectures[self.models[model_id].architecture])
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

    @property
    def language_figures(self) -> tuple[str, ...]:
        """The figures of a text study besides ``figures`` (of ``LANGUAGE_FIGURE_NAMES``; drawn
        from the per-seed table by their own rule); none for an image study."""
        if not is_text(self.config):
            return ()
        return tuple(name for name in LANGUAGE_FIGURE_NAMES if name not in self.figures_left_out)

    def tokenizers(self) -> dict[str, str]:
        """Each language model's tokenizer, by model id, as the figures name it: perplexities
        compare only between models of one tokenizer (``text_data.tokenizer_names``)."""
        names = tokenizer_names({a: self.architectures[a] for a in dict.fromkeys(m.architecture for m in self.models.values())})
        return {m.id: names[m.architecture] for m in self.models.values() if m.architecture in names}

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
        if is_text(self.config) and not self.comparisons:
            reasons["block_difference_heatmap"] = (
                "the zoo compares no two of the study's models (zoo `comparisons`: [{model: ..., reference: ...}])"
            )
        return reasons


def _selected_units(
    reset: dict[str, Any], zoo_dir: Path, zoo: dict[str, Any], architectures: dict[str, Architecture], used: list[str]
) -> dict[str, tuple[Layer, ...]]:
    """What each used architecture's reset jobs reset: its selected layers (``reset.layers``) or,
    in mode remove, its selected blocks (``reset.blocks``; layercrit.study.blocks). Removal draws
    nothing, so it runs once per model and block: one seed, which names its results."""
    if reset["mode"] != "remove":
        if "blocks" in reset:
            raise ConfigError(f"reset.blocks: read only by reset.mode 'remove', and this study's mode is {reset['mode']!r}")
        return selected_layers(reset.get("layers", {}), architectures, used)
    if len(reset["seeds"]) > 1:
        raise ConfigError(
            f"reset.seeds: mode 'remove' draws nothing, so every seed would give the same result; give one, e.g. "
            f"seeds: [{reset['seeds'][0]}] (it only names the results), not {reset['seeds']}"
        )
    blocks = {a: architecture_blocks(zoo_dir, architectures[a], zoo["architectures"][a]) for a in used}
    return selected_blocks(reset.get("blocks", {}), blocks, used)


def _comparisons(zoo: dict[str, Any], models: dict[str, Model], architectures: dict[str, Architecture]) -> tuple[tuple[str, str], ...]:
    """The zoo's ``comparisons`` whose two models are both in the study (``models``), checked:
    each names models of the zoo, two different ones, of one architecture."""
    known = [entry["id"] for entry in zoo["models"]]
    arch_of = {entry["id"]: entry["architecture"] for entry in zoo["models"]}
    pairs = []
    for k, pair in enumerate(zoo.get("comparisons", [])):
        model, reference = pair["model"], pair["reference"]
        unknown = [m for m in (model, reference) if m not in known]
        if unknown:
            raise ConfigError(f"zoo.comparisons[{k}]: unknown model id(s) {unknown}; allowed: {known}")
        if model == reference:
            raise ConfigError(f"zoo.comparisons[{k}]: compares {model!r} with itself; name two different models")
        if arch_of[model] != arch_of[reference] and architectures[arch_of[model]].layers != architectures[arch_of[reference]].layers:
            raise ConfigError(
                f"zoo.comparisons[{k}]: {model!r} ({arch_of[model]}) and {reference!r} ({arch_of[reference]}) have different "
                "layers, so their differences compare nothing; compare models of one architecture (a base and its "
                "instruct model, two training steps of one model)"
            )
        if model in models and reference in models:
            pairs.append((model, reference))
    return tuple(pairs)


def parse_shard(shard: str | None) -> tuple[int, int]:
    """``"i/N"`` → (i, N) with 1 ≤ i ≤ N."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(shard or ""))
    if not match or not 1 <= int(match[1]) <= int(match[2]):
        raise ConfigError(
            f"shard: {shard!r} is not 'i/N' with 1 <= i <= N; the shard target needs it, "
            "e.g. snakemake shard --config shard=2/4 (the second of four parts of the reset jobs)"
        )
    return int(match[1]), int(match[2])


def build_study(config: dict[str, Any], zoo: dict[str, Any], zoo_dir: str | Path) -> Study:
    """Resolve a schema-valid config and zoo into a Study, checking cross-references.

    The JSON schemas catch unknown keys and wrong types; this catches what a schema cannot
    see: references between entries, files that must exist, modes a model cannot support.
    """
    zoo_dir = Path(zoo_dir)
    check_layer_lists_exist(zoo, zoo_dir, config.get("zoo"))
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

    zoo_models = dict(models)
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
    check_language_training(zoo_models, models, architectures, trained)
    trained_on_images = [m for m in trained if not trains_language_model(models[m])]
    if trained_on_images and config.get("data", {}).get("kind", "synthetic") != "synthetic":
        raise ConfigError(
            f"models {trained_on_images} train here (zoo source kind train), which needs the generated training images "
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
    check_language_models(config, used_architectures)
    check_logits_memory(config, used_architectures)
    selected = _selected_units(config["reset"], zoo_dir, zoo, architectures, used_archs)
    check_class_count(config, used_architectures)
    check_input_size(config, models, used_architectures)
    pipelines = input_pipelines(config, zoo, models, used_architectures)

    return Study(
        comparisons=_comparisons(zoo, models, architectures),
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
