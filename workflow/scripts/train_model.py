"""Snakemake adapter: train one model of the demo zoo, keeping its initial weights for `reinit`."""

from layercrit.joblog import script_log
from layercrit.study import Architecture
from layercrit.training import train_zoo_model


def main(sm) -> None:
    train_zoo_model(
        sm.params.model,
        Architecture(**sm.params.architecture),
        sm.input.train,
        checkpoint_out=sm.output.checkpoint,
        init_out=sm.output.init,
        history_out=sm.output.history,
        threads=sm.threads,
    )


with script_log(snakemake.log[0]):
    main(snakemake)
