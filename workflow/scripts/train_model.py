"""Snakemake adapter: train one model of the demo zoo, keeping its initial weights for `reinit`."""

import torch

from layercrit.data import load_image_set
from layercrit.io import provenance, write_json
from layercrit.joblog import script_log
from layercrit.study import Architecture
from layercrit.training import TrainingRecipe, train_classifier
from layercrit.zoo import build_architecture, save_checkpoint


def main(sm) -> None:
    torch.set_num_threads(sm.threads)
    model = sm.params.model
    arch = Architecture(**sm.params.architecture)
    source = model["source"]
    seed = source.get("seed", 0)
    adversarial = model.get("adversarial") or {}
    recipe = TrainingRecipe.from_config(
        {
            **source["recipe"],
            **(
                {"adversarial_norm": adversarial["norm"], "adversarial_epsilon": adversarial["epsilon"]}
                if adversarial
                else {}
            ),
        }
    )
    norm = model.get("normalization")
    mean, std = (norm["mean"], norm["std"]) if norm else (None, None)

    net = build_architecture(arch, seed=seed).train()
    init_state = {k: v.clone() for k, v in net.state_dict().items()}
    train = load_image_set(sm.input.train)
    history = train_classifier(net, train, recipe, mean=mean, std=std, seed=seed, progress=True)

    meta = {"model": model["id"], "architecture": arch.id, "seed": seed}
    save_checkpoint(sm.output.init, init_state, norm, {**meta, "weights": "initialization"})
    save_checkpoint(sm.output.checkpoint, net.state_dict(), norm, {**meta, "weights": "trained"})
    write_json(sm.output.history, {**meta, **history, **provenance(threads=sm.threads)})


with script_log(snakemake.log[0]):
    main(snakemake)
