"""Blocks of a model (reset mode ``remove``): which ones the identity can stand in for, found by
one forward pass, and removing one for the duration of a ``with`` block.

A block is a module with submodules that is called with a tensor first (the hidden state; other
arguments, such as a transformers decoder layer's attention mask, may follow) and returns a tensor
or a tuple that starts with one (transformers decoder layers return a tensor in 5.x, a tuple in
earlier versions). Removing it makes its call return its input in the place of that tensor:
the forward pass of the model with the block deleted from its Sequential or ModuleList.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from layercrit.study.blocks import Block


def _first_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, tuple) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    return None


def enumerate_blocks(model: torch.nn.Module, example: torch.Tensor | dict[str, torch.Tensor]) -> list[Block]:
    """Every block of ``model`` with the shapes (per sample) of its input and output, in the order
    of ``named_modules``, from one forward pass on ``example`` (a batch: a tensor, or keyword
    arguments such as ``input_ids``). A block called more than once (weights shared across depth)
    is left out: the identity would stand in for every call of it."""
    seen: dict[str, list[tuple[tuple[int, ...], tuple[int, ...]]]] = {}
    handles = []

    def record(name: str):
        def hook(module: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            x = args[0] if args else next(iter(kwargs.values()), None)
            y = _first_tensor(output)
            if isinstance(x, torch.Tensor) and y is not None:
                seen.setdefault(name, []).append((tuple(x.shape[1:]), tuple(y.shape[1:])))
            else:
                seen.setdefault(name, []).append(((), ()))  # not a block: never offered

        return hook

    for name, module in model.named_modules():
        if name and next(module.children(), None) is not None:
            handles.append(module.register_forward_hook(record(name), with_kwargs=True))
    try:
        with torch.no_grad():
            model.eval()(**example) if isinstance(example, dict) else model.eval()(example)
    finally:
        for handle in handles:
            handle.remove()
    blocks = []
    for name, module in model.named_modules():
        calls = seen.get(name, [])
        if len(calls) == 1 and calls[0][0]:
            blocks.append(Block(name, type(module).__name__, calls[0][0], calls[0][1], len(blocks)))
    return blocks


def _identity_hook(module: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
    """The block's output replaced by its input (the rest of a tuple output is kept)."""
    x = args[0] if args else next(iter(kwargs.values()))
    if isinstance(output, torch.Tensor):
        if x.shape != output.shape:
            raise ValueError(f"{type(module).__name__} maps {tuple(x.shape)} to {tuple(output.shape)}: the identity cannot replace it")
        return x
    if x.shape != output[0].shape:
        raise ValueError(f"{type(module).__name__} maps {tuple(x.shape)} to {tuple(output[0].shape)}: the identity cannot replace it")
    return (x, *output[1:])


@contextlib.contextmanager
def remove_block(model: torch.nn.Module, block: str) -> Iterator[torch.nn.Module]:
    """Within the ``with`` block, ``model``'s module ``block`` returns its input (a forward hook
    replaces its output; the block still runs, its result unused); afterwards the hook is gone
    and the model is as before: no parameter or buffer is touched."""
    try:
        module = model.get_submodule(block)
    except AttributeError as e:
        raise KeyError(f"model has no module named {block!r}") from e
    handle = module.register_forward_hook(_identity_hook, with_kwargs=True)
    try:
        yield model
    finally:
        handle.remove()
