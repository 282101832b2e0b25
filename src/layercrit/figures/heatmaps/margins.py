"""The margins of a heatmap panel: per-row and per-column mean ± std over the finite cells, the
texts that state them, and the scales of the margin axes. Numbers only, no drawing."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from layercrit.figures.heatmaps.panels import HeatmapPanel

def _nice_ceil(x: float) -> float:
    """Smallest of 1, 2, 2.5, 5 × 10^k that is ≥ x (axis limits that read well)."""
    if not np.isfinite(x) or x <= 0:
        return 1.0
    base = 10 ** math.floor(math.log10(x))
    for step in (1, 2, 2.5, 5, 10):
        if step * base >= x * (1 - 1e-9):
            return step * base
    return 10 * base


def _abs_max(*arrays: np.ndarray) -> float:
    """Largest finite |value| over the arrays; 0 when there is none (all-NaN margins)."""
    vals = np.abs(np.concatenate([np.ravel(a) for a in arrays]))
    vals = vals[np.isfinite(vals)]
    return float(vals.max()) if vals.size else 0.0


def margin_extent(mean: np.ndarray, std: np.ndarray, bound: tuple[float, float], fixed: bool) -> tuple[float, float]:
    """Axis range of a margin panel. ``fixed``: the values' ``bound`` itself (criticality is
    0–100 by construction, so bars read against the same scale in every study); otherwise the
    data's |mean ± std| rounded up (1/2/2.5/5 × 10^k) and capped at the bound, so that small
    values (differences, seed spreads) stay visible. Symmetric around 0 for a signed bound."""
    lo, hi = bound
    if not fixed:
        hi = min(max(abs(lo), hi), _nice_ceil(_abs_max(mean + std, mean - std)))
        lo = -hi if lo < 0 else 0.0
    return float(lo), float(hi)


def clipped_whiskers(mean: np.ndarray, std: np.ndarray, extent: tuple[float, float]) -> np.ndarray:
    """Asymmetric error-bar lengths (2 × n) for mean ± std that end at the panel's edges: a
    quantity bounded at 100 cannot spread past it, and a whisker cut by the axes frame would hide
    its cap. The printed "mean ± std" keeps the unclipped std."""
    lo, hi = extent
    below = np.minimum(std, np.maximum(mean - lo, 0.0))
    above = np.minimum(std, np.maximum(hi - mean, 0.0))
    return np.vstack([below, above])


def _nan_stats(values: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and sample std (ddof=1, as pandas) over the finite values, and how many there are;
    NaN where nothing is finite. The figures show the count wherever values were left out."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices / single values
        mean = np.nanmean(values, axis=axis)
        finite = np.isfinite(values).sum(axis=axis)
        std = np.where(finite > 1, np.nanstd(values, axis=axis, ddof=1), np.where(finite == 1, 0.0, np.nan))
    return mean, std, finite


@dataclass(frozen=True)
class PanelStats:
    """A panel's values (±inf as NaN: it would saturate silently) and its margins: mean, sample
    std and count of the finite cells per row and column, and which of them lack some cells."""

    values: np.ndarray
    row_mean: np.ndarray
    row_std: np.ndarray
    row_n: np.ndarray
    col_mean: np.ndarray
    col_std: np.ndarray
    col_n: np.ndarray
    row_partial: np.ndarray
    col_partial: np.ndarray
    col_labels: list[str]
    row_texts: list[str]  # what the row margin prints beside each bar


def panel_stats(panel: HeatmapPanel) -> PanelStats:
    """Margins average the finite cells only; where a row or column lacks some, its label says how
    many it has and its bar is hatched, so that no margin silently stands for fewer cells."""
    values = panel.matrix.to_numpy(dtype=float)
    values = np.where(np.isfinite(values), values, np.nan)
    n_rows, n_cols = values.shape
    row_mean, row_std, row_n = _nan_stats(values, axis=1)
    col_mean, col_std, col_n = _nan_stats(values, axis=0)
    anything = bool(np.isfinite(values).any())
    row_partial = (row_n < n_cols) & anything
    col_partial = (col_n < n_rows) & anything
    labels = panel.layers["label"].tolist()
    col_labels = [f"{label} (n={k})" if part else label for label, k, part in zip(labels, col_n, col_partial)]
    row_texts = [
        "n/a" if not np.isfinite(mu) else f"{mu:.1f} ± {sd:.1f}" + (f" (n={k})" if part else "")
        for mu, sd, k, part in zip(row_mean, row_std, row_n, row_partial)
    ]
    return PanelStats(
        values, row_mean, row_std, row_n, col_mean, col_std, col_n, row_partial, col_partial, col_labels, row_texts
    )
