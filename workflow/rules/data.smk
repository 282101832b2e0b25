# The evaluation images, prepared once as uint8 so that no evaluation job decodes images.


rule synthetic_data:
    output:
        train=f"{RESULTS}/data/train.safetensors",
        eval=f"{RESULTS}/data/eval.safetensors",
    log:
        f"{RESULTS}/logs/data.log",
    conda:
        "../../envs/layercrit.yaml"
    params:
        data=config["data"],
    script:
        "../scripts/make_synthetic_data.py"
