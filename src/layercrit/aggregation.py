"""Tidy tables over models, layers and seeds.

- ``resets``: one row per model × layer × seed, every metric and its provenance;
- ``summary``: one row per model × layer: criticality mean, std and sem over seeds;
- ``models``: one row per model: metadata, clean accuracy, criticality over layers.

Means are taken with NaN kept (``skipna=False``): a non-finite evaluation must show up as NaN
in the summary, never be quietly left out of an average.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from layercrit.io import read_json
from layercrit.study import Study

RESET_COLUMNS = [
    "model", "layer", "layer_index", "layer_type", "kernel", "seed", "mode",
    "criticality", "cosine", "l1", "l2", "kl", "top1_agreement", "top1", "top5", "recovered_acc",
    "original_top1", "n_images", "n_nonfinite", "precision", "device", "forward_s", "forward_from", "lease_wait_s", "wall_s", "created", "host",
]  # fmt: skip


def read_reset_results(result_files: Iterable[str | Path]) -> pd.DataFrame:
    """One row per reset result file (the JSON written by ``evaluate_reset``)."""
    return pd.DataFrame([read_json(p) for p in result_files])


def reset_table(study: Study, results: pd.DataFrame) -> pd.DataFrame:
    """Reset results with layer index/type/kernel, in the study's model / layer / seed order."""
    df = results
    layer_info = pd.DataFrame(
        [
            {"model": m, "layer": l.name, "layer_index": l.index, "layer_type": l.type, "kernel": l.kernel}
            for m in study.models
            for l in study.layers_of(m)
        ]
    )
    df = df.merge(layer_info, on=["model", "layer"], how="left", validate="many_to_one")
    if df["layer_index"].isna().any():
        stray = df.loc[df["layer_index"].isna(), ["model", "layer"]].drop_duplicates().values.tolist()
        raise ValueError(f"results for layers the study does not contain: {stray}")
    order = {m: i for i, m in enumerate(study.models)}
    df = df.sort_values(["model", "layer_index", "seed"], key=lambda s: s.map(order) if s.name == "model" else s)
    extra = [c for c in df.columns if c not in RESET_COLUMNS and c != "versions"]
    return df[[c for c in RESET_COLUMNS if c in df.columns] + extra].reset_index(drop=True)


def _mean(values: pd.Series) -> float:
    return float(values.mean(skipna=False))


def _std(values: pd.Series) -> float:
    return float(values.std(ddof=1, skipna=False)) if len(values) > 1 else math.nan


def summarize(resets: pd.DataFrame) -> pd.DataFrame:
    """Per model × layer: criticality mean, std (ddof=1) and sem over seeds, plus other means."""
    resets = resets.assign(n_nonfinite=resets["n_nonfinite"] if "n_nonfinite" in resets else 0)
    group = resets.groupby(["model", "layer", "layer_index", "layer_type", "kernel"], sort=False, dropna=False)
    means = {f"{c}_mean": (c, _mean) for c in ("cosine", "top1", "top1_agreement") if c in resets}  # published lacks some
    summary = group.agg(
        n_seeds=("seed", "nunique"),
        criticality_mean=("criticality", _mean),
        criticality_std=("criticality", _std),
        **means,
        n_nonfinite=("n_nonfinite", "sum"),
    ).reset_index()
    summary.insert(
        summary.columns.get_loc("criticality_std") + 1,
        "criticality_sem",
        summary["criticality_std"] / summary["n_seeds"].pow(0.5),
    )
    return summary


def read_baselines(baseline_files: Iterable[str | Path]) -> dict[str, dict]:
    """Baseline summaries (clean top-1/top-5 per model), keyed by model id."""
    return {b["model"]: b for b in map(read_json, baseline_files)}


def model_table(study: Study, summary: pd.DataFrame, baselines: dict[str, dict] | None) -> pd.DataFrame:
    """Per model: metadata from the zoo, clean accuracy, criticality over layers.

    ``baselines`` holds measured accuracies; without them (the published results carry none)
    the zoo's reported top-1 stands in and ``top1_source`` says so.
    """
    per_model = summary.groupby("model", sort=False)["criticality_mean"]

    def reported(m):
        return m.reported_top1 if m.reported_top1 is not None else math.nan

    rows = []
    for m in study.models.values():
        adv = m.adversarial or {}
        crit = per_model.get_group(m.id) if m.id in per_model.groups else pd.Series(dtype=float)
        rows.append(
            {
                "model": m.id,
                "display_name": m.display_name,
                "category": m.category,
                "method": m.method,
                "reported_top1": reported(m),
                "top1": baselines[m.id]["top1"] if baselines else reported(m),
                "top5": baselines[m.id]["top5"] if baselines else math.nan,
                "top1_source": "measured" if baselines else "reported",
                "epsilon": adv.get("epsilon", math.nan),
                "norm": adv.get("norm"),
                "in_figures": m.in_figures,
                "n_layers": len(crit),
                "mean_criticality": crit.mean(skipna=False) if len(crit) else math.nan,
                "std_criticality": crit.std(ddof=1, skipna=False) if len(crit) > 1 else math.nan,
            }
        )
    return pd.DataFrame(rows)
