# The evaluation images, prepared once as uint8 so that no evaluation job decodes images: once
# per study, or with data.pipeline per_model once per distinct input pipeline of its models. The
# image folder's listing is in their params (prepared_data_params): a changed folder re-makes them.


include: "functions/data.smk"


# Defined in every study (without per-model pipelines it has no job), so that the command its
# messages give, snakemake --forcerun pipeline_images, runs anywhere.
rule pipeline_images:
    output:
        eval=f"{RESULTS}/data/eval-{{pipeline}}.safetensors",
    log:
        f"{RESULTS}/logs/data/eval-{{pipeline}}.log",
    wildcard_constraints:
        pipeline="|".join(map(re.escape, PIPELINES)),
    conda:
        "../../envs/layercrit.yaml"
    threads: CORES
    params:
        root=config["imagenet_val"],
        data=lambda wc: prepared_data_params(
            f"{RESULTS}/data/eval-{wc.pipeline}.safetensors"
        ),
        pipeline=pipeline_params,
    script:
        "../scripts/prepare_pipeline.py"


if config["data"]["kind"] == "imagenet" and not STUDY.per_model_pipelines:

    rule imagenet_subset:
        output:
            eval=f"{RESULTS}/data/eval.safetensors",
        log:
            f"{RESULTS}/logs/data.log",
        conda:
            "../../envs/layercrit.yaml"
        threads: CORES
        params:
            root=config["imagenet_val"],
            data=lambda wc: prepared_data_params(f"{RESULTS}/data/eval.safetensors"),
        script:
            "../scripts/prepare_imagenet.py"

elif config["data"]["kind"] == "folder" and not STUDY.per_model_pipelines:

    rule image_folder:
        output:
            eval=f"{RESULTS}/data/eval.safetensors",
        log:
            f"{RESULTS}/logs/data.log",
        conda:
            "../../envs/layercrit.yaml"
        threads: CORES
        params:
            data=lambda wc: prepared_data_params(f"{RESULTS}/data/eval.safetensors"),
        script:
            "../scripts/prepare_folder.py"

elif config["data"]["kind"] == "text":

    # One token file per distinct tokenizer of the zoo's language models (layercrit.text_windows).
    rule text_tokens:
        input:
            text=text_file(config["data"]),
        output:
            tokens=f"{RESULTS}/data/tokens-{{tokenizer}}.safetensors",
        log:
            f"{RESULTS}/logs/data/tokens-{{tokenizer}}.log",
        wildcard_constraints:
            tokenizer="|".join(TOKENIZERS) or "^$",
        conda:
            "../../envs/layercrit.yaml"
        params:
            data=text_data_params(),
            tokenizer=lambda wc: TOKENIZERS[wc.tokenizer],
            cache=config["downloads"],
        script:
            "../scripts/prepare_text_tokens.py"

elif config["data"]["kind"] == "synthetic":

    rule synthetic_data:
        output:
            f"{RESULTS}/data/{{split}}.safetensors",
        log:
            f"{RESULTS}/logs/data/{{split}}.log",
        wildcard_constraints:
            split="train|eval",
        conda:
            "../../envs/layercrit.yaml"
        params:
            images=lambda wc: synthetic_split(wc.split),
        script:
            "../scripts/make_synthetic_data.py"


# Generated text (layercrit.synthetic_text), in every study: the evaluation text of data.synthetic
# and the training text of language models (text_file names the file of a text source).
rule synthetic_text:
    output:
        f"{RESULTS}/data/text/synthetic-{{task}}-seed{{seed}}-n{{documents}}.txt",
    log:
        f"{RESULTS}/logs/data/text/synthetic-{{task}}-seed{{seed}}-n{{documents}}.log",
    wildcard_constraints:
        task="|".join(SYNTHETIC_TEXT_TASKS),
        seed=r"\d+",
        documents=r"[1-9]\d*",
    conda:
        "../../envs/layercrit.yaml"
    params:
        text=lambda wc: {
            "task": wc.task,
            "seed": int(wc.seed),
            "documents": int(wc.documents),
        },
    script:
        "../scripts/make_synthetic_text.py"
