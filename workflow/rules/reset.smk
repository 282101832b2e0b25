# One job per (model, layer, seed): reset the layer, evaluate, compare with the baseline.
#
# These are `run:` jobs on purpose. With the workflow profile's `force-use-threads`, Snakemake
# runs them as threads of its own process, where torch is imported once and the evaluation
# images, models and fresh initializations stay loaded (layercrit.evaluation.EvaluationCache).
# As separate processes each job would spend ~4 s importing torch and timm alone, more than
# its forward passes. Device leases (layercrit.devices) keep concurrent jobs off each other's GPU.


def reset_inputs(wildcards):
    inputs = {
        "checkpoint": model_checkpoint(wildcards),
        "logits": f"{RESULTS}/baselines/{wildcards.model}.logits.safetensors",
        "baseline": f"{RESULTS}/baselines/{wildcards.model}.json",
        "eval": f"{RESULTS}/data/eval.safetensors",
    }
    if wildcards.mode == "reinit":
        inputs["init"] = f"{RESULTS}/models/{wildcards.model}.init.safetensors"
    return inputs


rule reset:
    input:
        unpack(reset_inputs),
    output:
        reset_result("{model}", "{layer}", "{seed}", "{mode}"),
    resources:
        gpu=GPU,
    log:
        f"{RESULTS}/logs/resets/{{mode}}/{{model}}/{{layer}}/seed{{seed}}.log",
    run:
        from layercrit.evaluation import evaluate_reset
        from layercrit.joblog import job_log

        with job_log(log[0]):
            evaluate_reset(
                model_id=wildcards.model,
                arch=architecture_of(wildcards.model),
                checkpoint=input.checkpoint,
                baseline_logits=input.logits,
                baseline_summary=input.baseline,
                eval_data=input.eval,
                layer=wildcards.layer,
                seed=int(wildcards.seed),
                mode=wildcards.mode,
                settings=eval_settings(),
                out=output[0],
                init_checkpoint=input.get("init"),
            )
