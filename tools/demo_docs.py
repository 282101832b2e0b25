"""The README's demo numbers, made from a run of the demo and checked against it.

    python tools/demo_docs.py run            # `make docs`: run the demo on a clean results/demo, then `render`
    python tools/demo_docs.py render         # copy the demo's tables into docs/demo/, rewrite the README block
    python tools/demo_docs.py check-readme   # the README block is what docs/demo/ says (a test runs this)
    python tools/demo_docs.py check-run      # `make demo-check`: run the demo afresh, compare with docs/demo/
                                             # (tests/test_demo_run.py does the same in `make test`, so in CI)
    python tools/demo_docs.py compare DIR    # largest differences of a run's tables DIR from docs/demo/

What is committed is the run's tables (docs/demo/models.csv, summary.csv), a record of where
and with what it ran (docs/demo/run.json: CPU, cores, versions, wall time), and its heatmap
(docs/demo_heatmap.png). The README's demo table and findings are rendered from those files,
never typed; a test keeps the README equal to them, and CI compares a fresh run's tables with
them (see `compare_tables` for what must be equal, and why not always bit for bit).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from layercrit.statistics import accuracy_correlations

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "demo"
README = ROOT / "README.md"
HEATMAP = ROOT / "docs" / "demo_heatmap.png"
TABLES = ("models.csv", "summary.csv")
TRAINING_STUDY = ROOT / "docs" / "demo_training.json"  # benchmarks/demo_training.py --out docs/demo_training.json
BLOCKS = {  # README block name -> what renders it
    "demo-numbers": lambda: readme_block(),
    "demo-training": lambda: training_block(),
}

# Numbers a fresh run must reproduce: everything computed, nothing that records time or place.
KEY = {"models.csv": ["model"], "summary.csv": ["model", "layer"], "layer profile": ["layer"]}
# On another CPU than the committed run's, floating-point sums differ in their last bits (other
# SIMD widths and kernels in oneDNN/MKL), and ten epochs of SGD carry such differences into every
# weight: the trained models differ. Measured (docs/benchmarks.md, "Demo reproducibility": this
# CPU's AVX2 kernels against its AVX-512 ones): one model's top-1 moved by 17.3 points, a model's
# mean criticality by 5.0, one layer of one model by 47.8 — but the layer profile (each layer's
# criticality averaged over the models in the figures, the paper's "which layers matter") by at
# most 3.2. So on another CPU a run is compared where it is stable, within twice what was
# measured; single (model, layer) cells are not compared there. On the committed run's CPU every
# number of models.csv and summary.csv must be equal bit for bit.
TOLERANCE = {
    ("models.csv", "top1"): 35.0,
    ("models.csv", "top5"): 2.5,
    ("models.csv", "mean_criticality"): 10.0,
    ("models.csv", "std_criticality"): 10.0,
    ("layer profile", "criticality_mean"): 6.5,
}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, str | int]:
    """What decides the demo's floating-point results besides the code: CPU and torch's kernels."""
    import torch

    return {
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cores": os.cpu_count() or 1,
        "os": f"{platform.system()} {platform.release()}",
    }


def run_demo(workdir: Path, study: str, env: dict[str, str] | None = None) -> float:
    """Run the demo study from scratch in ``workdir`` (into workdir/results/<study>); return its
    wall time in seconds."""
    shutil.rmtree(workdir / "results" / study, ignore_errors=True)
    cores = os.cpu_count() or 1
    command = [str(Path(sys.executable).with_name("snakemake")), "-s", str(ROOT / "Snakefile"), "--directory", str(workdir)]
    command += ["--cores", str(cores), "--configfile", str(ROOT / "config" / "demo.yaml")]
    command += ["--config", f"study={study}", f"zoo={ROOT / 'config' / 'zoo' / 'demo.yaml'}"]
    print("+", " ".join(command), flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env)
    return time.perf_counter() - start


def render(wall_s: float | None) -> None:
    """Copy a finished demo run's tables and heatmap into docs/, then rewrite the README blocks.

    The run is taken to have been made on this machine (``run`` makes it so); re-rendering the
    run docs/demo/ already holds keeps its record (machine, wall time) as it was."""
    results = ROOT / "results"
    tables = results / "demo" / "tables" / "randomize"
    provenance = json.loads((tables / "provenance.json").read_text())
    old = DOCS / "run.json"
    if wall_s is None and old.exists() and json.loads(old.read_text()).get("created") == provenance["created"]:
        record = json.loads(old.read_text())
    else:
        record = {**machine(), "versions": provenance["versions"], "created": provenance["created"]}
        if wall_s is not None:
            record["wall_s"] = round(wall_s, 1)
    DOCS.mkdir(parents=True, exist_ok=True)
    for name in TABLES:
        shutil.copyfile(tables / name, DOCS / name)
    shutil.copyfile(results / "demo" / "figures" / "randomize" / "criticality_heatmap.png", HEATMAP)
    (DOCS / "run.json").write_text(json.dumps(record, indent=1) + "\n")
    README.write_text(replace_blocks(README.read_text()))
    print(f"wrote {DOCS}/, {HEATMAP.relative_to(ROOT)} and the README's demo block", flush=True)


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}: begin (tools/demo_docs.py render) -->", f"<!-- {name}: end -->"


def replace_blocks(text: str) -> str:
    """``text`` with every block of BLOCKS rendered anew between its markers."""
    for name, make in BLOCKS.items():
        begin, end = _markers(name)
        pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
        if not pattern.search(text):
            raise SystemExit(f"README.md has no {name} block ({begin} … {end})")
        block = make()
        text = pattern.sub(lambda _: f"{begin}\n{block}\n{end}", text)
    return text


def current_block(text: str, name: str) -> str:
    begin, end = _markers(name)
    match = re.search(re.escape(begin) + r"\n(.*?)\n" + re.escape(end), text, re.S)
    if not match:
        raise SystemExit(f"README.md has no {name} block ({begin} … {end})")
    return match.group(1)


def _pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.1f} %"


def readme_block() -> str:
    """The README's demo table and findings, from the committed tables alone."""
    models = pd.read_csv(DOCS / "models.csv")
    summary = pd.read_csv(DOCS / "summary.csv")
    run = json.loads((DOCS / "run.json").read_text())
    rows = [
        "| model | category | method | clean top-1 | mean criticality ± std over layers |",
        "|---|---|---|---|---|",
    ]
    for m in models.itertuples(index=False):
        rows.append(
            f"| {m.display_name} | {m.category} | {m.method} | {_pct(m.top1)} | "
            f"{m.mean_criticality:.1f} ± {m.std_criticality:.1f} % |"
        )
    findings = demo_findings(models, summary)
    versions = run["versions"]
    wall = ""
    if run.get("wall_s"):
        minutes, seconds = divmod(round(run["wall_s"]), 60)
        wall = f", {minutes} min {seconds:02d} s for the whole study"
    source = (
        f"*From the run in `docs/demo/` (`make docs`): {run['cpu']} ({run['cpu_capability']}), {run['cores']} cores{wall}; "
        f"torch {versions.get('torch')}, timm {versions.get('timm')}, Python {versions.get('python')}. "
        f"Clean top-1 on the 1,000 evaluation images; criticality = 100 × (1 − mean cosine of softmax outputs), "
        f"mean over 3 reset seeds, then over the model's layers ({layer_counts(models)}).*"
    )
    return "\n".join(rows) + "\n\n" + source + "\n\n" + "\n".join(f"- {f}" for f in findings)


def layer_counts(models: pd.DataFrame) -> str:
    """How many layers each architecture's models have, e.g. "17 for demo_resnet, 18 for demo_vit"."""
    counts = models.groupby("architecture", sort=False)["n_layers"].max()
    return ", ".join(f"{n} for {arch}" for arch, n in counts.items())


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


def demo_findings(models: pd.DataFrame, summary: pd.DataFrame) -> list[str]:
    """The paper's findings, each checked on the demo's tables, in words with the numbers."""
    shown = models[models["in_figures"]]
    same = baseline_architecture_models(models)
    per_layer = layer_profile(models, summary).sort_values(ascending=False)
    top = ", ".join(f"`{layer}` {value:.1f} %" for layer, value in per_layer.head(4).items())
    out = [f"Most critical layers on average over the {len(same)} {same['architecture'].iloc[0]} models in the figures: {top}."]
    downsampling = [layer for layer in per_layer.index if ".downsample." in layer]
    if downsampling:
        ranks = {layer: list(per_layer.index).index(layer) + 1 for layer in downsampling}
        listed = ", ".join(f"`{layer}` {per_layer[layer]:.1f} % (rank {ranks[layer]})" for layer in downsampling)
        out.append(
            f"Downsampling layers, of {len(per_layer)}: {listed}; mean over all layers {per_layer.mean():.1f} %."
        )

    base = shown[shown["category"] == "baseline"].iloc[0]
    for norm, label in (("linf", "L∞"), ("l2", "L2")):
        adv = shown[(shown["norm"] == norm)].sort_values("epsilon")
        if len(adv):
            series = ", ".join(
                f"ε={e:g}: {c:.1f} % (top-1 {a:.1f} %)"
                for e, c, a in zip(adv["epsilon"], adv["mean_criticality"], adv["top1"])
            )
            out.append(
                f"Adversarial training, {label}: mean criticality {series}; baseline {base.mean_criticality:.1f} % "
                f"(top-1 {base.top1:.1f} %)."
            )
    improved = shown[shown["category"] == "improved"]
    for m in improved.itertuples(index=False):
        out.append(
            f"{m.display_name}: mean criticality {m.mean_criticality:.1f} % vs the baseline's "
            f"{base.mean_criticality:.1f} % (top-1 {m.top1:.1f} % vs {base.top1:.1f} %)."
        )
    for m in shown[~shown["model"].isin(same["model"])].itertuples(index=False):
        own = summary[summary["model"] == m.model].sort_values("criticality_mean", ascending=False)
        top = ", ".join(f"`{r.layer}` {r.criticality_mean:.1f} %" for r in own.head(3).itertuples(index=False))
        out.append(
            f"{m.display_name} ({m.architecture}, {m.n_layers} layers): top-1 {m.top1:.1f} %, mean criticality "
            f"{m.mean_criticality:.1f} %; its most critical layers: {top}."
        )
    correlation = accuracy_correlations(models).set_index(["accuracy", "subset"]).loc[("measured", "all")]
    out.append(
        f"Mean criticality vs measured top-1 over the {correlation.n} models: "
        f"Spearman ρ = {correlation.spearman_r:.2f} (p = {correlation.spearman_p:.2g})."
    )
    control = models[~models["in_figures"]]
    for m in control.itertuples(index=False):
        out.append(f"{m.display_name} (not in the figures): top-1 {m.top1:.1f} %, mean criticality {m.mean_criticality:.1f} %.")
    return out


def _training_runs() -> list[dict]:
    """Every trained model with its recipe, top-1 and mean criticality: the training-length study's
    variants and the demo's own models (from docs/demo/), each marked by where it comes from."""
    import yaml

    from layercrit.training import TrainingRecipe

    runs = [{**r, "source": "study"} for r in json.loads(TRAINING_STUDY.read_text())["results"]]
    zoo = yaml.safe_load((ROOT / "config" / "zoo" / "demo.yaml").read_text())
    recipes = {m["id"]: m["source"]["recipe"] for m in zoo["models"]}
    architectures = {m["id"]: m["architecture"] for m in zoo["models"]}
    adversarial = {m["id"] for m in zoo["models"] if m.get("adversarial")}
    for m in pd.read_csv(DOCS / "models.csv").itertuples(index=False):
        recipe = {**TrainingRecipe.from_config(recipes[m.model]).to_dict(), "adversarial_norm": m.model in adversarial}
        runs.append({"variant": m.model, "model": m.model, "recipe": recipe, "top1": m.top1,
                     "mean_criticality": m.mean_criticality, "source": "demo"})  # fmt: skip
    for r in runs:
        r["architecture"] = architectures[r["model"]]
    return runs


def training_block() -> str:
    """The training-length study (benchmarks/demo_training.py) and the demo's models as a table:
    accuracy, criticality and the baseline recipe's criticality at the same accuracy (linear
    interpolation between the baseline recipe's runs of 5, 10 and 20 epochs; only inside their
    accuracy range)."""
    runs = _training_runs()
    base = sorted({(r["top1"], r["mean_criticality"]) for r in runs if r["model"] == "demo_baseline"})
    base_top1, base_crit = np.array([b[0] for b in base]), np.array([b[1] for b in base])
    rows = [
        "| run | model | epochs | PGD steps | clean top-1 | mean criticality | baseline recipe at that top-1 | difference |",
        "|---|---|---|---|---|---|---|---|",
    ]
    # another architecture is another scale: matched only within the baseline's
    base_arch = next(r["architecture"] for r in runs if r["model"] == "demo_baseline")
    for r in runs:
        recipe = r["recipe"]
        steps = recipe["adversarial_steps"] if recipe.get("adversarial_norm") else "–"
        matched = diff = "–"
        if r["architecture"] == base_arch and r["model"] != "demo_baseline" and base_top1.min() <= r["top1"] <= base_top1.max():
            at = float(np.interp(r["top1"], base_top1, base_crit))
            matched, diff = f"{at:.1f} %", f"{r['mean_criticality'] - at:+.1f}"
        name = f"`{r['variant']}`" if r["source"] == "study" else f"demo: {r['variant']}"
        rows.append(
            f"| {name} | {r['model']} | {recipe['epochs']} | {steps} | {r['top1']:.1f} % | "
            f"{r['mean_criticality']:.1f} % | {matched} | {diff} |"
        )
    torch_version = json.loads(TRAINING_STUDY.read_text())["torch"]
    note = (
        f"*Runs named in code font are from `docs/demo_training.json` (`python benchmarks/demo_training.py --out "
        f"docs/demo_training.json`, torch {torch_version}; one run each, same initialization and data order as "
        f"the demo); \"demo:\" rows are the demo run above.*"
    )
    return "\n".join(rows) + "\n\n" + note


def comparable_tables(tables: Path) -> dict[str, pd.DataFrame]:
    """A run's models.csv and summary.csv, and its layer profile (mean criticality of each layer
    over the models in the figures), each indexed by its KEY."""
    models = pd.read_csv(tables / "models.csv")
    summary = pd.read_csv(tables / "summary.csv")
    profile = layer_profile(models, summary).reset_index()
    out = {"models.csv": models, "summary.csv": summary, "layer profile": profile}
    return {name: table.set_index(KEY[name]).sort_index() for name, table in out.items()}


def compare_tables(fresh: Path, committed: Path, exact: bool) -> list[str]:
    """Differences between a fresh run's tables and the committed ones; [] when they agree.

    ``exact``: every number of models.csv and summary.csv equal bit for bit (same CPU and kernels
    as the committed run). Otherwise the same rows, and the numbers of TOLERANCE within bounds.
    """
    problems = []
    a_tables, b_tables = comparable_tables(fresh), comparable_tables(committed)
    for name in KEY:
        a, b = a_tables[name], b_tables[name]
        if not a.index.equals(b.index):
            problems.append(f"{name}: rows differ ({KEY[name]})")
            continue
        if exact:  # the committed tables themselves; the layer profile is derived from them
            columns = [c for c in b.columns if pd.api.types.is_numeric_dtype(b[c])] if name in TABLES else []
        else:
            columns = [c for (table, c) in TOLERANCE if table == name]
        for column in columns:
            x, y = a[column].to_numpy(float), b[column].to_numpy(float)
            if exact:
                same = (x == y) | (np.isnan(x) & np.isnan(y))
                if not same.all():
                    worst = int(np.nanargmax(np.abs(x - y)))
                    problems.append(f"{name}:{column}: {int((~same).sum())} values differ, e.g. {a.index[worst]}: {float(x[worst])!r} vs {float(y[worst])!r}")
                continue
            bound = TOLERANCE[(name, column)]
            diff = np.abs(x - y)
            if (np.isnan(x) != np.isnan(y)).any() or np.nanmax(diff) > bound:
                worst = int(np.nanargmax(diff))
                problems.append(f"{name}:{column}: differs by {diff[worst]:.3g} at {a.index[worst]} (bound {bound})")
    return problems


def largest_differences(fresh: Path, committed: Path) -> dict[tuple[str, str], float]:
    """The largest |fresh − committed| of each TOLERANCE number, and of summary.csv's single cells
    (how TOLERANCE was measured: a run with other kernels against the committed run)."""
    a_tables, b_tables = comparable_tables(fresh), comparable_tables(committed)
    out = {}
    for name, column in [*TOLERANCE, ("summary.csv", "criticality_mean")]:
        x, y = a_tables[name][column].to_numpy(float), b_tables[name][column].to_numpy(float)
        out[(name, column)] = float(np.nanmax(np.abs(x - y)))
    return out


def check_run(workdir: Path, env: dict[str, str] | None = None) -> list[str]:
    """Run the demo afresh in ``workdir`` and compare its tables with docs/demo/: bit for bit on
    the committed run's CPU, else within TOLERANCE. Returns the differences ([] if none)."""
    study = "demo_check"
    wall = run_demo(workdir, study, env)
    committed = json.loads((DOCS / "run.json").read_text())
    here = machine()
    exact = (here["cpu"], here["cpu_capability"]) == (committed["cpu"], committed["cpu_capability"])
    how = "bit for bit (same CPU as the committed run)" if exact else f"within TOLERANCE (committed run: {committed['cpu']})"
    print(f"demo run: {wall:.0f} s on {here['cpu']} ({here['cpu_capability']}); tables compared {how}", flush=True)
    return compare_tables(workdir / "results" / study / "tables" / "randomize", DOCS, exact)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["run", "render", "check-readme", "check-run", "compare"])
    parser.add_argument("tables", nargs="?", type=Path, help="compare: a run's tables folder (against docs/demo/)")
    args = parser.parse_args()
    if args.action == "compare":
        if args.tables is None:
            parser.error("compare needs the tables folder of a run, e.g. results/demo_avx2/tables/randomize")
        for (name, column), value in largest_differences(args.tables, DOCS).items():
            bound = TOLERANCE.get((name, column), "not compared across CPUs")
            print(f"{name}:{column}: largest difference {value:.3g} (bound {bound})")
    elif args.action == "run":
        render(run_demo(ROOT, "demo"))
    elif args.action == "render":
        render(None)
    elif args.action == "check-readme":
        text = README.read_text()
        stale = [name for name, make in BLOCKS.items() if current_block(text, name) != make()]
        if stale:
            sys.exit(f"README.md's blocks {stale} are not what docs/ says: run `python tools/demo_docs.py render`")
    else:
        problems = check_run(ROOT)
        if problems:
            sys.exit("the demo's tables differ from docs/demo/:\n  " + "\n  ".join(problems))
        print("the demo's tables agree with docs/demo/", flush=True)

if __name__ == "__main__":
    main()
