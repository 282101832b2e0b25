# One job per (model, layer, seed): reset the layer, evaluate, compare with the baseline.
#
# These are `run:` jobs on purpose. With the workflow profile's `force-use-threads`, Snakemake
# runs them as threads of its own process, where torch is imported once and the evaluation
# images, models and fresh initializations stay loaded (layercrit.evaluation.EvaluationCache).
# As separate processes each job would spend ~4 s importing torch and timm alone, more than
# its forward passes. Device leases (layercrit.evaluation.devices) keep concurrent jobs off each other's GPU.


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
