"""Snakemake adapter: decode the ImageNet validation subset once into a uint8 tensor file."""

from layercrit.imagenet import prepare_validation_set
from layercrit.joblog import script_log


def main(sm) -> None:
    data = sm.params.data
    summary = prepare_validation_set(
        sm.params.root,
        sm.output.eval,
        labels_file=data["labels_file"],
        n_subset=data["subset_size"],
        seed=data["subset_seed"],
        workers=sm.threads,
        resize=data["resize"],
        crop=data["crop"],
        listing_sha256=data.get("listing_sha256"),
        expected_classes=data["expected_classes"],
    )
    print(summary, flush=True)


with script_log(snakemake.log[0]):
    main(snakemake)
