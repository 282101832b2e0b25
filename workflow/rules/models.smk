# One canonical checkpoint per model: results/<study>/models/<model>.safetensors, trained here or
# downloaded (a model trained once by the workflow, whose zoo entry records that checkpoint, is
# downloaded and verified like any published model unless training.retrain).


include: "functions/models.smk"


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
        model="|".join(map(re.escape, TRAINED_IMAGE_MODELS)) or "^$",
    priority: job_priority(training_priority)
    conda:
        "../../envs/layercrit.yaml"
    threads: config["training"]["threads"]
    params:
        model=lambda wc: training_entry(wc.model),
        architecture=lambda wc: architecture_spec(wc.model),
    script:
        "../scripts/train_model.py"


# A causal language model of the zoo trained on a text (its recipe's), from a fresh
# initialization or from the checkpoint of the model its recipe's init_from names.
rule train_language_model:
    input:
        text=language_training_text,
        start=language_training_start,
    output:
        checkpoint=f"{RESULTS}/models/{{model}}.safetensors",
        init=f"{RESULTS}/models/{{model}}.init.safetensors",
        history=f"{RESULTS}/models/{{model}}.training.json",
    log:
        f"{RESULTS}/logs/models/{{model}}.log",
    wildcard_constraints:
        model="|".join(map(re.escape, TRAINED_LANGUAGE_MODELS)) or "^$",
    priority: job_priority(training_priority)
    conda:
        "../../envs/layercrit.yaml"
    threads: config["training"]["threads"]
    params:
        model=lambda wc: training_entry(wc.model),
        architecture=lambda wc: architecture_spec(wc.model),
        tokenizer=lambda wc: model_tokenizer(wc.model),
        cache=config["downloads"],
    script:
        "../scripts/train_language_model.py"


rule download_model:
    input:
        local_model_files,
    output:
        checkpoint=f"{RESULTS}/models/{{model}}.safetensors",
    log:
        f"{RESULTS}/logs/models/{{model}}.log",
    wildcard_constraints:
        model="|".join(map(re.escape, DOWNLOADED_MODELS)) or "^$",
    params:
        model=lambda wc: download_entry(wc.model),
        architecture=lambda wc: architecture_spec(wc.model),
        cache=config["downloads"],
    run:
        run_download(wildcards, output, params, log)
