# Clean outputs of every model on the evaluation images: the reference every reset is compared to.


rule baseline:
    input:
        checkpoint=model_checkpoint,
        eval=f"{RESULTS}/data/eval.safetensors",
    output:
        logits=f"{RESULTS}/baselines/{{model}}.logits.safetensors",
        summary=f"{RESULTS}/baselines/{{model}}.json",
    resources:
        gpu=GPU,
    log:
        f"{RESULTS}/logs/baselines/{{model}}.log",
    run:
        from layercrit.evaluation import evaluate_baseline
        from layercrit.joblog import job_log

        with job_log(log[0]):
            evaluate_baseline(
                model_id=wildcards.model,
                arch=architecture_of(wildcards.model),
                checkpoint=input.checkpoint,
                eval_data=input.eval,
                settings=eval_settings(),
                logits_out=output.logits,
                summary_out=output.summary,
                reported_top1=STUDY.models[wildcards.model].reported_top1,
            )
