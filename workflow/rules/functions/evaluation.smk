# The evaluation stage's helpers (its rules: ../evaluation.smk): where and how baseline and reset
# jobs run (device, threads, GPU grants, settings), what a job reads and when it runs, and the
# jobs' bodies.
import os
from collections import Counter

from snakemake.logging import logger

from layercrit.evaluation.devices import (
    EMULATED_GPUS,
    emulated_gpus,
    gpus_visible,
    missing_device,
    shared_pool,
)
from layercrit.study import jobs as study_jobs

# Rules that evaluate models ask for one GPU unless the study runs on the CPU, so that
# `--resources gpu=N` (locally) or Slurm (`--gpus=1`) hands each running job its own GPU.
GPU = 0 if config["device"] == "cpu" else 1
# The GPUs Snakemake grants this run (--resources gpu=N; None: not limited). The evaluation
# threads of this process share the first N visible GPUs (layercrit.evaluation.devices).
GRANTED_GPUS = getattr(workflow.global_resources.get("gpu"), "value", None)
# On the CPU an evaluation uses every core (torch's intra-op threads) and says so with its
# `threads`: Snakemake then neither starts a training on cores it uses nor parks a second
# evaluation on a core to wait for the CPU. `device: auto` counts as the CPU where this machine
# has no GPU. (The executor is not known while the workflow is parsed, so the Slurm profile
# sets these jobs' threads itself: a login node says nothing about the compute nodes.)
EVALUATE_ON_CPU = workflow.is_main_process and (
    config["device"] == "cpu" or (config["device"] == "auto" and gpus_visible() == 0)
)
# The CPUs this process may use: more torch threads than that only thrash.
USABLE_CPUS = len(os.sched_getaffinity(0))


# A number, not a function of the job: Snakemake inspects a function's signature for every job
# of the DAG, which the paper's 8,262 reset jobs pay at every start.
EVALUATION_THREADS = min(CORES, USABLE_CPUS) if EVALUATE_ON_CPU else 1
EVALUATION_RULES = ("baseline", "reset")
# Set by layercrit-slurm for its finish step, which makes tables and figures only: an evaluation
# there would run on another device than the study's others (and without a GPU).
NO_EVALUATIONS = os.environ.get("LAYERCRIT_EVALUATIONS") == "none"


def is_evaluation(rule_name):
    """Whether a rule evaluates models (also as a module's rule renamed `use rule * ... as x_*`)."""
    return rule_name.rpartition("_")[2] in EVALUATION_RULES


def evaluations_need_a_gpu():
    """Whether evaluations on this machine run on a GPU: `device: cuda…`, or `auto` with one visible."""
    return config["device"].startswith("cuda") or (
        config["device"] == "auto" and gpus_visible() > 0
    )


def evaluation_refusal(granted_gpus):
    """Why an evaluation may not run in this run, given the GPUs granted to it, or None."""
    if NO_EVALUATIONS:
        return (
            "this step evaluates nothing (LAYERCRIT_EVALUATIONS=none: the finish step of layercrit-slurm, which "
            "makes tables and figures without GPUs). Compute it where the GPUs are: run the same layercrit-slurm "
            "command again"
        )
    if (
        GPU
        and granted_gpus is not None
        and granted_gpus < GPU
        and evaluations_need_a_gpu()
    ):
        return (
            f"it needs a GPU (device: {config['device']}, {gpus_visible()} GPU(s) here), but this run grants none "
            "(--resources gpu=0). Grant the run its GPUs (--resources gpu=N), or evaluate on the CPU (device: cpu)"
        )
    return None


def check_before_first_job(log=None):
    """(Snakemake's onstart, which passes the log file.) A local run that cannot evaluate what it has to stops before its first job, instead of
    preparing the data and training first and then failing every evaluation; and says where a
    grant does not fit this machine. Only local runs: the executor is known here (onstart), and
    a cluster's login node may have no GPU while its compute nodes do."""
    if not workflow.local_exec or workflow.touch:
        return
    problem = missing_device(config["device"], gpus_visible())
    if problem:
        raise WorkflowError(f"Invalid configuration: {problem}")
    pending = Counter(
        job.rule.name
        for job in workflow.dag.needrun_jobs()
        if is_evaluation(job.rule.name)
    )
    refusal = evaluation_refusal(GRANTED_GPUS) if pending else None
    if refusal:
        jobs = " and ".join(f"{n} {rule} job(s)" for rule, n in sorted(pending.items()))
        raise WorkflowError(f"This run has {jobs} to evaluate, but {refusal}")
    for warning in grant_warnings():
        logger.warning(f"Warning: {warning}")


def grant_warnings():
    """Where the run's grants do not fit this machine (said, not refused: the run works)."""
    visible, warnings = gpus_visible(), []
    if GPU and GRANTED_GPUS and GRANTED_GPUS > visible:
        where = (
            f"{visible} GPU(s) visible: at most {visible} evaluation(s) run side by side"
            if visible
            else "no GPU here: evaluations run on the CPU, one at a time"
        )
        warnings.append(f"--resources gpu={GRANTED_GPUS}, but {where}")
    if EVALUATE_ON_CPU and CORES > USABLE_CPUS:
        warnings.append(
            f"--cores {CORES}, but this process may use {USABLE_CPUS} CPUs: evaluations use {USABLE_CPUS} threads"
        )
    if emulated_gpus():
        warnings.append(
            f"{EMULATED_GPUS}={emulated_gpus()}: GPUs are emulated by CPU devices (tests only)"
        )
    return warnings


if workflow.modifier.is_main_snakefile():
    workflow.onstart(check_before_first_job)
else:
    # Used as a module, Snakemake keeps only the main Snakefile's onstart: run ours before the
    # project's (one the project defines after `use rule * from layercrit` replaces both).
    _project_onstart = workflow._onstart
    workflow._onstart = lambda log: (check_before_first_job(log), _project_onstart(log))


# Whether the study evaluates causal language models on text (layercrit.evaluation.language).
TEXT_STUDY = config["data"]["kind"] == "text"


# What the evaluation rules' results depend on, as their params: changing one re-runs them
# (Snakemake's params trigger). activation_cache_mb is not among them: reuse is bit-identical.
EVALUATION = {k: config[k] for k in ("device", "precision", "batch_size")}
# A reset's also depend on the seed scheme. The default adds nothing, so that results made
# before there were schemes stay current; switching to `authors` re-runs the resets.
RESET_EVALUATION = EVALUATION | (
    {"seed_scheme": STUDY.seed_scheme}
    if STUDY.seed_scheme != "independent" and STUDY.mode == "randomize"
    else {}
)


def reset_inputs(wildcards):
    """What Snakemake sees a reset job read: its model's baseline, summary and clean logits (and
    the initial weights in mode reinit). The checkpoint and images it also reads are that
    baseline's inputs, named by reset_files and checked against the sha256 the summary records
    (layercrit.evaluation.verify_baseline_inputs): when one changes or is missing, the baseline
    runs again and, through it, every reset of the model. (The logits are declared: Snakemake
    re-makes a missing output only where a job needs it.) Few inputs matter at scale: each round
    Snakemake collects the inputs of every ready job, 8,262 of them in a resumed paper study
    (docs/benchmarks.md, "Snakemake's own cost per job").
    """
    inputs = {
        "baseline": f"{RESULTS}/baselines/{wildcards.model}.json",
        "logits": baseline_files(wildcards.model)["logits"],
    }
    if needs_initial_weights(wildcards.mode):
        inputs["init"] = f"{RESULTS}/models/{wildcards.model}.init.safetensors"
    return inputs


def baseline_eval_data(wildcards):
    """The evaluation images a model's baseline reads: the study's, or its input pipeline's."""
    return baseline_files(wildcards.model)["eval_data"]


def model_rank(model_id):
    """n for the zoo's first of n models, 1 for its last (layercrit.study.jobs.model_rank)."""
    return study_jobs.model_rank(MODEL_IDS, model_id)


# Each reset job's priority in the study's order (layercrit.study.jobs.reset_priorities).
RESET_PRIORITIES = study_jobs.reset_priorities(STUDY)


def reset_priority(wildcards):
    """Reset jobs run in the study's order (STUDY.reset_jobs: model by model in zoo order, within
    a model seed by seed): a model and its clean activations, and one seed's fresh weights, are
    loaded once for many consecutive jobs. Jobs outside the study (another mode, a seed asked
    for by path) come after their model's study jobs."""
    key = (wildcards.model, wildcards.layer, wildcards.seed)
    return RESET_PRIORITIES.get(key, model_rank(wildcards.model))


def shard_results(wildcards):
    """The `shard` target: the reset results of one of N contiguous parts of the study (config
    shard=i/N), for one Slurm allocation each (layercrit.slurm)."""
    try:
        jobs = STUDY.reset_jobs_shard(config["shard"])
    except ConfigError as error:
        raise WorkflowError(f"Invalid configuration: {error}") from None
    return [reset_result(m, l, s) for m, l, s in jobs]


# The jobs' bodies: called from the rules' run blocks, at job time.
def eval_settings(params, threads):
    from layercrit.evaluation.forward import EvalSettings

    return EvalSettings(
        **{k: params.evaluation[k] for k in EVALUATION},
        activation_cache_mb=config["activation_cache_mb"],
        cpu_threads=threads,
    )


def require_evaluation_allowed(rule, output, resources):
    """An evaluation job that may not run here fails before it evaluates (see evaluation_refusal;
    Snakemake caps a job's `gpu=1` to what `--resources gpu=0` allows instead of refusing it).
    """
    refusal = evaluation_refusal(resources.get("gpu", GPU))
    if refusal:
        raise WorkflowError(
            f"{rule}: {output} is missing or out of date, but {refusal}"
        )


def evaluation_devices():
    """The devices this process's evaluation threads share (layercrit.evaluation.devices)."""
    return shared_pool(config["device"], GRANTED_GPUS)


def reset_files(wildcards):
    """The files a reset job evaluates beside reset_inputs, as layercrit.evaluation.ResetInputs
    names them: the inputs of its model's baseline."""
    files = baseline_files(wildcards.model)
    return {"checkpoint": files["checkpoint"], "eval": files["eval_data"]}


def run_baseline(wildcards, input, output, params, threads, resources, log):
    """The baseline job: layercrit.evaluation.evaluate_baseline of one model."""
    from layercrit.evaluation import evaluate_baseline
    from layercrit.evaluation.language import evaluate_lm_baseline
    from layercrit.joblog import job_log

    require_evaluation_allowed("baseline", output.summary, resources)
    common = dict(
        model_id=wildcards.model,
        arch=architecture_of(wildcards.model),
        weights=input.checkpoint,
        eval_data=input.eval,
        settings=eval_settings(params, threads),
        logits_out=output.logits,
        summary_out=output.summary,
        devices=evaluation_devices(),
    )
    with job_log(log[0]):
        # a language model: next-token outputs on token windows (layercrit.evaluation.language)
        if TEXT_STUDY:
            evaluate_lm_baseline(**common)
        else:
            evaluate_baseline(
                **common, reported_top1=STUDY.models[wildcards.model].reported_top1
            )


def run_reset(wildcards, input, output, params, threads, resources, log):
    """The reset job: layercrit.evaluation.evaluate_reset of one (model, layer, seed, mode)."""
    from layercrit.evaluation import ResetInputs, evaluate_reset
    from layercrit.evaluation.language import evaluate_lm_reset
    from layercrit.joblog import job_log

    require_evaluation_allowed("reset", output[0], resources)
    with job_log(log[0]):
        (evaluate_lm_reset if TEXT_STUDY else evaluate_reset)(
            model_id=wildcards.model,
            arch=architecture_of(wildcards.model),
            files=ResetInputs(**dict(input.items()), **reset_files(wildcards)),
            layer=wildcards.layer,
            seed=int(wildcards.seed),
            mode=wildcards.mode,
            settings=eval_settings(params, threads),
            out=output[0],
            seed_scheme=STUDY.seed_scheme,
            fresh_arch=STUDY.fresh_architecture(wildcards.model),
            devices=evaluation_devices(),
        )
