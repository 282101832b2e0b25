"""Snakemake adapter: train one causal language model of a zoo on its recipe's text, keeping its initial weights for `reinit`."""

from layercrit.joblog import script_log
from layercrit.models.training import train_zoo_language_model
from layercrit.study import Architecture


def main(sm) -> None:
    train_zoo_language_model(
        sm.params.model,
        Architecture(**sm.params.architecture),
        sm.input.text,
        tokenizer=sm.params.tokenizer,
        cache_dir=sm.params.cache,
        init_checkpoint=sm.input.start[0] if sm.input.start else None,
        checkpoint_out=sm.output.checkpoint,
        init_out=sm.output.init,
        history_out=sm.output.history,
        threads=sm.threads,
    )


with script_log(snakemake.log[0]):
    main(snakemake)
