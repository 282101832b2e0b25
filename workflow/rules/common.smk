# Config loading, the two studies (layercrit.study.load_workflow_study), wildcards, and the
# paths and settings several stages share. Each stage's own helpers are in its .smk file.
# Nothing here imports torch: on a cluster every job parses these files again.
import os
import re
import sys
from pathlib import Path

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
    LANGUAGE_FIGURE_NAMES,
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
from layercrit.study.language_training import trains_language_model

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
# Of those trained here, the causal language models train on a text (rule train_language_model),
# the image classifiers on the generated training images (rule train_model).
TRAINED_LANGUAGE_MODELS = [
    m for m in TRAINED_MODELS if trains_language_model(STUDY.models[m])
]
TRAINED_IMAGE_MODELS = [m for m in TRAINED_MODELS if m not in TRAINED_LANGUAGE_MODELS]


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


def baseline_files(model):
    """What a model's baseline evaluates and writes, by layercrit.evaluation.BASELINE_INPUTS's
    names: the files its summary records the sha256 of, which reset jobs and the tables check.
    """
    return {
        "checkpoint": model_checkpoint(model),
        "eval_data": f"{RESULTS}/{STUDY.eval_data(model)}",
        "logits": f"{RESULTS}/baselines/{model}.logits.safetensors",
    }


def baseline_summaries(wildcards=None):
    return expand(f"{RESULTS}/baselines/{{model}}.json", model=MODEL_IDS)


def job_priority(function):
    """``function`` (wildcards -> number) as a rule's `priority:` where this Snakemake takes a
    callable there (9.0 on, Rule.expand_priority); older ones take numbers only: then none.
    """
    from snakemake.rules import Rule

    return function if hasattr(Rule, "expand_priority") else 0


def params_trigger_on():
    """Whether Snakemake re-runs a job whose params changed (--rerun-triggers has params, as by
    default); True where nothing is planned (no DAG settings)."""
    try:
        return any(trigger.name == "PARAMS" for trigger in workflow.rerun_triggers)
    except (AssertionError, AttributeError):
        return True


def _cores():
    """--cores; 1 where a run executes no job and gives none (--unlock, --cleanup-metadata),
    for which workflow.cores raises."""
    try:
        return workflow.cores
    except WorkflowError:
        return 1


# What the data preparation and the evaluations on the CPU take as their threads.
CORES = _cores()
