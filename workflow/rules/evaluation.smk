# The evaluation stage: a clean baseline of every model on the evaluation images, then one reset
# job per (model, layer, seed) that resets the layer, evaluates and compares with the baseline.
# Where and how they run, what they read, their order and their bodies: functions/evaluation.smk.
#
# These are `run:` jobs on purpose. With the workflow profile's `force-use-threads`, Snakemake
# runs them as threads of its own process, where torch is imported once and the evaluation
# images, models and fresh initializations stay loaded (layercrit.evaluation.EvaluationCache).
# As separate processes each job would spend ~4 s importing torch and timm alone, more than
# its forward passes. Device leases (layercrit.evaluation.devices) keep concurrent jobs off
# each other's GPU.


include: "functions/evaluation.smk"


# Clean outputs of every model on the evaluation images: the reference every reset is compared to.
rule baseline:
    input:
        checkpoint=model_checkpoint,
        eval=baseline_eval_data,
    output:
        logits=f"{RESULTS}/baselines/{{model}}.logits.safetensors",
        summary=f"{RESULTS}/baselines/{{model}}.json",
    log:
        f"{RESULTS}/logs/baselines/{{model}}.log",
    threads: EVALUATION_THREADS
    resources:
        gpu=GPU,
    params:
        evaluation=EVALUATION,
    run:
        run_baseline(wildcards, input, output, params, threads, resources, log)


# One job per (model, layer, seed): reset the layer, evaluate, compare with the baseline.
rule reset:
    input:
        unpack(reset_inputs),
    output:
        reset_result("{model}", "{layer}", "{seed}", "{mode}"),
    log:
        f"{RESULTS}/logs/resets/{{mode}}/{{model}}/{{layer}}/seed{{seed}}.log",
    # In the study's order (model by model, seed by seed): what the process keeps loaded (the
    # model, its clean activations, a seed's fresh weights) then serves many jobs in a row.
    priority: job_priority(reset_priority)
    threads: EVALUATION_THREADS
    resources:
        gpu=GPU,
    params:
        evaluation=RESET_EVALUATION,
    run:
        run_reset(wildcards, input, output, params, threads, resources, log)


# One of N contiguous parts of the reset jobs (config shard=i/N): what one Slurm allocation runs
# under layercrit-slurm, each part's jobs still one job and one result file per (model, layer, seed).
rule shard:
    input:
        shard_results,
