"""Snakemake adapter: generate the demo study's train and evaluation images."""

from layercrit.data import save_image_set
from layercrit.joblog import script_log
from layercrit.synthetic import make_synthetic_images


def main(sm) -> None:
    data = sm.params.data
    common = dict(n_classes=data["n_classes"], image_size=data["image_size"])
    # Different seeds for the two splits: the evaluation images are never seen in training.
    splits = {"train": (data["seed"], data["train_images"]), "eval": (data["seed"] + 1, data["eval_images"])}
    for split, (seed, n) in splits.items():
        images = make_synthetic_images(seed=seed, n_images=n, **common)
        save_image_set(images, sm.output[split], {"kind": "synthetic", "split": split, "seed": seed, **common})
        print(f"{split}: {n} images of {common['n_classes']} classes, seed {seed}", flush=True)


with script_log(snakemake.log[0]):
    main(snakemake)
