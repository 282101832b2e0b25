"""Column labels of the heatmaps: a layer's name, type and kernel as a short "[position] name"
that reads alike across architectures (``layer_label``; the paper's ResNet labels,
``paper_layer_label``), and the kind of a normalization layer (``norm_kind``). Pure string work,
kept apart from the drawing so that tables and tests can label layers without matplotlib."""

from __future__ import annotations

import re

from layercrit.analysis.statistics import cell_text

_BLOCK_CONV = re.compile(r"^layer(\d+)\.(\d+)\.(conv\d+)$")
_BLOCK_DOWNSAMPLE = re.compile(r"^layer(\d+)\.(\d+)\.downsample\.\d+$")
_BLOCK_NORM = re.compile(r"^layer(\d+)\.(\d+)\.(bn\d+)$")


def paper_layer_label(layer: str, layer_type: str, kernel: str) -> str:
    """Paper-style column label for a module of a bottleneck ResNet.

    ``conv1`` → ``[0.0] conv:7x7``; ``layer2.3.conv2`` → ``[2.3] conv2:3x3``;
    ``layer1.0.downsample.0`` → ``[1.0] downsample``; ``fc`` → ``[Head] fc``; anything else is
    returned unchanged. A ``model.`` prefix (as in the authors' raw CSV) is tolerated.
    ``layer_label`` uses it for ResNet names and labels every other architecture.
    """
    name = cell_text(layer)
    core = name[len("model.") :] if name.startswith("model.") else name
    kernel = cell_text(kernel)
    suffix = f":{kernel}" if kernel else ""
    if core == "conv1":
        return f"[0.0] conv{suffix}"
    if core == "fc":
        return "[Head] fc"
    if m := _BLOCK_CONV.match(core):
        return f"[{m[1]}.{m[2]}] {m[3]}{suffix}"
    if (m := _BLOCK_DOWNSAMPLE.match(core)) and cell_text(layer_type) in ("", "Conv2d"):
        return f"[{m[1]}.{m[2]}] downsample"
    return name


# Substrings of a module type that make it a normalization layer, and how its label marks it.
_NORM_KINDS = (
    ("batchnorm", "BN"), ("layernorm", "LN"), ("groupnorm", "GN"), ("instancenorm", "IN"), ("rmsnorm", "RMS"),
)  # fmt: skip
# Top-level modules before the first block and after the last one (timm's names).
_STEM_MODULES = frozenset({"stem", "patch_embed", "conv_stem"})
_HEAD_MODULES = frozenset({"head", "fc", "fc_norm", "classifier", "conv_head", "pre_logits"})
# Containers of blocks: a module named ``stages.1.blocks.0`` is block [1.0] itself.
_BLOCK_CONTAINERS = frozenset({"blocks", "layers", "stages"})


def norm_kind(layer_type: str) -> str:
    """"BN", "LN", "GN", … for a normalization layer type (``BatchNorm2d``, ``LayerNorm2d``,
    timm's ``BatchNormAct2d``), "norm" for another ``*Norm*`` type, "" for any other layer.

    Labels mark such layers: resetting a norm layer resets a per-channel scale and shift, not a
    weight matrix, and its criticality reads differently."""
    kind = cell_text(layer_type).lower()
    for key, short in _NORM_KINDS:
        if key in kind:
            return short
    return "norm" if "norm" in kind else ""


# torchvision's containers, renamed to timm's so that one labelling serves both: a ViT's
# encoder layers and patch projection, a RegNet's stages and blocks, the stem that MobileNet,
# EfficientNet and ConvNeXt keep as the first of their ``features``.
_TORCHVISION_NAMES = (
    (re.compile(r"^encoder\.layers\.encoder_layer_(\d+)\."), r"blocks.\1."),
    (re.compile(r"^encoder\.ln$"), "norm"),
    (re.compile(r"^conv_proj$"), "patch_embed.proj"),
    (re.compile(r"^heads\.head$"), "head"),
    (re.compile(r"^trunk_output\.block(\d+)\.block\d+-(\d+)\."), r"stages.\1.blocks.\2."),
    (re.compile(r"^features\.0\.(\d+)$"), r"stem.\1"),
    (re.compile(r"^stage(\d+)\."), r"stages.\1."),  # ShuffleNetV2
    (re.compile(r"^features\.denseblock(\d+)\.denselayer(\d+)\."), r"stages.\1.blocks.\2."),  # DenseNet
    # transformers' ViT family: <base>.layers.N (or <base>.encoder.layer.N), its patch projection
    # and embeddings (class token, position embedding), the final layernorm
    (re.compile(r"^[a-z0-9_]+\.(?:encoder\.)?layers?\.(\d+)\."), r"blocks.\1."),
    (re.compile(r"^gpt_neox\."), ""),  # transformers' GPT-NeoX (Pythia); Llama's and Qwen2's model. is cut above
    (re.compile(r"^[a-z0-9_]+\.embeddings\.patch_embeddings\.projection$"), "patch_embed.proj"),
    (re.compile(r"^[a-z0-9_]+\.embeddings$"), "patch_embed.embeddings"),
    (re.compile(r"^[a-z0-9_]+\.layernorm$"), "norm"),
    (re.compile(r"^(blocks\.\d+\.)attention\."), r"\1attn."),
    (re.compile(r"^(blocks\.\d+\.)layernorm_(before|after)$"), r"\1ln_\2"),
)
# A module that is a member of a Sequential is named by its index alone ("block.0.0"): its kind
# is put before the index ("block.0 conv0"), which stays (two Linear layers of one MLP).
_KIND_NAMES = {"Conv2d": "conv", "Linear": "linear"}


def _torchvision_to_timm(core: str) -> str:
    for pattern, replacement in _TORCHVISION_NAMES:
        core = pattern.sub(replacement, core)
    return core


def _member_kind(rest: str, layer_type: str, kind: str) -> str:
    """``rest`` with a trailing Sequential index named by the layer's kind (conv0, linear3, bn1)."""
    container, _, index = rest.rpartition(".")
    if not index.isdigit():
        return rest
    what = kind.lower() if kind else _KIND_NAMES.get(layer_type, layer_type.lower())
    return f"{container} {what}{index}" if container else f"{what}{index}"


def _split_position(core: str) -> tuple[list[str], str]:
    """Leading block indices of a module name and the rest: ``stages.1.blocks.0.conv_dw`` →
    (["1", "0"], "conv_dw"); ``blocks.3.attn.qkv`` → (["3"], "attn.qkv"); nested Sequential
    indices join them (``blocks.1.0.conv_dw`` → (["1", "0"], "conv_dw")). A name that ends in
    its index (``stem.0``) keeps it: that index is the layer's name, not its position."""
    parts = core.split(".")
    position: list[str] = []
    i = 0
    while i < len(parts) - 1:
        if parts[i] == "block":  # torchvision's Sequential inside a block: a role, not a position
            break
        if parts[i].isdigit() and position:
            position.append(parts[i])
            i += 1
        elif not parts[i].isdigit() and parts[i + 1].isdigit() and i + 2 < len(parts):
            position.append(parts[i + 1])
            i += 2
        else:
            break
    return position, ".".join(parts[i:])


def layer_label(layer: str, layer_type: str, kernel: str) -> str:
    """Compact column label of any architecture's layer: "[position] name:kernel", norm layers
    marked with their kind.

    ResNet names keep the paper's labels (``paper_layer_label``), their BatchNorms follow suit
    (``layer1.0.bn2`` → ``[1.0] bn2 (BN)``, ``bn1`` → ``[0.0] bn (BN)``). Other architectures: the
    block indices in brackets and the module's name within its block (ViT ``blocks.3.attn.qkv`` →
    ``[3] attn.qkv``; ConvNeXt ``stages.1.blocks.0.conv_dw`` → ``[1.0] conv_dw:7x7``,
    ``stages.1.blocks.0.norm`` → ``[1.0] norm (LN)``; a whole block, ``stages.1.blocks.0`` of
    type ``ConvNeXtBlock`` (its layer scale), → ``[1.0] ConvNeXtBlock``); stem and head modules
    tagged as such (``patch_embed.proj`` → ``[Stem] proj:16x16``, ``head.fc`` → ``[Head] fc``).
    Anything else is the module's name, with its kernel and norm mark. Labels stay short because
    the column labels' height is set by the longest, and distinct within a layer list.
    """
    name = cell_text(layer)
    core = _torchvision_to_timm(name[len("model.") :] if name.startswith("model.") else name)
    kind = norm_kind(layer_type)
    mark = f" ({kind})" if kind else ""
    kernel = cell_text(kernel)
    # an embeddings module's first parameter is a token (1x1xD), not a kernel (transformers' ViTEmbeddings)
    suffix = f":{kernel}" if kernel and not kind and not cell_text(layer_type).endswith("Embeddings") else ""
    if not kind and (paper := paper_layer_label(layer, layer_type, kernel)) != name:
        return paper
    if kind and core == "bn1":
        return f"[0.0] bn{mark}"
    if kind and (m := _BLOCK_NORM.match(core)):
        return f"[{m[1]}.{m[2]}] {m[3]}{mark}"
    if kind and (m := _BLOCK_DOWNSAMPLE.match(core)):
        return f"[{m[1]}.{m[2]}] downsample{mark}"
    position, rest = _split_position(core)
    container, _, index = rest.rpartition(".")
    if position and container in _BLOCK_CONTAINERS and index.isdigit():  # a whole block (its own
        position, rest = [*position, index], cell_text(layer_type) or container  # parameters)
    if position:
        return f"[{'.'.join(position)}] {_member_kind(rest, cell_text(layer_type), kind)}{suffix}{mark}"
    first, _, tail = core.partition(".")
    tag = "Stem" if first in _STEM_MODULES else "Head" if first in _HEAD_MODULES else ""
    if not tag:
        return f"{core}{suffix}{mark}"
    shown = tail if tail and not tail.isdigit() else core  # "stem.0" stays whole: "0" says nothing
    return f"[{tag}] {shown}{suffix}{mark}"
