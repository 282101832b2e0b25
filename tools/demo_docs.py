"""The README's demo numbers, made from a run of the demo and checked against it.

    python -m tools.demo_docs run            # `make docs`: run the demo on a clean results/demo, then `render`
    python -m tools.demo_docs render         # copy the demo's tables into docs/demo/, rewrite the README block
    python -m tools.demo_docs check-readme   # the README block is what docs/demo/ says (a test runs this)
    python -m tools.demo_docs check-run      # `make demo-check`: run the demo afresh, compare with docs/demo/
                                             # (tests/test_demo_run.py does the same in `make test`, so in CI)

What is committed is the run's tables (docs/demo/models.csv, summary.csv), a record of where
and with what it ran (docs/demo/run.json: CPU, cores, versions, wall time), and its heatmap
(docs/demo_heatmap.png). The README's demo table and findings are rendered from those files,
never typed; a test keeps the README equal to them, and CI compares a fresh run's tables with
them on whatever CPU it runs (tools/demo_compare.py: the tables within TOLERANCE).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from layercrit.io import machine
from layercrit.analysis.statistics import ARCHITECTURE_SUBSET, accuracy_correlations
from tools.demo_compare import (
    DOCS,
    TOLERANCE,
    baseline_architecture_models,
    compare_tables,
    largest_differences,
    layer_profile,
)

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
HEATMAP = ROOT / "docs" / "demo_heatmap.png"
TABLES = ("models.csv", "summary.csv")
TRAINING_STUDY = ROOT / "docs" / "demo_training.json"  # benchmarks/demo_training.py --out docs/demo_training.json
BLOCKS = {  # README block name -> what renders it
    "demo-numbers": lambda: readme_block(),
    "demo-training": lambda: training_block(),
}



def run_demo(workdir: Path, study: str, env: dict[str, str] | None = None, config: Path = ROOT / "config" / "demo.yaml",
             zoo: Path = ROOT / "config" / "zoo" / "demo.yaml") -> float:
    """Run a demo study (the vision demo's unless ``config`` and ``zoo`` say another) from scratch
    in ``workdir`` (into workdir/results/<study>); return its wall time in seconds."""
    shutil.rmtree(workdir / "results" / study, ignore_errors=True)
    cores = os.cpu_count() or 1
    command = [str(Path(sys.executable).with_name("snakemake")), "-s", str(ROOT / "Snakefile"), "--directory", str(workdir)]
    command += ["--cores", str(cores), "--configfile", str(config)]
    command += ["--config", f"study={study}", f"zoo={zoo}"]
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
        record["eval_images_sha256"] = eval_images_sha256(results / "demo")
    DOCS.mkdir(parents=True, exist_ok=True)
    for name in TABLES:
        shutil.copyfile(tables / name, DOCS / name)
    shutil.copyfile(results / "demo" / "figures" / "randomize" / "criticality_heatmap.png", HEATMAP)
    (DOCS / "run.json").write_text(json.dumps(record, indent=1) + "\n")
    README.write_text(replace_blocks(README.read_text()))
    print(f"wrote {DOCS}/, {HEATMAP.relative_to(ROOT)} and the README's demo block", flush=True)


def eval_images_sha256(study_results: Path) -> str:
    """The evaluation images a run used (numpy generates them; its vector kernels, chosen by the
    CPU, could round a pixel differently on a CPU without AVX2: docs/benchmarks.md)."""
    from layercrit.io import file_sha256

    return file_sha256(study_results / "data" / "eval.safetensors")


def _markers(name: str, tool: str = "tools/demo_docs.py") -> tuple[str, str]:
    return f"<!-- {name}: begin ({tool} render) -->", f"<!-- {name}: end -->"


def replace_blocks(text: str, blocks: dict[str, Callable[[], str]] | None = None, tool: str = "tools/demo_docs.py") -> str:
    """``text`` with every block of ``blocks`` (the demo's BLOCKS unless given, rendered by
    ``tool``) rendered anew between its markers."""
    for name, make in (BLOCKS if blocks is None else blocks).items():
        begin, end = _markers(name, tool)
        pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
        if not pattern.search(text):
            raise SystemExit(f"README.md has no {name} block ({begin} … {end})")
        block = make()
        text = pattern.sub(lambda _: f"{begin}\n{block}\n{end}", text)
    return text


def current_block(text: str, name: str, tool: str = "tools/demo_docs.py") -> str:
    begin, end = _markers(name, tool)
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
    correlations = accuracy_correlations(models).set_index(["accuracy", "subset"]).loc["measured"]
    pooled, per_architecture = correlations.loc["all"], correlations[correlations.index.str.startswith(ARCHITECTURE_SUBSET)]
    text = (
        f"Mean criticality vs measured top-1 over the {pooled.n} models"
        + (f" (pooled over {len(per_architecture)} architectures)" if len(per_architecture) else "")
        + f": Spearman ρ = {pooled.spearman_r:.2f} (p = {pooled.spearman_p:.2g}, {pooled.spearman_p_method})"
    )
    for subset, row in per_architecture.iterrows():
        if row.n >= 3:  # fewer: no correlation to give
            text += f"; over the {row.n} {subset.removeprefix(ARCHITECTURE_SUBSET)} models: ρ = {row.spearman_r:.2f} (p = {row.spearman_p:.2g}, {row.spearman_p_method})"
    out.append(text + ".")
    control = models[~models["in_figures"]]
    for m in control.itertuples(index=False):
        out.append(f"{m.display_name} (not in the figures): top-1 {m.top1:.1f} %, mean criticality {m.mean_criticality:.1f} %.")
    return out


def _training_runs() -> list[dict]:
    """Every trained model with its recipe, seed, top-1 and mean criticality: the training study's
    variants and the demo's own models (from docs/demo/), each marked by where it comes from."""
    import yaml

    from layercrit.models.training import TrainingRecipe

    zoo = yaml.safe_load((ROOT / "config" / "zoo" / "demo.yaml").read_text())
    seeds = {m["id"]: m["source"].get("seed", 0) for m in zoo["models"]}
    runs = [{"seed": seeds[r["model"]], **r, "source": "study"} for r in json.loads(TRAINING_STUDY.read_text())["results"]]
    recipes = {m["id"]: m["source"]["recipe"] for m in zoo["models"]}
    architectures = {m["id"]: m["architecture"] for m in zoo["models"]}
    adversarial = {m["id"] for m in zoo["models"] if m.get("adversarial")}
    for m in pd.read_csv(DOCS / "models.csv").itertuples(index=False):
        recipe = {**TrainingRecipe.from_config(recipes[m.model]).to_dict(), "adversarial_norm": m.model in adversarial}
        runs.append({"variant": m.model, "model": m.model, "recipe": recipe, "seed": seeds[m.model], "top1": m.top1,
                     "mean_criticality": m.mean_criticality, "source": "demo"})  # fmt: skip
    for r in runs:
        r["architecture"] = architectures[r["model"]]
        r["zoo_seed"] = r["seed"] == seeds[r["model"]]
    return runs


def training_block() -> str:
    """The training study (benchmarks/demo_training.py) and the demo's models as tables: accuracy,
    criticality and the baseline recipe's criticality at the same accuracy (linear interpolation
    between the baseline recipe's runs of 5, 10, 20 and 40 epochs under the zoo's seed; only inside
    their accuracy range); then the zoo's recipes under several training seeds, each compared with
    the baseline trained under the same seed (same initialization and data order)."""
    runs = _training_runs()
    base = sorted({(r["top1"], r["mean_criticality"]) for r in runs if r["model"] == "demo_baseline" and r["zoo_seed"]})
    base_top1, base_crit = np.array([b[0] for b in base]), np.array([b[1] for b in base])
    rows = [
        "| run | model | epochs | PGD steps | training seed | clean top-1 | mean criticality | baseline recipe at that top-1 | difference |",
        "|---|---|---|---|---|---|---|---|---|",
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
            f"| {name} | {r['model']} | {recipe['epochs']} | {steps} | {r['seed']} | {r['top1']:.1f} % | "
            f"{r['mean_criticality']:.1f} % | {matched} | {diff} |"
        )
    torch_version = json.loads(TRAINING_STUDY.read_text())["torch"]
    note = (
        f"*Runs named in code font are from `docs/demo_training.json` (`python -m benchmarks.demo_training --out "
        f"docs/demo_training.json`, torch {torch_version}; one run each, the demo's data, initialization and data "
        f"order unless another training seed is named); \"demo:\" rows are the demo run above.*"
    )
    return "\n".join(rows) + "\n\n" + note + "\n\n" + seeds_block(runs)


def seed_table(runs: list[dict]) -> pd.DataFrame:
    """Mean criticality of each model trained with the zoo's full recipe under each training seed
    (rows: models with more than one seed; columns: seeds), from the demo's run and the study."""
    epochs = {r["model"]: r["recipe"]["epochs"] for r in runs if r["source"] == "demo"}
    full = [r for r in runs if r["recipe"]["epochs"] == epochs.get(r["model"]) and (r["source"] == "demo" or not r["zoo_seed"])]
    table = pd.DataFrame(full).pivot_table(index="model", columns="seed", values="mean_criticality", sort=False)
    table = table[sorted(table.columns)]
    return table[table.notna().sum(axis=1) > 1]


def seeds_block(runs: list[dict]) -> str:
    """The zoo's recipes under several training seeds, with each model's difference from the
    baseline trained under the same seed."""
    table = seed_table(runs)
    seeds = list(table.columns)
    rows = [
        "| model | " + " | ".join(f"seed {s}" for s in seeds) + " | spread over seeds | difference from the baseline of the same seed |",
        "|---|" + "---|" * (len(seeds) + 2),
    ]
    for model, values in table.iterrows():
        diff = values - table.loc["demo_baseline"]
        cells = " | ".join("–" if np.isnan(v) else f"{v:.1f} %" for v in values)
        diffs = "–" if model == "demo_baseline" else ", ".join(f"{d:+.1f}" for d in diff.dropna())
        rows.append(f"| {model} | {cells} | {np.nanmax(values) - np.nanmin(values):.1f} | {diffs} |")
    return "\n".join(rows) + (
        "\n\n*Mean criticality of models trained with the zoo's recipes (40 epochs) under other training seeds "
        "(initialization and data order; the zoo's is 1000, the demo's models), from `docs/demo_training.json` and the "
        "demo run.*"
    )


def check_run(workdir: Path, env: dict[str, str] | None = None) -> list[str]:
    """Run the demo afresh in ``workdir`` and compare its tables with docs/demo/ within TOLERANCE
    (on any CPU). Returns the differences beyond it ([] if none)."""
    study = "demo_check"
    wall = run_demo(workdir, study, env)
    here = machine()
    fresh = workdir / "results" / study / "tables" / "randomize"
    committed = json.loads((DOCS / "run.json").read_text()).get("eval_images_sha256")
    same = eval_images_sha256(workdir / "results" / study) == committed
    print(f"demo run: {wall:.0f} s on {here['cpu']} ({here['cpu_capability']}); evaluation images "
          f"{'identical to' if same else 'NOT identical to'} the committed run's; largest differences from docs/demo/:", flush=True)
    for (name, column), diff in largest_differences(fresh, DOCS).items():
        print(f"  {name}:{column}: {diff['largest']:.3g} (bound {TOLERANCE[(name, column)]})", flush=True)
    return compare_tables(fresh, DOCS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["run", "render", "check-readme", "check-run"])
    args = parser.parse_args()
    if args.action == "run":
        render(run_demo(ROOT, "demo"))
    elif args.action == "render":
        render(None)
    elif args.action == "check-readme":
        text = README.read_text()
        stale = [name for name, make in BLOCKS.items() if current_block(text, name) != make()]
        if stale:
            sys.exit(f"README.md's blocks {stale} are not what docs/ says: run `python -m tools.demo_docs render`")
    else:
        problems = check_run(ROOT)
        if problems:
            sys.exit("the demo's tables differ from docs/demo/:\n  " + "\n  ".join(problems))
        print("the demo's tables agree with docs/demo/", flush=True)

if __name__ == "__main__":
    main()
