"""Whether a run of the demo reproduces the committed one: its tables against docs/demo/ within
TOLERANCE, on any CPU. The oracle of `make demo-check` (tools.demo_docs check-run),
tests/test_demo_run.py and benchmarks.demo_isa; tests/test_environment.py checks the oracle itself.

    python -m tools.demo_compare results/demo_avx2/tables/randomize   # largest differences from docs/demo/
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

DOCS = Path(__file__).resolve().parents[1] / "docs" / "demo"

# Numbers a fresh run must reproduce, by table and key.
KEY = {"models.csv": ["model"], "summary.csv": ["model", "layer"], "layer profile": ["layer"]}
# The demo evaluates checkpoints trained once and shipped (resources/demo_zoo/), so what differs
# between CPUs is the evaluation's floating-point arithmetic (other vector widths and kernels):
# differences of order 1e-5 points, measured under other instruction sets in docs/benchmarks.md
# ("Demo reproducibility"). The bounds are the same on every CPU: a top-1 may move by two of the
# 1,000 images (an image whose two best classes tie to float precision), every (model, layer)
# criticality and each model's mean and spread by 0.1 points, the layer profile (each layer's
# criticality averaged over the figure models of the baseline's architecture) by 0.05; a change
# of the code, the data or the models moves them by far more.
TOLERANCE = {
    ("models.csv", "top1"): 0.2,
    ("models.csv", "top5"): 0.2,
    ("models.csv", "mean_criticality"): 0.1,
    ("models.csv", "std_criticality"): 0.1,
    ("summary.csv", "criticality_mean"): 0.1,
    ("summary.csv", "criticality_std"): 0.1,
    ("layer profile", "criticality_mean"): 0.05,
}


def baseline_architecture_models(models: pd.DataFrame) -> pd.DataFrame:
    """The figure models of the baseline's architecture: a layer profile averages one layer list."""
    shown = models[models["in_figures"]]
    baseline = shown.loc[shown["category"] == "baseline", "architecture"]
    base = baseline.iloc[0] if len(baseline) else shown["architecture"].mode().iloc[0]  # a run that lost its baseline row
    return shown[shown["architecture"] == base]


def layer_profile(models: pd.DataFrame, summary: pd.DataFrame) -> pd.Series:
    """Each layer's criticality averaged over the figure models of the baseline's architecture, in
    layer order: the paper's "which layers matter", and what is stable from run to run (see TOLERANCE)."""
    shown = summary[summary["model"].isin(baseline_architecture_models(models)["model"])]
    return shown.groupby("layer", sort=False)["criticality_mean"].mean()


def comparable_tables(tables: Path) -> dict[str, pd.DataFrame]:
    """A run's models.csv and summary.csv, and its layer profile (mean criticality of each layer
    over the models in the figures), each indexed by its KEY."""
    models = pd.read_csv(tables / "models.csv")
    summary = pd.read_csv(tables / "summary.csv")
    profile = layer_profile(models, summary).reset_index()
    out = {"models.csv": models, "summary.csv": summary, "layer profile": profile}
    return {name: table.set_index(KEY[name]).sort_index() for name, table in out.items()}


def compare_tables(fresh: Path, committed: Path) -> list[str]:
    """Differences between a fresh run's tables and the committed ones beyond TOLERANCE (or in
    their rows); [] when they agree."""
    problems = []
    a_tables, b_tables = comparable_tables(fresh), comparable_tables(committed)
    for name in KEY:
        if not a_tables[name].index.equals(b_tables[name].index):
            problems.append(f"{name}: rows differ ({KEY[name]})")
    for (name, column), diff in largest_differences(fresh, committed).items():
        bound = TOLERANCE[(name, column)]
        if not diff["largest"] <= bound:  # NaN (a number missing on one side only) fails too
            problems.append(f"{name}:{column}: differs by {diff['largest']:.3g} at {diff['where']} (bound {bound})")
    return problems


def largest_differences(fresh: Path, committed: Path) -> dict[tuple[str, str], dict]:
    """For each TOLERANCE number: the largest |fresh − committed| (NaN where one side has a number
    and the other not) and where; tables whose rows differ are compared on the rows they share."""
    a_tables, b_tables = comparable_tables(fresh), comparable_tables(committed)
    out = {}
    for name, column in TOLERANCE:
        a, b = a_tables[name].align(b_tables[name], join="inner", axis=0)
        x, y = a[column].to_numpy(float), b[column].to_numpy(float)
        diff = np.abs(x - y)
        diff[np.isnan(x) & np.isnan(y)] = 0.0
        worst = int(np.argmax(np.where(np.isnan(diff), np.inf, diff))) if len(diff) else 0
        largest = float(diff[worst]) if len(diff) else 0.0
        out[(name, column)] = {"largest": largest, "where": a.index[worst] if len(diff) else None}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tables", type=Path, help="a run's tables folder, e.g. results/demo_avx2/tables/randomize")
    args = parser.parse_args()
    for (name, column), diff in largest_differences(args.tables, DOCS).items():
        print(f"{name}:{column}: largest difference {diff['largest']:.3g} at {diff['where']} (bound {TOLERANCE[(name, column)]})")


if __name__ == "__main__":
    main()
