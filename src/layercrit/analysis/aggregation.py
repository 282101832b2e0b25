"""Tidy tables over models, layers and seeds.

- ``resets``: one row per model × layer × seed, every metric and its provenance;
- ``summary``: one row per model × layer: criticality mean, std and sem over seeds, and a
  confidence interval that combines seeds and images (``statistics.criticality_interval``);
- ``models``: one row per model: metadata, clean accuracy, criticality over layers and the
  interval of its mean (``model_intervals``).
- ``provenance``: where and how the results were made, and how each model trained in the
  study was trained (``training_provenance``).

Means are taken with NaN kept (``skipna=False``): a non-finite evaluation must show up as NaN
in the summary, never be quietly left out of an average.

What enters a table has been read back and checked by ``layercrit.analysis.readback``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from layercrit.analysis.statistics import criticality_interval
from layercrit.io import provenance, write_csv, write_json
from layercrit.study import Layer, Study

RESET_COLUMNS = [
    "model", "layer", "layer_index", "layer_type", "kernel", "seed", "mode",
    "criticality", "criticality_se_images", "cosine", "l1", "l2", "kl", "top1_agreement", "top1", "top5", "recovered_acc",
    "original_top1", "n_images", "n_nonfinite", "n_nonfinite_clean", "n_nonfinite_reset", "precision", "device", "forward_s", "forward_from", "lease_wait_s", "wall_s", "created", "host",
]  # fmt: skip


def reset_table(study: Study, results: pd.DataFrame) -> pd.DataFrame:
    """Reset results with layer index/type/kernel, in the study's model / layer / seed order."""
    return reset_rows(results, {m: study.layers_of(m) for m in study.models})


def reset_rows(results: pd.DataFrame, layers: Mapping[str, Sequence[Layer]]) -> pd.DataFrame:
    """Reset results (one dict per result, as ``evaluation.jobs.reset_result`` makes them) as the
    rows of ``resets.csv``: with each layer's index, type and kernel from ``layers`` (model id ->
    its layers), in model (``layers``' order) / layer / seed order, ``RESET_COLUMNS`` first."""
    df = results
    layer_info = pd.DataFrame(
        [
            {"model": m, "layer": l.name, "layer_index": l.index, "layer_type": l.type, "kernel": l.kernel}
            for m, model_layers in layers.items()
            for l in model_layers
        ]
    )
    df = df.merge(layer_info, on=["model", "layer"], how="left", validate="many_to_one")
    if df["layer_index"].isna().any():
        stray = df.loc[df["layer_index"].isna(), ["model", "layer"]].drop_duplicates().values.tolist()
        raise ValueError(f"results for layers the study does not contain: {stray}")
    order = {m: i for i, m in enumerate(layers)}
    df = df.sort_values(["model", "layer_index", "seed"], key=lambda s: s.map(order) if s.name == "model" else s)
    extra = [c for c in df.columns if c not in RESET_COLUMNS and c != "versions"]
    return df[[c for c in RESET_COLUMNS if c in df.columns] + extra].reset_index(drop=True)


def _mean(values: pd.Series) -> float:
    return float(values.mean(skipna=False))


def _std(values: pd.Series) -> float:
    return float(values.std(ddof=1, skipna=False)) if len(values) > 1 else math.nan


def summarize(resets: pd.DataFrame) -> pd.DataFrame:
    """Per model × layer: criticality mean, std (ddof=1) and sem over seeds, plus other means,
    the mean over seeds of each result's standard error over images (``criticality_se_images``;
    NaN for results that lack it: older ones and the published results) and the combined
    interval (``criticality_se``, ``_df``, ``_ci_low``, ``_ci_high``; ``criticality_interval``)."""
    resets = resets.assign(
        n_nonfinite=resets["n_nonfinite"] if "n_nonfinite" in resets else 0,
        criticality_se_images=resets["criticality_se_images"] if "criticality_se_images" in resets else math.nan,
        n_images=resets["n_images"] if "n_images" in resets else math.nan,
    )
    group = resets.groupby(["model", "layer", "layer_index", "layer_type", "kernel"], sort=False, dropna=False)
    means = {f"{c}_mean": (c, _mean) for c in ("cosine", "top1", "top1_agreement") if c in resets}  # published lacks some
    summary = group.agg(
        n_seeds=("seed", "nunique"),
        criticality_mean=("criticality", _mean),
        criticality_std=("criticality", _std),
        criticality_se_images=("criticality_se_images", _mean),
        n_images=("n_images", "min"),
        **means,
        n_nonfinite=("n_nonfinite", "sum"),
    ).reset_index()
    summary.insert(
        summary.columns.get_loc("criticality_std") + 1,
        "criticality_sem",
        summary["criticality_std"] / summary["n_seeds"].pow(0.5),
    )
    interval = criticality_interval(
        summary["criticality_mean"], summary["criticality_std"], summary["n_seeds"],
        summary["criticality_se_images"], summary["n_images"], seedless=_seedless(group),
    )  # fmt: skip
    at = summary.columns.get_loc("criticality_se_images") + 1
    for offset, (name, values) in enumerate(interval.items()):
        summary.insert(at + offset, f"criticality_{name}", values)
    return summary


def _seedless(group: Any) -> Any:
    """Per group of results (a numpy array), whether its reset draws nothing (mode remove): no chance in seeds."""
    return (group["mode"].first() == "remove").to_numpy() if "mode" in group.obj else False


def model_intervals(resets: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """Per model (index): the uncertainty of its mean criticality over layers, as
    ``statistics.criticality_interval`` gives a layer's (columns ``se``, ``df``, ``ci_low``,
    ``ci_high``).

    - Seeds: each seed's mean over the model's layers, and their spread over seeds. Taken per seed
      so that whatever the layers of one seed share is in it.
    - Images: the mean over layers of each layer's image SE (``criticality_se_images``): the
      layers are measured on the same images, and the mean of their SEs is the SE of their mean
      if their errors are perfectly correlated, an upper bound, so the interval errs wide.

    NaN where a layer's criticality or image SE is missing (the published results carry none).
    """
    per_seed = resets.groupby(["model", "seed"], sort=False)["criticality"].agg(_mean).groupby(level="model", sort=False)
    layers = summary.groupby("model", sort=False)
    inputs = pd.DataFrame(
        {"mean": layers["criticality_mean"].agg(_mean), "seed_std": per_seed.agg(_std), "n_seeds": per_seed.size(),
         "image_se": layers["criticality_se_images"].agg(_mean), "n_images": layers["n_images"].min()}
    )  # fmt: skip
    seedless = (resets.groupby("model", sort=False)["mode"].first() == "remove").reindex(inputs.index).to_numpy() if "mode" in resets else False
    return pd.DataFrame(criticality_interval(**inputs.to_dict("series"), seedless=seedless), index=inputs.index)


def model_table(
    study: Study, summary: pd.DataFrame, baselines: dict[str, dict] | None, intervals: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Per model: metadata from the zoo, clean accuracy, criticality over layers and, from
    ``intervals`` (``model_intervals``), the 95 % interval of its mean criticality
    (``mean_criticality_se``, ``_ci_low``, ``_ci_high``; NaN without).

    ``baselines`` holds measured accuracies; without them (the published results carry none)
    the zoo's reported top-1 stands in and ``top1_source`` says so.
    """
    per_model = summary.groupby("model", sort=False)["criticality_mean"]
    intervals = intervals if intervals is not None else pd.DataFrame(columns=["se", "ci_low", "ci_high"])

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
                "architecture": m.architecture,
                "method": m.method,
                "reported_top1": reported(m),
                "top1": baselines[m.id]["top1"] if baselines else reported(m),
                "top5": baselines[m.id]["top5"] if baselines else math.nan,
                "top1_source": "measured" if baselines else "reported",
                # images whose clean outputs are NaN/inf (then top1/top5 and criticality are NaN)
                "clean_nonfinite": baselines[m.id].get("n_nonfinite", 0) if baselines else 0,
                "epsilon": adv.get("epsilon", math.nan),
                "norm": adv.get("norm"),
                "in_figures": m.in_figures,
                "n_layers": len(crit),
                "mean_criticality": crit.mean(skipna=False) if len(crit) else math.nan,
                "std_criticality": crit.std(ddof=1, skipna=False) if len(crit) > 1 else math.nan,
                **{f"mean_criticality_{k}": intervals[k].get(m.id, math.nan) for k in ("se", "ci_low", "ci_high")},
            }
        )
    return pd.DataFrame(rows)


@dataclasses.dataclass(frozen=True)
class Tables:
    """A study's tidy tables (see the module's docstring)."""

    resets: pd.DataFrame
    summary: pd.DataFrame
    models: pd.DataFrame


def study_tables(study: Study, results: pd.DataFrame, baselines: dict[str, dict] | None) -> Tables:
    """The tables of a study from its reset results (``baselines``: see ``model_table``)."""
    resets = reset_table(study, results)
    summary = summarize(resets)
    return Tables(resets, summary, model_table(study, summary, baselines, model_intervals(resets, summary)))


def write_tables(tables: Tables, out: Any, **provenance_fields: Any) -> None:
    """Write the tables to ``out.resets``, ``out.summary`` and ``out.models`` (CSV) and their
    provenance, ``io.provenance(**provenance_fields)``, to ``out.provenance`` (JSON). ``out`` is
    a Snakemake rule's ``output``, or anything with these four attributes."""
    for name in ("resets", "summary", "models"):
        write_csv(getattr(tables, name), getattr(out, name))
    write_json(out.provenance, provenance(**provenance_fields))


def training_provenance(records: Mapping[str, tuple[str, Mapping[str, Any]]]) -> dict[str, dict[str, Any]]:
    """How each model trained in the study was trained (``records``: readback.read_training_records),
    for the tables' provenance: seed, recipe, training images, final training accuracy, time, host."""
    return {
        model: {
            "seed": record.get("seed"),
            "recipe": record.get("recipe"),
            "n_train": record.get("n_train"),
            "final_train_accuracy": (record.get("train_accuracy") or [None])[-1],
            "total_seconds": record.get("total_seconds"),
            "host": record.get("host"),
            "created": record.get("created"),
        }
        for model, (_, record) in records.items()
    }


def result_origins(resets: pd.DataFrame) -> dict[str, list]:
    """Where the reset results were computed: devices, hosts and precisions, each sorted."""
    return {f"result_{column}s": sorted(resets[column].unique()) for column in ("device", "host", "precision")}


def published_tables(study: Study, tidy: pd.DataFrame, zoo: str | Path) -> Tables:
    """The published study's tables from the authors' results (``published.published_to_tidy``).

    Every model of the results must be one of ``study`` (the published zoo ``zoo``'s, named in
    the message) and the results' trials must be the study's seeds; models of the zoo that the
    results lack are left out of the tables. The results carry no clean accuracy: the zoo's
    reported top-1 stands in (``model_table``).
    """
    found = set(tidy["model"])
    unknown = sorted(found - set(study.models))
    if unknown:
        raise ValueError(f"published results name models that are not in the zoo {zoo}: {unknown}")
    trials = sorted(int(seed) for seed in tidy["seed"].unique())
    if trials != sorted(study.seeds):
        raise ValueError(
            f"published results hold the trials (seeds) {trials}, but the published study has the seeds "
            f"{sorted(study.seeds)} (layercrit.study.PUBLISHED_STUDY): not the authors' results, or not all of them"
        )
    present = dataclasses.replace(study, models={m: model for m, model in study.models.items() if m in found})
    return study_tables(present, tidy, baselines=None)
