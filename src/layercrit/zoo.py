"""Architectures and model checkpoints.

Every model of a study, wherever it came from, becomes one canonical checkpoint: a safetensors
file with the plain state_dict of its architecture and, in the header, the model's input
normalization. Later jobs load that one uniform, fast, pickle-free file.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors.torch import save_file

from layercrit.io import atomic_path, read_safetensors
from layercrit.study import Architecture, Layer, write_layer_table

CHECKPOINT_HEADER = "layercrit"  # the one safetensors header entry of a checkpoint (JSON)
RESETTABLE_TYPES = {"Conv2d": torch.nn.Conv2d, "Linear": torch.nn.Linear}


def build_architecture(arch: Architecture, seed: int | None = None) -> torch.nn.Module:
    """A freshly initialized model of ``arch`` (timm's default initializer), in eval mode.

    With ``seed``, the initialization is drawn from a private RNG state so the result depends
    only on (architecture, seed), not on what ran before in this process.
    """
    if seed is None:
        model = timm.create_model(arch.timm_name, pretrained=False, **arch.kwargs)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = timm.create_model(arch.timm_name, pretrained=False, **arch.kwargs)
    return model.eval()


def enumerate_layers(model: torch.nn.Module, types: tuple[str, ...] = ("Conv2d", "Linear")) -> list[Layer]:
    """The model's Conv2d/Linear modules in module (definition) order, with weight shapes."""
    layers = []
    for name, module in model.named_modules():
        type_name = type(module).__name__
        if type_name in types and isinstance(module, tuple(RESETTABLE_TYPES[t] for t in types)):
            layers.append(Layer(name, type_name, tuple(module.weight.shape), len(layers)))
    return layers


@dataclass(frozen=True)
class Checkpoint:
    state_dict: dict[str, torch.Tensor]
    normalization: dict[str, Any] | None
    metadata: dict[str, Any]


def save_checkpoint(
    path: str | Path,
    state_dict: dict[str, torch.Tensor],
    normalization: dict[str, Any] | None,
    metadata: dict[str, Any] | None = None,
) -> None:
    # One header entry, its JSON keys sorted: safetensors writes a header's entries in hash-map
    # order, which differs from process to process, so two entries would make a deterministic
    # training's file differ byte for byte (and its sha256, which baselines record).
    content = {"normalization": normalization, "metadata": metadata or {}}
    header = {CHECKPOINT_HEADER: json.dumps(content, sort_keys=True, default=str)}
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, header)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    state_dict, header = read_safetensors(path, device=str(device))
    if CHECKPOINT_HEADER in header:
        content = json.loads(header[CHECKPOINT_HEADER])
    else:  # written by earlier versions: one entry per field
        content = {key: json.loads(header[key]) for key in ("normalization", "metadata") if key in header}
    return Checkpoint(
        state_dict=state_dict,
        normalization=content.get("normalization"),
        metadata=content.get("metadata") or {},
    )


def load_model(arch: Architecture, checkpoint: Checkpoint) -> torch.nn.Module:
    """Build ``arch`` and load the checkpoint strictly: every tensor must be there, with its shape."""
    model = build_architecture(arch, seed=0)
    missing, unexpected = model.load_state_dict(checkpoint.state_dict, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"checkpoint does not fit architecture {arch.id!r}: missing keys {missing}, unexpected keys {unexpected}"
        )
    return model.eval()


def _main() -> None:
    from layercrit.study import load_zoo

    parser = argparse.ArgumentParser(prog="python -m layercrit.zoo", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("layers", help="write the layer list (TSV) of an architecture of a zoo file")
    p.add_argument("zoo", type=Path, help="zoo YAML, e.g. config/zoo/demo.yaml")
    p.add_argument("architecture", help="architecture id in that zoo")
    args = parser.parse_args()

    zoo = load_zoo(args.zoo)
    spec = zoo["architectures"][args.architecture]
    arch = Architecture(args.architecture, spec["timm"], dict(spec.get("kwargs", {})), ())
    out = args.zoo.parent / spec["layers"]
    layers = enumerate_layers(build_architecture(arch, seed=0))
    write_layer_table(layers, out)
    print(f"wrote {len(layers)} layers of {args.architecture} to {out}")


if __name__ == "__main__":
    _main()
