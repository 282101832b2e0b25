"""Resetting one layer of a trained model.

Modes (Zhang, Bengio & Singer 2022 name the first and last):
- ``randomize`` ("re-randomization", the paper's method): the layer takes the parameters of a
  freshly initialized model of the same architecture built under ``seed``;
- ``zero``: the layer's parameters become zero;
- ``reinit`` ("re-initialization"): the layer is rewound to the model's own weights at
  initialization, which only models trained here (the demo zoo) know.

Every other layer keeps its trained values. (Mode ``remove`` replaces a whole block by the
identity instead: layercrit.models.blocks.)

What a layer is: a module with parameters of its own (the layer lists' rows). The paper resets
Conv2d and Linear layers; normalization layers (BatchNorm2d, LayerNorm, timm's LayerNorm2d …)
can be reset too (``reset.layers.types``), with these semantics:

- ``randomize`` / ``reinit``: the module takes the *whole* state the source model's module has,
  parameters and buffers. For a freshly initialized norm layer that is weight 1 and bias 0
  (timm's and torchvision's initializers alike), and for BatchNorm also running mean 0, running
  variance 1 and ``num_batches_tracked`` 0: the layer as an untrained model has it. The
  authors' code does the same (it loads the fresh module's state_dict, buffers included). The
  consequence to keep in mind: in eval mode such a BatchNorm no longer normalizes (x / √(1+ε)),
  so its criticality measures the loss of the learned statistics *and* affine transform.
- ``zero``: the parameters become zero, buffers (running statistics) keep their trained values:
  a BatchNorm or LayerNorm then outputs 0 (its bias), silencing the branch like a zeroed
  convolution does. Zeroing the running variance instead would divide by √ε, which is not the
  removal of a layer but an explosion of its output.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping

import torch

from layercrit.study import RESET_MODES, needs_initial_weights


def layer_tensors(model: torch.nn.Module, layer: str) -> dict[str, torch.Tensor]:
    """The parameters and buffers that belong to module ``layer`` itself (not its children)."""
    try:
        module = model.get_submodule(layer)
    except AttributeError as e:
        raise KeyError(f"model has no module named {layer!r}") from e
    tensors = dict(module.named_parameters(recurse=False))
    tensors.update(module.named_buffers(recurse=False))
    if not tensors:
        raise KeyError(f"module {layer!r} ({type(module).__name__}) has no parameters to reset")
    return tensors


def replacement_source(
    mode: str,
    *,
    fresh_state: Callable[[], Mapping[str, torch.Tensor]],
    initial_state: Callable[[], Mapping[str, torch.Tensor]] | None,
) -> Mapping[str, torch.Tensor] | None:
    """The state_dict ``mode`` takes a layer's new values from: a freshly initialized model's
    (randomize), the model's own initial weights (reinit), or none (zero). Only that one is built."""
    _check_mode(mode)
    if needs_initial_weights(mode):
        if initial_state is None:
            raise ValueError(f"reset mode {mode!r} needs the model's initial weights")
        return initial_state()
    return fresh_state() if mode == "randomize" else None


def _check_mode(mode: str) -> None:
    if mode not in RESET_MODES:
        raise ValueError(f"unknown reset mode {mode!r}; allowed: {', '.join(RESET_MODES)}")


def replacement_tensors(
    model: torch.nn.Module, layer: str, mode: str, source: Mapping[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """The values layer ``layer`` takes under ``mode``.

    ``source`` is a state_dict to take the layer from: a freshly initialized model's (randomize)
    or the model's initial weights (reinit). It is ignored for ``zero``.
    """
    current = layer_tensors(model, layer)
    _check_mode(mode)
    if mode == "remove":
        raise ValueError(f"mode remove gives {layer!r} no new values: it replaces a block by the identity (layercrit.models.blocks.remove_block)")
    if mode == "zero":  # parameters only: buffers are statistics of the inputs, not weights (see above)
        parameters = dict(model.get_submodule(layer).named_parameters(recurse=False))
        return {name: torch.zeros_like(t) if name in parameters else t for name, t in current.items()}
    if source is None:
        raise ValueError(f"reset mode {mode!r} needs the state_dict to take layer {layer!r} from")
    new = {}
    for name, t in current.items():
        key = f"{layer}.{name}"
        if key not in source:
            raise KeyError(f"{mode}: source state_dict has no {key!r}")
        if source[key].shape != t.shape:
            raise ValueError(f"{mode}: {key!r} has shape {tuple(source[key].shape)} in the source, {tuple(t.shape)} in the model")
        new[name] = source[key]
    return new


@contextlib.contextmanager
def reset_layer(
    model: torch.nn.Module, layer: str, mode: str, source: Mapping[str, torch.Tensor] | None = None
) -> Iterator[torch.nn.Module]:
    """Within the block, ``model`` has layer ``layer`` reset; afterwards it is restored bitwise.

    Restoring in place (rather than copying the model) lets a long-lived process keep one
    model per checkpoint and evaluate many layers of it.
    """
    current = layer_tensors(model, layer)
    new = replacement_tensors(model, layer, mode, source)
    saved = {name: t.detach().clone() for name, t in current.items()}
    try:
        with torch.no_grad():
            for name, t in current.items():
                t.copy_(new[name])
        yield model
    finally:
        with torch.no_grad():
            for name, t in current.items():
                t.copy_(saved[name])
