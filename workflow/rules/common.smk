# Config and its validation, the two studies, wildcards, and the paths and policies every stage uses.
# Nothing here imports torch: on a cluster every job parses these files again.
import functools
import json
import os
import re
import sys
from dataclasses import asdict
from pathlib import Path

from snakemake.logging import logger
from snakemake.utils import min_version

min_version("8.20")

# The package lives in src/. Put it on the path of this process and of every job's process
# (script jobs inherit the environment), so the workflow runs from a checkout with or without
# `pip install -e .`, in any conda environment.
# The checkout this file belongs to, also where the workflow is used as a module of another
# project (workflow.basedir is then that project's directory). Its package and schemas are read
# from there, so a module fetched from a git host (github(...)) is not enough: use a clone.
if not isinstance(workflow.current_basedir, (str, os.PathLike)):
    raise WorkflowError(
        "layercrit runs from a local checkout: clone it (git clone --branch <tag> ...) and give "
        "`module ...: snakefile:` the path of its Snakefile (see the README, 'Use it in your own project')"
    )
WORKFLOW_ROOT = Path(workflow.current_basedir).parents[1]
_SRC = str(WORKFLOW_ROOT / "src")
sys.path.insert(0, _SRC)
from layercrit import put_on_subprocess_path
from layercrit.study import (
    FIGURE_NAMES,
    MODEL_TABLE,
    MODULE_NAME,
    REPLICATION_FIGURES,
    RESET_MODES,
    ConfigError,
    load_workflow_study,
    needs_initial_weights,
    reset_result_path,
    workflow_file,
)

from layercrit.image_folders import listing_param
from layercrit.source_specs import (
    local_source_files,
    local_source_param,
)

put_on_subprocess_path(_SRC)


def workflow_path(path):
    """A path from the config: as given (relative to the working directory) if it exists there,
    else relative to the workflow's directory, so shipped zoos are found from any directory.
    """
    return workflow_file(path, WORKFLOW_ROOT)


if not workflow.configfiles:

    # the demo study, also when the workflow is run from another directory (-s .../Snakefile);
    # --config entries apply on top of it (--config study=mine: the demo under that name)
    configfile: workflow_path("config/demo.yaml")


try:
    # the one builder of a run's studies (layercrit.study.workflow): config files, schemas, zoos
    _STUDIES = load_workflow_study(config, workflow.configfiles, WORKFLOW_ROOT)
except ConfigError as error:
    raise WorkflowError(str(error)) from None
STUDY = _STUDIES.study
RESULTS = f"results/{STUDY.name}"
MODE = STUDY.mode
# The authors' released results form a study of their own, drawn with the paper's zoo.
PUBLISHED = _STUDIES.published
PUBLISHED_NAME = PUBLISHED.name
MODEL_IDS = list(STUDY.models)
# Models trained here; the others are downloaded (or fetched from the checkpoint their training
# recorded, unless training.retrain).
TRAINED_MODELS = list(STUDY.trained_models)
DOWNLOADED_MODELS = [m for m in MODEL_IDS if m not in TRAINED_MODELS]


wildcard_constraints:
    study="|".join(map(re.escape, [STUDY.name, PUBLISHED_NAME])),
    model="|".join(map(re.escape, MODEL_IDS)),
    layer=MODULE_NAME.pattern,
    seed=r"\d+",
    mode="|".join(RESET_MODES),


def model_checkpoint(wildcards):
    """A model's canonical checkpoint (``wildcards`` or the model id)."""
    model = wildcards if isinstance(wildcards, str) else wildcards.model
    return f"{RESULTS}/models/{model}.safetensors"


# The fields of a zoo entry that make its checkpoint. The others (display name, category,
# method, reported top-1, in_figures) only label it in tables and figures: as params of the
# download and training jobs, renaming a model would re-make it and re-run all its evaluations.
CHECKPOINT_FIELDS = ("id", "architecture", "source", "adversarial", "normalization")


def checkpoint_entry(model_id):
    """A model's zoo entry as its download job's params: the fields that make its checkpoint."""
    entry = asdict(STUDY.models[model_id])
    return {key: entry[key] for key in CHECKPOINT_FIELDS}


def download_entry(model_id):
    """A downloaded model's params: its checkpoint_entry, and the sha256 of its local source files
    (layercrit.source_specs.local_source_param): a file saved over with other content re-makes
    the checkpoint, also with an older modification time (rsync -a, cp -p)."""
    source = STUDY.models[model_id].source
    return checkpoint_entry(model_id) | local_source_param(
        source, model_checkpoint(model_id)
    )


def local_model_files(wildcards):
    """A downloaded model's source files on this machine (file:// or a path): inputs of its
    download, so that a file saved over (a model retrained) re-makes its checkpoint and all that
    depends on it. Web files are not: their cached copy is verified by sha256 instead.
    """
    return local_source_files(STUDY.models[wildcards.model].source)


def training_entry(model_id):
    """A trained model's zoo entry as its training job's params: without the checkpoint a
    training once recorded, which is its result, not an input (recording one retrains nothing).
    """
    entry = checkpoint_entry(model_id)
    entry["source"] = {k: v for k, v in entry["source"].items() if k != "checkpoint"}
    return entry


def training_records(wildcards=None):
    """The training records of the models trained here, for the tables' provenance. As inputs
    they also make the switch to training.retrain: true re-make checkpoints that were fetched
    from their recorded training: the records are then missing, so train_model runs, and the
    baselines and resets after it (Snakemake re-runs no job for changed params whose outputs
    lack its metadata, as the training's record and initial weights do after a download).
    """
    return [f"{RESULTS}/models/{model}.training.json" for model in TRAINED_MODELS]


def synthetic_split(split):
    """What one split of the generated images is made from: the evaluation images never share a
    seed with the training images, and each split is its own job (the demo with recorded
    checkpoints needs no training images)."""
    data = config["data"]
    seed, count = {"train": (0, "train_images"), "eval": (1, "eval_images")}[split]
    return {
        "split": split,
        "seed": data["seed"] + seed,
        "n_images": data[count],
        "n_classes": data["n_classes"],
        "image_size": data["image_size"],
    }


# The study's input pipelines by name: with data.pipeline per_model, one evaluation-data file each.
PIPELINES = {pipeline.name: pipeline for pipeline in STUDY.pipelines.values()}


def data_params():
    """The data settings as the preparing job's params: without `pipeline`, so that images
    prepared before the key existed (what `study` does) stay current; with per_model also
    without resize and crop, which each file's pipeline sets instead."""
    unused = {"pipeline"} | ({"resize", "crop"} if STUDY.per_model_pipelines else set())
    return {key: value for key, value in config["data"].items() if key not in unused}


# The folder the evaluation images are read from (data.kind imagenet or folder; generated images have none).
IMAGE_FOLDER = {
    "imagenet": config.get("imagenet_val"),
    "folder": config["data"].get("root"),
}.get(config["data"]["kind"])


@functools.lru_cache
def folder_listing_of(prepared):
    """The image folder's listing as the param of the job that prepares ``prepared``
    (layercrit.image_folders.listing_param); a change since it was prepared is said once.
    """
    listing = listing_param(IMAGE_FOLDER, prepared)
    if listing.change and workflow.is_main_process:
        if params_trigger_on():
            then = "it is prepared again, and every model is evaluated on it again"
        else:
            then = f"--rerun-triggers leaves out params, so nothing is made again: add params, or --forcerun {prepared}"
        logger.warning(f"data: {listing.change}: {then}")
    return listing


def prepared_data_params(prepared):
    """data_params() and the image folder's listing, as the params of the job that prepares
    ``prepared``: images added, replaced or removed in the folder make the file again (and,
    through it, every baseline and reset), which Snakemake could not see otherwise."""
    return data_params() | folder_listing_of(prepared).param


def pipeline_params(wildcards):
    """The input pipeline of one evaluation-data file (data.pipeline per_model), as its params."""
    return asdict(PIPELINES[wildcards.pipeline])


def params_trigger_on():
    """Whether Snakemake re-runs a job whose params changed (--rerun-triggers has params, as by
    default); True where nothing is planned (no DAG settings)."""
    try:
        return any(trigger.name == "PARAMS" for trigger in workflow.rerun_triggers)
    except (AssertionError, AttributeError):
        return True


def settings_changed_unseen(settings):
    """With --rerun-triggers that leave out params (e.g. `--rerun-triggers mtime`), Snakemake
    re-runs no job for a changed setting. ``settings`` (dotted config keys that are params of the
    jobs) that differ from the config the study's tables recorded (their provenance.json), each
    as 'key: then … now …'; none where params trigger re-runs, or there are no tables yet.
    """
    provenance = Path(f"{RESULTS}/tables/{MODE}/provenance.json")
    if params_trigger_on() or not provenance.is_file():
        return []
    try:
        recorded = json.loads(provenance.read_text()).get("config", {})
    except ValueError:
        return []

    def value(data, key):
        for part in key.split("."):
            data = data.get(part) if isinstance(data, dict) else None
        return data

    return [
        f"{key}: {value(recorded, key)!r} then, {value(config, key)!r} now"
        for key in settings
        if value(recorded, key) != value(config, key)
    ]


@functools.lru_cache
def warn_of_unseen_setting_changes(wildcards=None):
    """Warn, once, of the job settings changed since the study's tables were made, where
    --rerun-triggers leaves out params, so that Snakemake re-makes nothing for them. An input
    function of the tables that adds no input: Snakemake knows its triggers only when it plans
    the jobs, not while it parses the workflow."""
    # the settings the jobs take as params: evaluation (evaluation.smk), seed scheme, data
    settings = [
        *EVALUATION,
        "reset.seed_scheme",
        *(f"data.{key}" for key in data_params()),
    ]
    unseen = settings_changed_unseen(settings)
    if unseen and workflow.is_main_process:
        logger.warning(
            f"--rerun-triggers leaves out params, so Snakemake re-runs nothing for the settings changed since "
            f"{RESULTS}/tables/{MODE} was made ({'; '.join(unseen)}): its results are still those of the "
            "old settings. Run with the default triggers (or add params: --rerun-triggers mtime params), "
            "or name what to make again: --forcerun reset for reset.seed_scheme, --forcerun baseline for "
            "device, precision or batch_size (the resets follow), --forcerun with the evaluation-data "
            f"file ({RESULTS}/data/...) for a data setting"
        )
    return []


def architecture_of(model_id):
    return STUDY.architectures[STUDY.models[model_id].architecture]


def architecture_spec(model_id):
    """The architecture as plain data (what a script process needs to build it; no layer list)."""
    return architecture_of(model_id).job_params()


def reset_result(model, layer, seed, mode=MODE):
    return f"{RESULTS}/{reset_result_path(mode, model, layer, seed)}"


def reset_results(wildcards):
    """Every reset result of the study for one mode (``wildcards`` or the mode's name)."""
    mode = wildcards if isinstance(wildcards, str) else wildcards.mode
    return [reset_result(m, l, s, mode) for m, l, s in STUDY.reset_jobs()]


def baseline_summaries(wildcards=None):
    return expand(f"{RESULTS}/baselines/{{model}}.json", model=MODEL_IDS)


def job_priority(function):
    """``function`` (wildcards -> number) as a rule's `priority:` where this Snakemake takes a
    callable there (9.0 on, Rule.expand_priority); older ones take numbers only: then none.
    """
    from snakemake.rules import Rule

    return function if hasattr(Rule, "expand_priority") else 0


def training_priority(wildcards):
    """Longest training first (epochs × forward-backward passes per batch), so that the last
    one to start is a short one and no core idles at the end."""
    model = STUDY.models[wildcards.model]
    recipe = model.source.get("recipe", {})
    steps = recipe.get("adversarial_steps", 2) if model.adversarial else 0
    return recipe.get("epochs", 10) * (1 + steps)
