"""Architectures and model checkpoints.

Every model of a study, wherever it came from, becomes one canonical checkpoint: a safetensors
file with the plain state_dict of its architecture and, in the header, the model's input
normalization. Later jobs load that one uniform, fast, pickle-free file.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from layercrit.evaluation.concurrency import global_rng, module_calls
from layercrit.io import CHECKPOINT_HEADER, DamagedFileError, atomic_path, file_sha256, read_safetensors
from layercrit.models.blocks import enumerate_blocks
from layercrit.models.builders import create_model, prepare_model, unknown_architecture_message
from layercrit.study import (
    Architecture,
    Layer,
    LayerListHeader,
    architecture_from_spec,
    architecture_identity,
    load_zoo,
    write_layer_table,
)
from layercrit.study.blocks import write_block_table
from layercrit.study.transformers_directory import is_local_directory


# The config's default download cache (``downloads``), relative to the working directory.
DEFAULT_DOWNLOADS = Path("resources/downloads")


def build_architecture(arch: Architecture, seed: int | None = None) -> torch.nn.Module:
    """A freshly initialized model of ``arch``, in eval mode, drawn by its library's own
    initializer (timm's per-architecture init, e.g. truncated normal for ViTs; torchvision's).

    With ``seed``, the initialization is drawn from a private RNG state so the result depends
    only on (architecture, seed), not on what ran before in this process; without, from the
    global stream as it stands. Either way no other thread of this process draws meanwhile, and
    no torch.fx trace runs (a constructor may run a forward pass): ``layercrit.evaluation.concurrency``.
    """
    prepare_model(arch)
    with global_rng(seed), module_calls():
        return create_model(arch).eval()


def enumerate_layers(model: torch.nn.Module) -> list[Layer]:
    """Every module with parameters of its own, in module (definition) order, with the shape of
    its weight (or first parameter): convolutions, linear layers, normalization layers (BatchNorm,
    LayerNorm, timm's norms), layer scales. The model's own top-level parameters (a ViT's class
    token and position embedding) belong to no named module and are not layers. A module whose
    parameters are all another's, tied to them (a language model's output head that is its input
    embedding), is not a layer of its own: resetting that other module resets it too, and a row of
    its own would repeat that measurement under another name."""
    layers = []
    owned: set[int] = set()  # the parameters of the modules before, by identity
    for name, module in model.named_modules():
        params = dict(module.named_parameters(recurse=False))
        tied = bool(params) and all(id(p) in owned for p in params.values())
        owned.update(id(p) for p in params.values())
        if name and params and not tied:
            weight = params.get("weight", next(iter(params.values())))
            layers.append(Layer(name, type(module).__name__, tuple(weight.shape), len(layers)))
    return layers


def model_input_facts(model: torch.nn.Module) -> dict[str, Any]:
    """What the model says about its input (written to the layer list, read at parse time):
    the pretrained config's normalization, interpolation and crop, the input size the model
    was built for, and whether it takes only that size (ViTs built for a size, without
    ``dynamic_img_size``)."""
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    size = list(cfg.get("input_size", ())[-2:]) or None
    built_for = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if built_for is not None:
        size = list(built_for)
    fixed = bool(cfg.get("fixed_input_size", False)) and not getattr(model, "dynamic_img_size", False)
    facts = {"input_size": size, "fixed_input_size": fixed}
    for key in ("mean", "std", "interpolation", "crop_pct"):
        if key in cfg:
            facts[key] = list(cfg[key]) if isinstance(cfg[key], (tuple, list)) else cfg[key]
    return facts


@dataclass(frozen=True)
class Checkpoint:
    state_dict: dict[str, torch.Tensor]
    normalization: dict[str, Any] | None
    metadata: dict[str, Any]
    path: str | None = None  # the file it was read from (named in errors)


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
    """A canonical checkpoint. Its header is required: it carries the model's input
    normalization, and a file without it (re-saved by hand, or not written by this workflow)
    would silently be evaluated on unnormalized images."""
    state_dict, header = read_safetensors(path, device=str(device))
    try:
        if CHECKPOINT_HEADER in header:
            content = json.loads(header[CHECKPOINT_HEADER])
        elif "normalization" in header:  # written by earlier versions: one entry per field
            content = {key: json.loads(header[key]) for key in ("normalization", "metadata") if key in header}
        else:
            raise DamagedFileError(
                path,
                f"its safetensors header lacks the {CHECKPOINT_HEADER!r} entry that records the model's input "
                "normalization: it was re-saved or replaced, not written by this workflow. Own weights go into a "
                "study as a model's source in the zoo (see 'A model of another architecture' in the README)",
            )
    except json.JSONDecodeError as e:
        raise DamagedFileError(path, f"its {CHECKPOINT_HEADER!r} header entry is not valid JSON: {e}") from None
    if not isinstance(content, dict):
        raise DamagedFileError(path, f"its {CHECKPOINT_HEADER!r} header entry is not a JSON object")
    return Checkpoint(
        state_dict=state_dict,
        normalization=content.get("normalization"),
        metadata=content.get("metadata") or {},
        path=str(path),
    )


def state_dict_mismatch(
    state: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor]
) -> tuple[list[str], list[str], list[tuple[str, tuple, tuple]]]:
    """What keeps ``state`` from loading strictly into a model whose state dict is ``reference``:
    the keys it lacks (reference order), those the model does not have (state order), and the
    tensors of other shapes (name, shape in ``state``, shape in ``reference``)."""
    missing = [name for name in reference if name not in state]
    unexpected = [name for name in state if name not in reference]
    reshaped = [
        (name, tuple(state[name].shape), tuple(ref.shape))
        for name, ref in reference.items()
        if name in state and state[name].shape != ref.shape
    ]
    return missing, unexpected, reshaped


def load_model(arch: Architecture, checkpoint: Checkpoint) -> torch.nn.Module:
    """Build ``arch`` and load the checkpoint strictly: every tensor must be there, with its shape."""
    model = build_architecture(arch, seed=0)
    missing, unexpected, shapes = state_dict_mismatch(checkpoint.state_dict, model.state_dict())
    reshaped = [f"{name}: {ours} in the file, {theirs} in the model" for name, ours, theirs in shapes]
    if reshaped or missing or unexpected:
        where = f"{checkpoint.path} " if checkpoint.path else ""
        problems = "; ".join(
            f"{len(items)} {what}: {items[:3]}{' …' if len(items) > 3 else ''}"
            for what, items in (("tensors of other shapes", reshaped), ("missing", missing), ("unexpected", unexpected))
            if items
        )
        fix = f" Check the model's `architecture` in the zoo, or make the file again: snakemake --forcerun {checkpoint.path}" if checkpoint.path else ""
        raise ValueError(
            f"checkpoint {where}does not fit architecture {arch.id!r} ({arch.library} {arch.name}, kwargs {arch.kwargs}): "
            f"{problems}.{fix}"
        )
    model.load_state_dict(checkpoint.state_dict)
    return model.eval()


def write_layers(zoo_path: Path, arch_id: str, downloads: Path = DEFAULT_DOWNLOADS) -> tuple[Path, int]:
    """Write the layer list of architecture ``arch_id`` of the zoo at ``zoo_path`` (its TSV, with
    the header the parse-time checks compare with the zoo); returns the file and its layer count.
    A transformers architecture's config is fetched into the download cache ``downloads``, or
    read from its local directory (``layercrit.study.transformers_directory``)."""
    zoo = load_zoo(zoo_path)
    specs = zoo.get("architectures", {})
    if arch_id not in specs:
        raise SystemExit(f"{zoo_path}: no architecture {arch_id!r}; it has {sorted(specs)}")
    spec = specs[arch_id]
    arch = architecture_from_spec(arch_id, spec, (), zoo_dir=zoo_path.parent)
    processor = None
    if arch.library == "transformers" and is_local_directory(arch.name):
        arch, config, processor = _directory_architecture(zoo_path, arch)
    elif arch.library == "transformers":
        arch, config, processor = _hub_architecture(zoo_path, arch, downloads)
    problem = unknown_architecture_message(arch)
    if problem:
        raise SystemExit(f"{zoo_path}: architectures.{arch_id}: {problem}")
    model = build_architecture(arch, seed=0)
    out = zoo_path.parent / spec["layers"]
    layers = enumerate_layers(model)
    if arch.extra.get("task") == "causal-lm":
        from layercrit.models.language_models import language_input_facts

        facts = language_input_facts(config)
    elif arch.library == "transformers":
        from layercrit.models.transformers_models import processor_input_facts

        facts = processor_input_facts(model, config, processor)
    else:
        facts = model_input_facts(model)
    header = LayerListHeader(architecture_identity(arch), facts)
    write_layer_table(layers, out, header)
    if "blocks" in spec:  # reset mode remove's list (layercrit.study.blocks)
        example = example_tokens(facts) if facts.get("tokens") else example_images(arch, facts)
        write_block_table(enumerate_blocks(model, example), zoo_path.parent / spec["blocks"], header)
    return out, len(layers)


def example_images(arch: Architecture, facts: dict[str, Any]) -> torch.Tensor:
    """Two images of the size the model says it takes (224 × 224 where it says none), to find its
    blocks' shapes with: a block list records them at that size."""
    side = facts.get("input_size") or [224, 224]
    return torch.randn(2, int(arch.kwargs.get("in_chans", 3)), *side, generator=torch.Generator().manual_seed(0))


def example_tokens(facts: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Two windows of 8 token ids (fewer where the model takes fewer positions), as keyword input
    of a causal LM, to find its blocks' shapes with: a block list records them per position."""
    length = min(8, facts.get("max_positions") or 8)
    return {"input_ids": torch.randint(0, facts["vocab_size"], (2, length), generator=torch.Generator().manual_seed(0))}


def _hub_architecture(zoo_path: Path, arch: Architecture, downloads: Path) -> tuple[Architecture, dict, dict | None]:
    """A transformers architecture with what its repository's config says (``extra``), that
    config, and its image processor's config (None where the repository has none)."""
    from dataclasses import replace

    from layercrit.downloads import DownloadError
    from layercrit.models.transformers_models import CONFIG_FILE, PROCESSOR_FILE, fetch_hub_json, hub_extra

    where = f"{zoo_path}: architectures.{arch.id} ({arch.name} at revision {arch.extra['revision']!r})"
    try:
        fetched = fetch_hub_json(arch, CONFIG_FILE, downloads)
        processor = fetch_hub_json(arch, PROCESSOR_FILE, downloads)
    except DownloadError as e:
        raise SystemExit(f"{where}: {e}. Check the repository id and the revision (a branch, tag or commit of it)") from None
    if fetched is None:
        raise SystemExit(
            f"{where}: the repository has no {CONFIG_FILE} at this revision: check the repository id and the revision "
            "(a branch, tag or commit of it)"
        )
    config, record = fetched
    arch = replace(arch, extra=hub_extra(arch, config, record))
    if arch.extra.get("task") == "causal-lm":  # it reads text its own tokenizer makes
        from layercrit.models.language_models import TOKENIZER_FILE, NoTokenizer, tokenizer_record

        try:
            arch.extra["tokenizer"] = tokenizer_record(arch, downloads)
        except NoTokenizer:
            raise SystemExit(
                f"{where}: the repository is a causal language model but has no {TOKENIZER_FILE} at this revision: "
                "its evaluation text is cut into tokens by its own tokenizer. Use a revision that has it, or a "
                "repository with the model's tokenizer files (tokenizer.json, tokenizer_config.json)"
            ) from None
        except DownloadError as e:
            raise SystemExit(f"{where}: its tokenizer: {e}") from None
    return arch, config, processor and processor[0]


def _directory_architecture(zoo_path: Path, arch: Architecture) -> tuple[Architecture, dict, dict | None]:
    """A transformers architecture of a local directory (``layercrit.study.transformers_directory``)
    with what its files say (``extra``: as a Hub repository's, without revision and commit), its
    config, and its image processor's config (None where the directory has none)."""
    from dataclasses import replace

    from layercrit.models.transformers_models import CONFIG_FILE, PROCESSOR_FILE, config_extra
    from layercrit.study.transformers_directory import TOKENIZER_FILES, directory_of, tokenizer_sha256s

    directory = directory_of(arch.name, zoo_path.parent)
    where = f"{zoo_path}: architectures.{arch.id} (directory {directory})"
    if not (directory / CONFIG_FILE).is_file():
        raise SystemExit(
            f"{where}: no {CONFIG_FILE} there; the directory holds what save_pretrained of a transformers config "
            "(and tokenizer) writes. Check the path: it is relative to the zoo file"
        )
    config = json.loads((directory / CONFIG_FILE).read_text())
    processor = json.loads((directory / PROCESSOR_FILE).read_text()) if (directory / PROCESSOR_FILE).is_file() else None
    arch = replace(arch, extra=config_extra(arch, config, file_sha256(directory / CONFIG_FILE)))
    if arch.extra.get("task") == "causal-lm":  # it reads text its own tokenizer makes
        if not (directory / TOKENIZER_FILES[0]).is_file():
            raise SystemExit(
                f"{where}: the directory is a causal language model but has no {TOKENIZER_FILES[0]}: its evaluation text is "
                "cut into tokens by its own tokenizer. Save the tokenizer there (save_pretrained writes tokenizer.json and "
                "tokenizer_config.json)"
            )
        arch.extra["tokenizer"] = tokenizer_sha256s(directory)
    return arch, config, processor


def _main() -> None:
    parser = argparse.ArgumentParser(prog="python -m layercrit.zoo", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "layers", help="write the layer list (TSV) of an architecture of a zoo file, and its block list where the entry names one"
    )
    p.add_argument("zoo", type=Path, help="zoo YAML, e.g. config/zoo/demo.yaml")
    p.add_argument("architecture", nargs="*", help="architecture id(s) in that zoo (default: every one)")
    p.add_argument(
        "--downloads", type=Path, default=DEFAULT_DOWNLOADS,
        help="download cache for a transformers architecture's config (the config's `downloads`; default %(default)s)",
    )  # fmt: skip
    args = parser.parse_args()
    for arch_id in args.architecture or list(load_zoo(args.zoo)["architectures"]):
        out, n = write_layers(args.zoo, arch_id, args.downloads)
        print(f"wrote {n} layers of {arch_id} to {out}" + (" and its block list" if _names_blocks(args.zoo, arch_id) else ""))


def _names_blocks(zoo_path: Path, arch_id: str) -> bool:
    return "blocks" in load_zoo(zoo_path)["architectures"][arch_id]


if __name__ == "__main__":
    _main()
