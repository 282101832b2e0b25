"""How each library an architecture can come from builds an untrained model of it (the user's
own code, ``python``: ``layercrit.models.own_code``).

One entry per library of ``layercrit.study.ARCHITECTURE_LIBRARIES``: ``create`` builds the model
(its own initializer draws the weights; the caller decides the RNG state), ``unknown`` says why
the library cannot build the entry's name (None when it can), with close names where it has
them. Everything else (seeding, eval mode, the layer list, checkpoints) is the same for every
library and lives in ``layercrit.models.zoo``.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass

import torch

from layercrit.models.own_code import python_create, python_prepare, python_unknown
from layercrit.study import Architecture


@dataclass(frozen=True)
class Library:
    create: Callable[[Architecture], torch.nn.Module]
    unknown: Callable[[Architecture], str | None]
    # what must happen before the seeded build (outside its RNG state), e.g. importing user code
    prepare: Callable[[Architecture], None] = lambda arch: None
    # A published state dict in the keys of the model's modules, where the library publishes
    # weights in a layout of its own (transformers' save_pretrained); None: as published.
    to_model_layout: Callable[[Architecture, dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None


def _close_names(library: str, name: str, known: list[str], lister: str) -> str | None:
    if name in known:
        return None
    close = difflib.get_close_matches(name, known, n=8, cutoff=0.6)
    return f"{library} has no architecture {name!r}; " + (f"close names: {close}" if close else f"{lister} lists them")


def _timm_create(arch: Architecture) -> torch.nn.Module:
    import timm

    return timm.create_model(arch.name, pretrained=False, **arch.kwargs)


def _timm_unknown(arch: Architecture) -> str | None:
    import timm

    return _close_names("timm", arch.name, timm.list_models(), "timm.list_models()")


def _torchvision_create(arch: Architecture) -> torch.nn.Module:
    import torchvision

    return torchvision.models.get_model(arch.name, weights=None, **arch.kwargs)


def _torchvision_unknown(arch: Architecture) -> str | None:
    import torchvision

    return _close_names("torchvision", arch.name, torchvision.models.list_models(), "torchvision.models.list_models()")


def _transformers_create(arch: Architecture) -> torch.nn.Module:
    from layercrit.models.transformers_models import create

    return create(arch)


def _transformers_unknown(arch: Architecture) -> str | None:
    from layercrit.models.transformers_models import not_buildable

    return not_buildable(arch)


def _transformers_layout(arch: Architecture, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    from layercrit.models.transformers_models import to_model_layout

    return to_model_layout(arch, state_dict)


LIBRARIES: dict[str, Library] = {
    "timm": Library(_timm_create, _timm_unknown),
    "torchvision": Library(_torchvision_create, _torchvision_unknown),
    "python": Library(python_create, python_unknown, python_prepare),
    "transformers": Library(_transformers_create, _transformers_unknown, to_model_layout=_transformers_layout),
}


def library_of(arch: Architecture) -> Library:
    try:
        return LIBRARIES[arch.library]
    except KeyError:
        raise ValueError(f"architecture {arch.id!r}: no library {arch.library!r}; known: {sorted(LIBRARIES)}") from None


def create_model(arch: Architecture) -> torch.nn.Module:
    """An untrained model of ``arch`` (train mode, as its library returns it); ``prepare_model``
    first, outside the caller's RNG state."""
    return library_of(arch).create(arch)


def prepare_model(arch: Architecture) -> None:
    """What its library does once before ``arch`` is built (a python factory: import its code)."""
    library_of(arch).prepare(arch)


def unknown_architecture_message(arch: Architecture) -> str | None:
    """None if ``arch``'s library can build it, else what is wrong and what is close."""
    return library_of(arch).unknown(arch)
