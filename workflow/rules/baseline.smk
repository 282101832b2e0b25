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
