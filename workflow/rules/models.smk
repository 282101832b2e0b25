# One canonical checkpoint per model: results/<study>/models/<model>.safetensors.


rule train_model:
    input:
        train=f"{RESULTS}/data/train.safetensors",
    output:
        checkpoint=f"{RESULTS}/models/{{model}}.safetensors",
        init=f"{RESULTS}/models/{{model}}.init.safetensors",
        history=f"{RESULTS}/models/{{model}}.training.json",
    log:
        f"{RESULTS}/logs/models/{{model}}.log",
    wildcard_constraints:
        model="|".join(map(re.escape, TRAINED_MODELS)) or "^$",
    priority: job_priority(training_priority)
    conda:
        "../../envs/layercrit.yaml"
    threads: config["training"]["threads"]
    params:
        model=lambda wc: asdict(STUDY.models[wc.model]),
        architecture=lambda wc: architecture_spec(wc.model),
    script:
        "../scripts/train_model.py"


rule download_model:
    output:
        checkpoint=f"{RESULTS}/models/{{model}}.safetensors",
    log:
        f"{RESULTS}/logs/models/{{model}}.log",
    wildcard_constraints:
        model="|".join(map(re.escape, DOWNLOADED_MODELS)) or "^$",
    conda:
        "../../envs/layercrit.yaml"
    params:
        model=lambda wc: asdict(STUDY.models[wc.model]),
        architecture=lambda wc: architecture_spec(wc.model),
        cache=config["downloads"],
    script:
        "../scripts/fetch_model.py"
