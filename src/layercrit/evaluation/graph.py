"""A model's forward pass as a chain of segments, from its torch.fx graph.

A reset evaluation can start from the clean model's activations at any point of the forward pass
where one value carries everything the rest of the pass needs: resetting a layer changes nothing
computed before the layer is first used. ``graph_segments`` finds those points in the model's
traced graph instead of in a splitter written per architecture, so that one piece of code covers
every model whose forward torch.fx can trace (timm's and torchvision's: ResNet, ViT, ConvNeXt,
EfficientNet, MobileNetV3, RegNet, Swin, ...).

Why torch.fx (symbolic tracing), not torch.export or TorchScript: its graph calls the model's own
modules and reads the model's own parameters, op by op in the order of the model's forward, so a
segment computes exactly what the model computes (bit for bit, checked against the baseline
logits by ``CleanActivations.record``) and sees a layer reset in place (``reset_layer``) because it
holds the model's modules and parameter tensors, not copies. torch.export lifts the parameters
into inputs and decomposes ops (other kernels, other bits); TorchScript compiles its own kernels.
The tracer treats as single calls the modules and functions that timm and torchvision register as
not traceable for their own fx feature extraction (``timm.layers.get_notrace_modules``,
torchvision's ``torchvision.ops`` modules), so their models trace as their feature extractors do.

The cut points: a node of the graph whose value is the only one computed so far that any later
node uses (parameters aside: every segment reads those from the model). Between two blocks of a
residual network that is the block's output, also where the blocks have residuals inside
(EfficientNet, MobileNetV3, RegNet, Swin): inside such a block the block's input stays in use
until its skip connection is added. A segment is the graph between two cuts, made a
``GraphModule`` on the model itself. Pieces that use no parameter are merged into the piece before
them (a reset evaluation only ever starts at a segment that uses the reset layer: keeping the
input of one that uses none costs memory and saves nothing), and so are pieces that may write into
their input in place (an in-place activation after a cut): the recorded input must stay as
recorded. Then the pieces within one block are merged (a ViT block's attention and MLP halves; an
MBConv block without a skip, cut after each of its layers): one segment per block, as the
per-family splitters this replaces had. A cut inside a block is mostly on a wide intermediate
value (6× the block's width in an MBConv), so keeping it would cost several block inputs' memory
for one layer's saving, and under a memory budget (kept deepest first) leave shallower blocks
without a kept input. A block, from the module tree: the innermost module around a layer that has a
forward of its own (a Sequential or ModuleList is none; see ``_block_of``).

Why this replaced the per-family splitters (timm ResNet, VisionTransformer, ConvNeXt): on those
models the graph's segments are the chains' or finer (a ResNet's stem convolution and its pooled
features, a ViT's patch projection and final norm are cut points too; checked in
tests/test_forward.py), give the same logits bit for bit, and run as fast
(``benchmarks/graph_reuse.py``, docs/benchmarks.md); and they need no code that restates one
library version's forward, nor refuse a subclass or gradient checkpointing.

Which layers a segment holds is found from the tensors its nodes use, by identity with the
model's parameters and buffers (so shared weights count in every segment that uses them). A
layer used in several segments belongs to the first (``segment_holding``): starting there
recomputes every use.

The traced graph fixes what the forward decided in Python at tracing time (``self.training``,
configuration flags, input-size checks): segments are made from the model as it is evaluated (eval
mode) and checked against its baseline logits before use. Where tracing fails (control flow on
tensor values, ...) or the graph has no cut, ``graph_segments`` returns None, the evaluations of
that model run the full forward pass, and the log says why, once per architecture.
"""

from __future__ import annotations

import inspect
import logging
import math
import operator
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.fx

from layercrit.evaluation.concurrency import tracing

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Segment:
    name: str
    # module-name prefixes whose parameters this segment uses: from a traced graph, the modules
    # whose own parameters or buffers its nodes use (a model-level tensor by its own name)
    modules: tuple[str, ...]
    run: Callable[[torch.Tensor], torch.Tensor]

    def holds(self, layer: str) -> bool:
        return any(layer == m or layer.startswith(m + ".") for m in self.modules)


class LibraryTracer(torch.fx.Tracer):
    """torch.fx's tracer with timm's and torchvision's leaf modules and functions: what their own
    fx feature extraction does not trace through (modules with control flow on tensor values)."""

    # A buffer read in the traced code is a node of the graph, as a parameter is: not a value
    # computed once while tracing (a constant), which a reset of the buffer would not change.
    proxy_buffer_attributes = True

    def __init__(self) -> None:
        import timm.layers
        import torchvision.ops

        # torchvision's feature extraction: its ops modules are leaves, torchvision.ops autowrapped
        ops = tuple(c for _, c in inspect.getmembers(torchvision.ops, inspect.isclass) if issubclass(c, torch.nn.Module))
        functions = tuple(f for f in timm.layers.get_notrace_functions() if callable(f))
        super().__init__(autowrap_modules=(math, torchvision.ops), autowrap_functions=functions)
        self.leaves = tuple(timm.layers.get_notrace_modules()) + ops

    def is_leaf_module(self, m: torch.nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, self.leaves) or super().is_leaf_module(m, module_qualified_name)


def trace(model: torch.nn.Module) -> torch.fx.Graph:
    """The graph of ``model.forward`` on one input; its other arguments take their defaults (a
    reset evaluation calls ``model(x)``). Raises whatever tracing raises where it fails."""
    extra = list(inspect.signature(model.forward).parameters.values())[1:]
    required = [p.name for p in extra if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if required:
        raise TypeError(f"forward needs more than the image batch: {', '.join(required)}")
    concrete = {p.name: p.default for p in extra if p.default is not p.empty}
    return LibraryTracer().trace(model, concrete_args=concrete)


_CALLS = ("call_module", "call_function", "call_method")


def cut_positions(nodes: Sequence[torch.fx.Node]) -> list[int]:
    """Positions of the nodes (in execution order) whose value is the only one computed so far
    that a later node uses, parameters and constants (``get_attr``) aside, and that the rest of the
    graph uses: the points where the forward pass can be resumed from that one value."""
    position = {n: i for i, n in enumerate(nodes)}
    live_until = -1  # the last position that uses a value computed before the current node
    cuts = []
    for i, node in enumerate(nodes):
        if node.op == "output":
            break
        if node.op in _CALLS and live_until <= i and any(u.op != "output" for u in node.users):
            cuts.append(i)
        if node.op != "get_attr":
            live_until = max(live_until, *(position[u] for u in node.users), i)
    return cuts


_VIEW_METHODS = {
    "view", "view_as", "reshape", "reshape_as", "permute", "transpose", "t", "flatten", "unflatten", "squeeze",
    "unsqueeze", "expand", "expand_as", "narrow", "select", "unbind", "split", "chunk", "contiguous", "movedim",
    "moveaxis", "swapaxes", "swapdims", "detach", "as_strided", "unfold", "diagonal", "to", "type", "type_as", "float",
}  # fmt: skip
_INPLACE_OPERATORS = {
    operator.iadd, operator.isub, operator.imul, operator.itruediv, operator.ifloordiv, operator.imod,
    operator.ipow, operator.imatmul, operator.iand, operator.ior, operator.ixor, operator.ilshift, operator.irshift,
}  # fmt: skip


def _name_of(node: torch.fx.Node) -> str:
    return node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")


def _in_place(node: torch.fx.Node, modules: dict[str, torch.nn.Module]) -> bool:
    """Whether ``node`` writes into its first argument (``relu_``, ``inplace=True``, ``+=``)."""
    if node.op == "call_module":
        return getattr(modules[node.target], "inplace", False) is True
    name = _name_of(node)
    trailing = name.endswith("_") and not name.endswith("__")
    return node.op in _CALLS and (trailing or node.kwargs.get("inplace") is True or node.target in _INPLACE_OPERATORS)


def _aliases(node: torch.fx.Node, modules: dict[str, torch.nn.Module]) -> bool:
    """Whether ``node`` may return (a view of) its first argument rather than a new tensor."""
    if node.op == "call_module":  # Identity, Dropout, DropPath in eval mode, in-place activations
        return not any(True for _ in modules[node.target].parameters())
    return node.op in _CALLS and (_name_of(node) in _VIEW_METHODS or node.target is operator.getitem)


def writes_into_input(nodes: Iterable[torch.fx.Node], input_node: torch.fx.Node, modules: dict[str, torch.nn.Module]) -> bool:
    """Whether some node of a piece may write into the piece's input (through a view of it too)."""
    aliases = {input_node}
    for node in nodes:
        first = node.args[0] if node.args else None
        if first in aliases:
            if _in_place(node, modules):
                return True
            if _aliases(node, modules):
                aliases.add(node)
    return False


def _tensor_names(model: torch.nn.Module) -> dict[int, list[str]]:
    """Every name of each parameter and buffer of ``model``, by the tensor's identity."""
    names: dict[int, list[str]] = {}
    for name, t in [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]:
        names.setdefault(id(t), []).append(name)
    return names


def _attribute(model: torch.nn.Module, target: str) -> object:
    obj = model
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _layers_used(model: torch.nn.Module, nodes: Iterable[torch.fx.Node], names: dict[int, list[str]]) -> list[str]:
    """The modules whose own parameters or buffers ``nodes`` use (a model-level tensor, such as a
    ViT's class token, by its own name), in order of first use."""
    used: dict[str, None] = {}
    for node in nodes:
        if node.op == "call_module":
            module = model.get_submodule(node.target)
            tensors = [*module.parameters(), *module.buffers()]
        elif node.op == "get_attr":
            tensors = [_attribute(model, node.target)]
        else:
            continue
        for t in tensors:
            for name in names.get(id(t), ()):
                owner = name.rpartition(".")[0]
                used[owner or name] = None
    return list(used)


@dataclass
class _Piece:
    nodes: list[torch.fx.Node]
    input: torch.fx.Node | None  # the cut before it; None for the first piece (the image batch)
    layers: list[str]


def _pieces(model: torch.nn.Module, nodes: list[torch.fx.Node]) -> list[_Piece]:
    """The graph split at every cut, then merged where a cut is of no use (see the module doc)."""
    names, modules = _tensor_names(model), dict(model.named_modules(remove_duplicate=False))
    bounds = [-1, *cut_positions(nodes), len(nodes) - 1]
    pieces: list[_Piece] = []
    for start, end in zip(bounds, bounds[1:]):
        piece = _Piece(nodes[start + 1 : end + 1], nodes[start] if start >= 0 else None, [])
        piece.layers = _layers_used(model, piece.nodes, names)
        useless = not piece.layers or (piece.input is not None and writes_into_input(piece.nodes, piece.input, modules))
        if pieces and (useless or not pieces[-1].layers):
            _merge(pieces[-1], piece)
        else:
            pieces.append(piece)
    blocks: list[_Piece] = []  # then one segment per block, not per layer within a block
    for piece in pieces:
        if blocks and _one_block(blocks[-1].layers, piece.layers, modules):
            _merge(blocks[-1], piece)
        else:
            blocks.append(piece)
    return blocks


def _merge(piece: _Piece, after: _Piece) -> None:
    piece.nodes += after.nodes
    piece.layers += [n for n in after.layers if n not in piece.layers]


_CONTAINERS = (torch.nn.Sequential, torch.nn.ModuleList, torch.nn.ModuleDict)


def _block_of(layers: list[str], modules: dict[str, torch.nn.Module]) -> str:
    """The block that holds ``layers``: the innermost module around all of them that has a forward
    of its own (a container, Sequential or ModuleList, is none); "" for the model itself."""
    blocks = set()
    for layer in layers:
        parts = layer.split(".")
        # the nearest first; a layer with parts of its own (a ConvNeXt block with its layer scale,
        # a ViT's attention pooling) is a block itself
        own = layer in modules and any(True for _ in modules[layer].children())
        ancestors = (".".join(parts[:i]) for i in range(len(parts) - (0 if own else 1), 0, -1))
        blocks.add(next((a for a in ancestors if not isinstance(modules[a], _CONTAINERS)), ""))
    return "" if "" in blocks else ".".join(_common_prefix([b.split(".") for b in blocks]))


def _one_block(a: list[str], b: list[str], modules: dict[str, torch.nn.Module]) -> bool:
    """Whether the layers ``a`` and ``b`` of two pieces are in one block (the same, or one a part
    of the other's forward, as an MBConv block's squeeze-excitation) rather than in two blocks of a
    stage (a ResNet's bottlenecks, a ConvNeXt stage's downsampling and its blocks)."""
    block_a, block_b = _block_of(a, modules), _block_of(b, modules)
    if not block_a or not block_b:
        return False
    (outer, outer_layers), (inner, _) = sorted([(block_a, a), (block_b, b)], key=lambda pair: len(pair[0]))
    if inner == outer:
        return True
    if not inner.startswith(outer + "."):
        return False
    parts = inner.split(".")
    between = (".".join(parts[:i]) for i in range(len(outer.split(".")) + 1, len(parts)))
    container = next((m for m in between if isinstance(modules[m], _CONTAINERS)), None)
    # the outer block's layers in that container too: its parts (torchvision's MBConv blocks are a
    # Sequential with the squeeze-excitation in it), not beside it (the blocks of a ConvNeXt stage)
    return container is None or all(layer.startswith(container + ".") for layer in outer_layers)


def _graph_module(model: torch.nn.Module, piece: _Piece, is_last: bool) -> torch.fx.GraphModule:
    """``piece`` as a module of its own that calls the model's modules and reads its tensors."""
    graph, env = torch.fx.Graph(), {}
    if piece.input is not None:
        env[piece.input] = graph.placeholder(piece.input.name)

    def value(node: torch.fx.Node) -> torch.fx.Node:
        if node not in env:  # a parameter or constant, read where it is used
            if node.op != "get_attr":
                raise RuntimeError(f"{node.name} is used across a cut: not a cut of the graph")
            env[node] = graph.get_attr(node.target)
        return env[node]

    for node in piece.nodes:
        if node.op != "get_attr":
            env[node] = graph.node_copy(node, value)
    if not is_last:
        graph.output(env[piece.nodes[-1]])
    # GraphModule(root, ...) refers to root's modules and tensors for call_module/get_attr targets
    return torch.fx.GraphModule(model, graph, class_name=f"{type(model).__name__}Segment")


def _segment_name(layers: list[str], taken: Sequence[list[str]]) -> str:
    """The module that holds all of ``layers`` and whose tensors no other segment uses (a block:
    ``layer2.0``, ``blocks.3.1``), else the first and last layer the segment uses."""
    if not layers:  # a model whose forward uses no parameter (never split: one segment)
        return "forward"
    common = ".".join(_common_prefix([layer.split(".") for layer in layers]))
    if common and not any(o == common or o.startswith(common + ".") for other in taken for o in other):
        return common
    return layers[0] if len(layers) == 1 else f"{layers[0]}..{layers[-1]}"


def _common_prefix(paths: list[list[str]]) -> list[str]:
    prefix = []
    for parts in zip(*paths):
        if len(set(parts)) != 1:
            break
        prefix.append(parts[0])
    return prefix


def split_graph(model: torch.nn.Module, graph: torch.fx.Graph) -> list[Segment]:
    """``model``'s traced ``graph`` as a chain of segments (see the module doc)."""
    pieces = _pieces(model, list(graph.nodes))
    runs = [_graph_module(model, piece, k == len(pieces) - 1) for k, piece in enumerate(pieces)]
    return [
        Segment(_segment_name(p.layers, [q.layers for q in pieces if q is not p]), tuple(p.layers), run)
        for p, run in zip(pieces, runs)
    ]


_warned: set[str] = set()


def _warn_once(model: torch.nn.Module, why: str) -> None:
    architecture = f"{type(model).__module__}.{type(model).__qualname__}"
    if architecture not in _warned:
        _warned.add(architecture)
        log.warning("%s: %s; its reset evaluations run the full forward pass", architecture, why)


def graph_segments(model: torch.nn.Module) -> list[Segment] | None:
    """``model``'s forward as a chain of segments cut in its torch.fx graph, or None (the full
    forward pass, said in the log) where it cannot be traced or has no cut."""
    attributes = set(vars(model))
    try:
        with tracing():  # torch.fx patches every module's calls while it traces: alone in the process
            graph = trace(model)
    except Exception as e:  # tracing runs the model's own Python: anything can fail there
        _warn_once(model, f"torch.fx cannot trace its forward ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")
        return None
    try:
        segments = split_graph(model, graph)
    finally:
        # the tracer stores tensor constants on the model; the segments keep their own references
        for name in set(vars(model)) - attributes:
            delattr(model, name)
    if len(segments) < 2:
        _warn_once(model, "its traced graph has no point where one value carries the rest of the forward pass")
        return None
    return segments
