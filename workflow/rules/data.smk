# The evaluation images, prepared once as uint8 so that no evaluation job decodes images.

if config["data"]["kind"] == "imagenet":

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
            data=config["data"],
        script:
            "../scripts/prepare_imagenet.py"

elif config["data"]["kind"] == "folder":

    rule image_folder:
        output:
            eval=f"{RESULTS}/data/eval.safetensors",
        log:
            f"{RESULTS}/logs/data.log",
        conda:
            "../../envs/layercrit.yaml"
        threads: CORES
        params:
            data=config["data"],
        script:
            "../scripts/prepare_folder.py"

else:

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
