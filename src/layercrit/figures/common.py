"""What every figure shares: the style, saving to PNG + PDF, category colours, the models' row
order and labels, and how accuracies are written."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from layercrit.io import atomic_path
from layercrit.analysis.statistics import bool_column, cell_text, headline_top1

PNG_DPI = 200

# Fallback colours for categories that bring none (qualitative, colour-blind-friendly order).
_PALETTE = [to_hex(c) for c in mpl.colormaps["tab10"].colors]
_STYLE = {
    "font.size": 8,
    "axes.titlesize": 9,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "pdf.fonttype": 42,  # TrueType in the PDF: text stays editable/searchable
    "hatch.linewidth": 0.6,
}


@contextlib.contextmanager
def figure_style() -> Iterator[None]:
    # rc_context restores the caller's rcParams afterwards; artists read rc at creation/draw time,
    # so both building and saving happen inside it.
    with mpl.rc_context(_STYLE):
        yield


# --------------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------------


def save_figure(fig: Figure, out_base: str | Path) -> list[Path]:
    """Write ``fig`` to ``<out_base>.png`` and ``<out_base>.pdf`` (atomically) and return the paths.

    ``out_base`` has no suffix; the suffix is appended (not ``with_suffix``) so that names
    containing dots, like ``eps0.5``, survive. The figure is closed afterwards. The drawing
    modules call it as ``common.save_figure``, so that replacing it here (as the tests do, to
    look at a drawn figure) replaces it for every figure.
    """
    base = str(out_base)
    paths = [Path(base + ".png"), Path(base + ".pdf")]
    try:
        with figure_style():
            for path in paths:
                fmt = path.suffix[1:]
                with atomic_path(path) as tmp:
                    # The temporary name ends in .tmp, so the format must be given explicitly.
                    fig.savefig(tmp, format=fmt, dpi=PNG_DPI, bbox_inches="tight", pad_inches=0.05)
    finally:
        fig.clear()
    return paths


# --------------------------------------------------------------------------------------------
# Accuracies as text
# --------------------------------------------------------------------------------------------

ACCURACY_TEXT = {"reported": "reported ImageNet top-1", "measured": "measured top-1 on the evaluation set"}
# Reported accuracies keep the two decimals they were published with. Measured ones get one:
# near 75 % the binomial standard error is ≥ 0.4 pp on ≤ 10,000 images (the paper's subset; the
# demo has 1,000), so a second decimal would only show noise.
TOP1_DECIMALS = {"reported": 2, "measured": 1}


def format_top1(value: float, source: str) -> str:
    """A top-1 in percent with the decimals of its source (``TOP1_DECIMALS``); "n/a" if not finite."""
    return f"{value:.{TOP1_DECIMALS[source]}f}" if np.isfinite(value) else "n/a"


def capitalized(text: str) -> str:
    return text[:1].upper() + text[1:]  # str.capitalize would lower "ImageNet"


# --------------------------------------------------------------------------------------------
# Models in row order, with their category's label and colour
# --------------------------------------------------------------------------------------------


def category_table(categories: Sequence[Mapping[str, Any]], models: pd.DataFrame) -> pd.DataFrame:
    """Categories in display order with label and colour; unknown model categories appended."""
    rows = [
        {"id": str(c["id"]), "label": cell_text(c.get("label")) or str(c["id"]), "color": cell_text(c.get("color"))}
        for c in categories
    ]
    known = {r["id"] for r in rows}
    for cat in models["category"].astype(str).drop_duplicates():
        if cat not in known:  # keep such models visible rather than silently dropping them
            rows.append({"id": cat, "label": cat, "color": ""})
            known.add(cat)
    used = {r["color"].lower() for r in rows if r["color"]}
    free = [c for c in _PALETTE if c.lower() not in used] or _PALETTE
    k = 0
    for r in rows:
        if not r["color"]:
            r["color"] = free[k % len(free)]
            k += 1
    table = pd.DataFrame(rows, columns=["id", "label", "color"])
    table["order"] = range(len(table))
    return table


def ordered_models(
    models: pd.DataFrame, categories: Sequence[Mapping[str, Any]], *, figures_only: bool = True
) -> pd.DataFrame:
    """Models in figure row order: by category (category order), then by their order in ``models``.

    Adds columns ``category_label``, ``category_color`` and ``row_label`` ("name [top-1%]", the
    ``headline_top1`` of the rows kept, in its source's format). With ``figures_only``, rows with
    ``in_figures`` False (controls) are dropped.
    """
    m = models.copy()
    m["model"] = m["model"].astype(str)
    m["category"] = m["category"].astype(str)
    if figures_only and "in_figures" in m:
        m = m[bool_column(m["in_figures"])]
    cats = category_table(categories, models).set_index("id")
    m["_pos"] = range(len(m))
    m["_cat_order"] = m["category"].map(cats["order"])
    m = m.sort_values(["_cat_order", "_pos"], kind="stable")
    m["category_label"] = m["category"].map(cats["label"])
    m["category_color"] = m["category"].map(cats["color"])
    names = m["display_name"] if "display_name" in m else m["model"]
    names = [(cell_text(n) or mid) for n, mid in zip(names, m["model"])]
    source, top1 = headline_top1(m)
    m["row_label"] = [f"{n} [{format_top1(t, source)}%]" if np.isfinite(t) else f"{n} [n/a]" for n, t in zip(names, top1)]
    return m.drop(columns=["_pos", "_cat_order"]).reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# Architectures: studies may mix them (a ResNet-50 and a ViT)
# --------------------------------------------------------------------------------------------

UNKNOWN_ARCHITECTURE = "architecture unknown"
# Filled shapes that stay apart at 5–15 pt; the scatter figures give each architecture one.
ARCHITECTURE_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")


def architectures(models: pd.DataFrame) -> pd.Series:
    """Each row's architecture id (``models.architecture``), "" where unknown: tables written
    before the column existed (the committed demo) lack it, and their figures must still draw."""
    if "architecture" not in models:
        return pd.Series("", index=models.index, dtype=object)
    return models["architecture"].map(cell_text)


def architecture_name(architecture: str) -> str:
    """An architecture id as the figures write it (a word for the unknown one)."""
    return architecture or UNKNOWN_ARCHITECTURE


def architecture_markers(values: Sequence[str] | pd.Series) -> dict[str, str]:
    """Marker shape per architecture (first-seen order), or ``{}`` when there is only one.

    A figure of one architecture keeps its plain circles; only where points of different
    architectures share an axes must their shape tell them apart."""
    distinct = list(dict.fromkeys(cell_text(v) for v in values))
    if len(distinct) < 2:
        return {}
    return {a: ARCHITECTURE_MARKERS[k % len(ARCHITECTURE_MARKERS)] for k, a in enumerate(distinct)}


def architecture_handles(markers: dict[str, str], size: float = 6.0) -> list[Line2D]:
    """Legend entries for the marker shapes of ``architecture_markers`` (grey: colour says
    something else in the scatters)."""
    return [
        Line2D([], [], linestyle="", marker=marker, markersize=size, markerfacecolor="#7f7f7f",
               markeredgecolor="white", label=architecture_name(arch))
        for arch, marker in markers.items()
    ]  # fmt: skip
