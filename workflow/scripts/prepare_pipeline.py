"""Snakemake adapter: decode the evaluation images once per input pipeline (data.pipeline per_model) into a uint8 tensor file."""

from layercrit.imagenet import prepare_pipeline_images
from layercrit.joblog import script_log
from layercrit.pipelines import InputPipeline


def main(sm) -> None:
    summary = prepare_pipeline_images(
        sm.params.data,
        sm.output.eval,
        InputPipeline(**sm.params.pipeline),
        imagenet_val=sm.params.root,
        workers=sm.threads,
    )
    print(summary, flush=True)


with script_log(snakemake.log[0]):
    main(snakemake)
