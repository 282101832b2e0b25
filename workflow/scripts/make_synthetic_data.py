"""Snakemake adapter: generate one split (train or eval) of the demo study's images."""

from layercrit.data import save_image_set
from layercrit.joblog import script_log
from layercrit.synthetic import make_synthetic_images


def main(sm) -> None:
    spec = dict(sm.params.images)
    split = spec.pop("split")
    images = make_synthetic_images(**spec)
    common = {k: spec[k] for k in ("seed", "n_classes", "image_size")}
    save_image_set(images, sm.output[0], {"kind": "synthetic", "split": split, **common})
    print(f"{split}: {spec['n_images']} images of {spec['n_classes']} classes, seed {spec['seed']}", flush=True)


with script_log(snakemake.log[0]):
    main(snakemake)
