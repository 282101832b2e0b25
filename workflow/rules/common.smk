# Config loading and validation, and the target functions of every stage.
# Nothing here imports torch: on a cluster every job parses these files again.
import re
import sys
from dataclasses import asdict
from pathlib import Path

from snakemake.utils import min_version, validate

min_version("8.20")

# The package lives in src/. Put it on the path of this process and of every job's process
# (script jobs inherit the environment), so the workflow runs from a checkout with or without
# `pip install -e .`, in any conda environment.
_SRC = str(Path(workflow.basedir) / "src")
sys.path.insert(0, _SRC)
from layercrit import put_on_subprocess_path
from layercrit.devices import gpus_visible, missing_device
from layercrit.study import (
    FIGURE_NAMES,
    MODULE_NAME,
    PUBLISHED_STUDY,
    RESET_MODES,
    ConfigError,
    build_study,
    load_zoo,
    needs_initial_weights,
    reset_result_path,
    schema_error_summary,
)

put_on_subprocess_path(_SRC)


def workflow_path(path):
    """A path from the config: as given (relative to the working directory) if it exists there,
    else relative to the workflow's directory, so shipped zoos are found from any directory.
    """
    given = Path(path)
    if given.is_absolute() or given.exists():
        return str(given)
    shipped = Path(workflow.basedir) / given
    return str(shipped) if shipped.exists() else str(given)


if "study" not in config:

    # the demo study, also when the workflow is run from another directory (-s .../Snakefile)
    configfile: workflow_path("config/demo.yaml")


def validated(data, schema, what):
    """Validate with Snakemake (which also fills in defaults); on failure say briefly what is wrong."""
    try:
        validate(data, schema)
    except WorkflowError:
        schema_path = (
            Path(workflow.basedir) / "workflow" / "schemas" / Path(schema).name
        )
        summary = schema_error_summary(data, schema_path, what)
        raise WorkflowError(f"Invalid {what}:\n{summary}") from None
    return data


validated(config, "../schemas/config.schema.yaml", "config")
# Resolved once here; job scripts read the same config.
config["zoo"] = workflow_path(config["zoo"])
config["published"]["zoo"] = workflow_path(config["published"]["zoo"])
try:
    _zoo_path = Path(config["zoo"])
    ZOO = validated(
        load_zoo(_zoo_path), "../schemas/zoo.schema.yaml", f"zoo {str(_zoo_path)!r}"
    )
    STUDY = build_study(config, ZOO, _zoo_path.parent)
except ConfigError as error:
    raise WorkflowError(f"Invalid configuration: {error}") from None

RESULTS = f"results/{STUDY.name}"
# The authors' released results form a study of their own, drawn with the paper's zoo.
PUBLISHED_NAME = PUBLISHED_STUDY["study"]
try:
    _published_zoo = Path(config["published"]["zoo"])
    PUBLISHED = build_study(
        PUBLISHED_STUDY,
        validated(
            load_zoo(_published_zoo, "published.zoo"),
            "../schemas/zoo.schema.yaml",
            "published zoo",
        ),
        _published_zoo.parent,
    )
except ConfigError as error:
    raise WorkflowError(f"Invalid configuration of published: {error}") from None
if STUDY.name == PUBLISHED_NAME:
    raise WorkflowError(
        f"Invalid configuration: study name {PUBLISHED_NAME!r} is reserved for the authors' results; choose another"
    )
MODE = STUDY.mode
# Rules that evaluate models ask for one GPU unless the study runs on the CPU, so that
# `--resources gpu=N` (locally) or Slurm (`--gpus=1`) hands each running job its own GPU.
GPU = 0 if config["device"] == "cpu" else 1
# On the CPU an evaluation uses every core (torch's intra-op threads) and says so with its
# `threads`: Snakemake then neither starts a training on cores it uses nor parks a second
# evaluation on a core to wait for the CPU. `device: auto` counts as the CPU where this machine
# has no GPU. (The executor is not known while the workflow is parsed, so the Slurm profile
# sets these jobs' threads itself: a login node says nothing about the compute nodes.)
EVALUATE_ON_CPU = workflow.is_main_process and (
    config["device"] == "cpu" or (config["device"] == "auto" and gpus_visible() == 0)
)


def evaluation_threads(wildcards):
    return workflow.cores if EVALUATE_ON_CPU else 1


def check_local_device():
    """A local run that asks for a GPU this machine lacks would prepare the data and train, then
    fail every evaluation: stop before the first job. Only local runs: the executor is known here
    (onstart), and a cluster's login node may have no GPU while its compute nodes do."""
    if workflow.local_exec and not workflow.touch:
        problem = missing_device(config["device"], gpus_visible())
        if problem:
            raise WorkflowError(f"Invalid configuration: {problem}")


onstart:
    check_local_device()


MODEL_IDS = list(STUDY.models)
TRAINED_MODELS = [m for m in MODEL_IDS if STUDY.models[m].source["kind"] == "train"]
DOWNLOADED_MODELS = [m for m in MODEL_IDS if m not in TRAINED_MODELS]


wildcard_constraints:
    study="|".join(map(re.escape, [STUDY.name, PUBLISHED_NAME])),
    model="|".join(map(re.escape, MODEL_IDS)),
    layer=MODULE_NAME.pattern,
    seed=r"\d+",
    mode="|".join(RESET_MODES),


def model_checkpoint(wildcards):
    return f"{RESULTS}/models/{wildcards.model}.safetensors"


def architecture_of(model_id):
    return STUDY.architectures[STUDY.models[model_id].architecture]


def architecture_spec(model_id):
    """The architecture as plain data (what a script process needs to build it)."""
    arch = architecture_of(model_id)
    return {
        "id": arch.id,
        "timm_name": arch.timm_name,
        "kwargs": arch.kwargs,
        "layers": (),
    }


def reset_result(model, layer, seed, mode=MODE):
    return f"{RESULTS}/{reset_result_path(mode, model, layer, seed)}"


def reset_results(wildcards):
    """Every reset result of the study for one mode (``wildcards`` or the mode's name)."""
    mode = wildcards if isinstance(wildcards, str) else wildcards.mode
    return [reset_result(m, l, s, mode) for m, l, s in STUDY.reset_jobs()]


def shard_results(wildcards):
    """The `shard` target: the reset results of one of N contiguous parts of the study (config
    shard=i/N), for one Slurm allocation each (layercrit.slurm)."""
    try:
        jobs = STUDY.reset_jobs_shard(config["shard"])
    except ConfigError as error:
        raise WorkflowError(f"Invalid configuration: {error}") from None
    return [reset_result(m, l, s) for m, l, s in jobs]


def baseline_summaries(wildcards=None):
    return expand(f"{RESULTS}/baselines/{{model}}.json", model=MODEL_IDS)


def table_targets():
    return expand(
        f"{RESULTS}/tables/{MODE}/{{table}}.csv",
        table=["resets", "summary", "models"],
    )


def figure_targets(study=None, mode=MODE):
    """Every figure of a study (PNG and PDF), Table 1 rendered and as CSV, the correlations, and
    for this study the comparison with the published results where it applies."""
    study = study or STUDY
    root = f"results/{study.name}"
    targets = expand(
        f"{root}/figures/{mode}/{{figure}}.{{ext}}",
        figure=[*study.figures, "model_table"],
        ext=["png", "pdf"],
    ) + [f"{root}/tables/{mode}/table1.csv", f"{root}/tables/{mode}/correlations.csv"]
    if study is STUDY and mode == MODE:
        targets += replication_targets()
    return targets


# Models of this study that the published results also hold (by id): those can be compared.
SHARED_WITH_PUBLISHED = [m for m in STUDY.models if m in PUBLISHED.models]


def replication_targets(required=False):
    """The comparison with the published results (table, per-layer table, figure), when this
    study re-randomizes models that the published results hold and `published.compare` is on.
    With ``required`` (the `replication` target), say why there is nothing to compare.
    """
    reasons = []
    if not config["published"]["compare"]:
        reasons.append("published.compare is false")
    if MODE != "randomize":
        reasons.append(f"reset.mode is {MODE!r}; the published results are 'randomize'")
    if not SHARED_WITH_PUBLISHED:
        reasons.append(
            f"no model id of zoo {config['zoo']!r} is in the published zoo {config['published']['zoo']!r}"
        )
    if reasons:
        if required:
            raise WorkflowError(
                "Nothing to compare with the published results: " + "; ".join(reasons)
            )
        return []
    root = f"{RESULTS}/tables/randomize"
    return [
        f"{root}/replication.csv",
        f"{root}/replication_layers.csv",
        f"{RESULTS}/figures/randomize/replication.png",
        f"{RESULTS}/figures/randomize/replication.pdf",
    ]


def study_named(name):
    """The study a figure or table belongs to: this config's, or the published results'."""
    return PUBLISHED if name == PUBLISHED_NAME else STUDY


# What the evaluation rules' results depend on, as their params: changing one re-runs them
# (Snakemake's params trigger). activation_cache_mb is not among them: reuse is bit-identical.
EVALUATION = {k: config[k] for k in ("device", "precision", "batch_size")}


def eval_settings(params, threads):
    from layercrit.forward import EvalSettings

    return EvalSettings(
        **params.evaluation,
        activation_cache_mb=config["activation_cache_mb"],
        cpu_threads=threads,
    )


def reset_inputs(wildcards):
    inputs = {
        "checkpoint": model_checkpoint(wildcards),
        "logits": f"{RESULTS}/baselines/{wildcards.model}.logits.safetensors",
        "baseline": f"{RESULTS}/baselines/{wildcards.model}.json",
        "eval": f"{RESULTS}/data/eval.safetensors",
    }
    if needs_initial_weights(wildcards.mode):
        inputs["init"] = f"{RESULTS}/models/{wildcards.model}.init.safetensors"
    return inputs


def _priority_functions_supported():
    # callable `priority:` came with Snakemake 9 (Rule.expand_priority); older ones take numbers
    from snakemake.rules import Rule

    return hasattr(Rule, "expand_priority")


if _priority_functions_supported():

    def reset_priority(wildcards):
        """Reset jobs run model by model, in zoo order (higher priority first)."""
        return len(MODEL_IDS) - MODEL_IDS.index(wildcards.model)

    def training_priority(wildcards):
        """Longest training first (epochs × forward-backward passes per batch), so that the last
        one to start is a short one and no core idles at the end."""
        model = STUDY.models[wildcards.model]
        recipe = model.source.get("recipe", {})
        steps = recipe.get("adversarial_steps", 2) if model.adversarial else 0
        return recipe.get("epochs", 10) * (1 + steps)

else:
    reset_priority = training_priority = 0


# Bodies of the `run:` jobs (baseline, reset). They import torch only when a job runs, in the
# long-lived Snakemake process that executes these jobs as threads (see reset.smk).


def require_granted_gpu(rule, output, resources):
    """Snakemake caps a job's `gpu=1` to what `--resources gpu=0` allows instead of refusing it.
    An evaluation that asked for a GPU and was granted none must not run on whatever device is
    there (the finish step of layercrit-slurm, which makes only tables and figures, says gpu=0).
    """
    if GPU and resources.get("gpu", GPU) < GPU:
        raise WorkflowError(
            f"{rule} needs a GPU (device: {config['device']}), but this run grants none (--resources gpu=0, as "
            f"in the finish step of layercrit-slurm): {output} is missing or out of date. Compute it where "
            "the GPUs are: run the same layercrit-slurm command again, or snakemake with GPUs"
        )


def run_baseline(wildcards, input, output, params, threads, resources, log):
    from layercrit.evaluation import evaluate_baseline
    from layercrit.joblog import job_log

    require_granted_gpu("baseline", output.summary, resources)
    with job_log(log[0]):
        evaluate_baseline(
            model_id=wildcards.model,
            arch=architecture_of(wildcards.model),
            weights=input.checkpoint,
            eval_data=input.eval,
            settings=eval_settings(params, threads),
            logits_out=output.logits,
            summary_out=output.summary,
            reported_top1=STUDY.models[wildcards.model].reported_top1,
        )


def run_reset(wildcards, input, output, params, threads, resources, log):
    from layercrit.evaluation import ResetInputs, evaluate_reset
    from layercrit.joblog import job_log

    require_granted_gpu("reset", output[0], resources)
    with job_log(log[0]):
        evaluate_reset(
            model_id=wildcards.model,
            arch=architecture_of(wildcards.model),
            files=ResetInputs(**dict(input.items())),
            layer=wildcards.layer,
            seed=int(wildcards.seed),
            mode=wildcards.mode,
            settings=eval_settings(params, threads),
            out=output[0],
        )
