"""Snakemake adapter: decode one's own class-folder images (data.kind folder) once into a uint8 tensor file."""

from layercrit.imagenet import prepare_validation_set
from layercrit.joblog import script_log


def main(sm) -> None:
    data = sm.params.data
    summary = prepare_validation_set(
        data["root"],
        sm.output.eval,
        n_subset=data["subset_size"],
        seed=data["subset_seed"],
        workers=sm.threads,
        resize=data["resize"],
        crop=data["crop"],
        listing_sha256=data.get("listing_sha256"),
        expected_classes=None,
        kind="image_folder",
    )
    print(summary, flush=True)


with script_log(snakemake.log[0]):
    main(snakemake)
