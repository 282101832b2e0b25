"""Which layers a study resets (config ``reset.layers``): types, include and exclude globs,
study-wide or per architecture, each pattern and type checked against the architectures it
applies to, so that a typo stops at parse time instead of silently resetting nothing.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from layercrit.study.errors import ConfigError
from layercrit.study.layers import Layer

if TYPE_CHECKING:  # type hints only: architectures imports layers, not this module
    from layercrit.study.architectures import Architecture


# The layer types reset unless reset.layers.types says otherwise: the paper's.
DEFAULT_LAYER_TYPES = ("Conv2d", "Linear")


def layer_selections(
    layers: dict[str, Any], architectures: Iterable[str], key: str = "reset.layers"
) -> dict[str, tuple[str, dict[str, Any]]]:
    """Each architecture's selection (``reset.layers``, or its own ``reset.layers.architectures.<id>``)
    with the key that gives it (``key`` names the study-wide one: the notebook API's is ``layers``)."""
    own = layers.get("architectures", {})
    study_wide = {k: v for k, v in layers.items() if k != "architectures"}
    return {a: (f"{key}.architectures.{a}", own[a]) if a in own else (key, study_wide) for a in architectures}


def selected_layers(
    layers: dict[str, Any], architectures: dict[str, Architecture], used: list[str], key: str = "reset.layers"
) -> dict[str, tuple[Layer, ...]]:
    """The layers each used architecture resets (``reset.layers``; messages name it ``key``). A
    pattern or type is checked against every architecture of the zoo its selection applies to, used
    by the study or not: one that fits none of them is a typo; one that fits only an architecture
    outside this study's ``models`` is meant for that one. An architecture whose selection keeps no
    layer is an error."""
    unknown = sorted(set(layers.get("architectures", {})) - set(architectures))
    if unknown:
        raise ConfigError(f"{key}.architectures: {unknown} are not architectures of the zoo; allowed: {list(architectures)}")
    selections = layer_selections(layers, architectures, key)
    for selection_key in dict.fromkeys(k for k, _ in selections.values()):
        applies = {a: architectures[a] for a, (k, _) in selections.items() if k == selection_key}
        selection = next(sel for k, sel in selections.values() if k == selection_key)
        check_layer_types(selection, applies, selection_key)
        for field_name in ("include", "exclude"):
            for pattern in selection.get(field_name, []):
                if not any(fnmatch.fnmatchcase(l.name, pattern) for arch in applies.values() for l in arch.layers):
                    raise ConfigError(
                        f"{selection_key}.{field_name}: pattern {pattern!r} matches no layer of {sorted(applies)}, the "
                        f"architectures it applies to (a typo?); e.g. {[l.name for a in sorted(applies) for l in applies[a].layers][:6]}"
                    )
    chosen = {}
    for arch_id in used:
        selection_key, selection = selections[arch_id]
        chosen[arch_id] = select_layers(architectures[arch_id].layers, selection)
        if not chosen[arch_id]:
            raise ConfigError(
                f"{selection_key}: the selection {selection} matches no layer of architecture {arch_id!r}; its layers "
                f"are {[l.name for l in architectures[arch_id].layers]}. A selection for it alone: "
                f"{key}.architectures.{arch_id}: {{include: [...]}}"
            )
    return chosen


def select_layers(layers: tuple[Layer, ...], selection: dict[str, Any]) -> tuple[Layer, ...]:
    """Layers whose type is in ``types``, whose name matches an ``include`` and no ``exclude`` glob."""
    types = set(selection.get("types", DEFAULT_LAYER_TYPES))
    include = selection.get("include", ["*"])
    exclude = selection.get("exclude", [])
    return tuple(
        l
        for l in layers
        if l.type in types
        and any(fnmatch.fnmatchcase(l.name, p) for p in include)
        and not any(fnmatch.fnmatchcase(l.name, p) for p in exclude)
    )


def check_layer_types(selection: dict[str, Any], architectures: dict[str, Architecture], key: str = "reset.layers") -> None:
    """Every layer type a selection (``key``) names must be a module class of one of the
    architectures it applies to (a type in none of them is a typo, or the wrong study)."""
    available = {a.id: sorted({l.type for l in a.layers}) for a in architectures.values()}
    unknown = [t for t in selection.get("types", DEFAULT_LAYER_TYPES) if not any(t in types for types in available.values())]
    if unknown:
        raise ConfigError(
            f"{key}.types: {unknown} is no module class of the architectures it applies to; allowed, per architecture: "
            + "; ".join(f"{a}: {types}" for a, types in available.items())
        )
