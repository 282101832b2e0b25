"""The offline language-model demo: its architecture, its shipped zoo, its README numbers and figures.

    python -m tools.lm_demo architecture   # write resources/lm_demo/tiny_llama/ (config + tokenizer) and its layer list
    python -m tools.lm_demo train          # retrain the zoo (config/lm_demo_training.yaml), then `ship`
    python -m tools.lm_demo ship           # float16 checkpoints to resources/lm_demo_zoo/, their sha256 into the zoo
    python -m tools.lm_demo check          # the shipped files are what the zoo records, trained from its recipes (a test runs this)
    python -m tools.lm_demo run            # run the LM demo on a clean results/lm_demo (timed), then `render`
    python -m tools.lm_demo render         # copy its tables and figures into docs/lm_demo/, rewrite the README block
    python -m tools.lm_demo check-readme   # the README block is what docs/lm_demo/ says (a test runs this)

The architecture is a tiny Llama (transformers' LlamaForCausalLM) over the word-level vocabulary of
``layercrit.synthetic_text``; its models are trained by the workflow's ``train_language_model``
rule on generated text and shipped like the vision demo's zoo (tools.demo_zoo.ShippedZoo:
float16, sha256 in the zoo, the training history beside each checkpoint).

What is committed is the run's tables (docs/lm_demo/models.csv, summary.csv, and resets.csv with
each reset job's numbers), a record of where and with what it ran (docs/lm_demo/run.json: CPU,
cores, versions, wall time, tokens per second of the reset jobs) and its four language-model
figures. The README's LM demo block is rendered from those files, never typed; tests/test_lm_demo.py
keeps it equal to them and holds a fresh run of seed 0 to the committed jobs' numbers (TOLERANCE),
on whatever CPU it runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from layercrit.io import machine
from tools import demo_docs
from tools.demo_zoo import ShippedZoo

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config" / "lm_demo.yaml"
TRAINING_CONFIG = ROOT / "config" / "lm_demo_training.yaml"
ZOO = ROOT / "config" / "zoo" / "lm_demo.yaml"
ARCHITECTURE = ROOT / "resources" / "lm_demo" / "tiny_llama"
SHIPPED = ROOT / "resources" / "lm_demo_zoo"
# The tiny Llama: 4 decoder layers of width 64 (4 heads), an MLP of 128, its own output head (not
# tied to the embedding, so that the two are separate layers), windows of up to 64 tokens.
LLAMA = {
    "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4,
    "num_key_value_heads": 4, "max_position_embeddings": 64, "tie_word_embeddings": False,
}  # fmt: skip
DOCS = ROOT / "docs" / "lm_demo"
FIGURES = ("block_sublayer_heatmap", "block_profile", "criticality_vs_perplexity", "block_difference_heatmap")
# Per reset job, what tests/test_lm_demo.py compares a fresh run with (docs/lm_demo/resets.csv).
RESET_COLUMNS = ["model", "layer", "seed", "criticality", "kl", "top1_agreement", "top1", "perplexity", "clean_top1", "clean_perplexity"]
# How far a fresh run's reset job may be from the committed one's, on any CPU: the checkpoints are
# the shipped ones, so only the evaluation's floating-point arithmetic differs (as for the vision
# demo, tools/demo_compare.py); criticality and accuracies in points, perplexities relative.
TOLERANCE = {"criticality": 0.1, "top1_agreement": 0.002, "top1": 0.2, "clean_top1": 0.2, "kl": 1e-3,
             "perplexity": 1e-3, "clean_perplexity": 1e-4}  # fmt: skip
BLOCK = "lm-demo-numbers"
TOOL = "tools/lm_demo.py"


def write_architecture() -> None:
    """The architecture directory (config.json, the tokenizer) and its layer and block lists."""
    import subprocess

    from transformers import LlamaConfig

    from layercrit.synthetic_text import EOS_TOKEN, SPECIAL_TOKENS, vocabulary, write_tokenizer

    ARCHITECTURE.mkdir(parents=True, exist_ok=True)
    write_tokenizer(ARCHITECTURE)
    eos = SPECIAL_TOKENS.index(EOS_TOKEN)
    config = LlamaConfig(vocab_size=len(SPECIAL_TOKENS) + len(vocabulary()), bos_token_id=eos, eos_token_id=eos, **LLAMA)
    config.architectures = ["LlamaForCausalLM"]
    config.save_pretrained(str(ARCHITECTURE))
    subprocess.run([sys.executable, "-m", "layercrit.zoo", "layers", str(ZOO)], check=True, cwd=ROOT)


def shipped_zoo() -> ShippedZoo:
    return ShippedZoo(ZOO, (CONFIG, TRAINING_CONFIG), SHIPPED, ROOT / "results" / "lm_demo_training")


def heldout_effect(study: Any, model_id: str, checkpoint: Any, float16: dict) -> dict[str, float]:
    """Held-out loss of the float32 weights (from the training history) beside nothing else: the
    rounding's effect on the demo's numbers is the README run itself, made from the float16 files."""
    history = json.loads((shipped_zoo().results / "models" / f"{model_id}.training.json").read_text())
    return {"heldout_loss_float32": history["heldout_loss"]}


def steps_summary(history: dict[str, Any]) -> dict[str, Any]:
    return {key: history[key] for key in ("steps", "heldout_loss_before", "heldout_loss", "wall_s", "tokens_per_s")}


def run_demo(workdir: Path, study: str) -> float:
    """Run the LM demo from scratch in ``workdir`` (into workdir/results/<study>); its wall time in s."""
    return demo_docs.run_demo(workdir, study, config=CONFIG, zoo=ZOO)


def render(results: Path, wall_s: float | None) -> None:
    """Copy a finished LM demo run's tables and figures into docs/lm_demo/, record the run, and
    rewrite the README block."""
    tables = results / "tables" / "randomize"
    figures = results / "figures" / "randomize"
    provenance = json.loads((tables / "provenance.json").read_text())
    resets = pd.read_csv(tables / "resets.csv")
    old = DOCS / "run.json"
    if wall_s is None and old.exists() and json.loads(old.read_text()).get("created") == provenance["created"]:
        wall_s = json.loads(old.read_text()).get("wall_s")  # re-rendering the committed run keeps its record
    record = {
        **machine(),
        "versions": provenance["versions"],
        "created": provenance["created"],
        "reset_jobs": int(len(resets)),
        **({"wall_s": round(wall_s, 1)} if wall_s is not None else {}),
        **reset_job_speed(results),
    }
    DOCS.mkdir(parents=True, exist_ok=True)
    with_clean_perplexity(tables).to_csv(DOCS / "models.csv", index=False)
    resets[RESET_COLUMNS].to_csv(DOCS / "resets.csv", index=False)  # each job's numbers: what a fresh run is held to
    shutil.copyfile(tables / "summary.csv", DOCS / "summary.csv")
    for name in FIGURES:
        shutil.copyfile(figures / f"{name}.png", DOCS / f"{name}.png")
    (DOCS / "run.json").write_text(json.dumps(record, indent=1) + "\n")
    readme = demo_docs.README
    readme.write_text(demo_docs.replace_blocks(readme.read_text(), {BLOCK: readme_block}, TOOL))
    print(f"wrote {DOCS.relative_to(ROOT)}/ and the README's {BLOCK} block", flush=True)


def reset_job_speed(results: Path) -> dict[str, float]:
    """Median wall time and tokens per second (both passes, clean and reset) of the run's reset jobs."""
    jobs = [json.loads(p.read_text()) for p in (results / "resets").rglob("seed*.json")]
    return {
        "reset_job_wall_s_median": round(float(np.median([j["wall_s"] for j in jobs])), 4),
        "tokens_per_s_median": round(float(np.median([j["tokens_per_s"] for j in jobs]))),
    }


def readme_block() -> str:
    """The README's LM demo table and findings, from the committed docs/lm_demo/ alone."""
    models = pd.read_csv(DOCS / "models.csv")
    summary = pd.read_csv(DOCS / "summary.csv")
    run = json.loads((DOCS / "run.json").read_text())
    zoo = yaml.safe_load(ZOO.read_text())
    perplexity = dict(zip(models["model"], models["clean_perplexity"]))  # written by render
    rows = [
        "| model | method | clean perplexity | next-token top-1 | mean criticality ± std over layers | most critical layers |",
        "|---|---|---|---|---|---|",
    ]
    for m in models.itertuples(index=False):
        top = most_critical(summary, m.model, 3)
        rows.append(
            f"| {m.display_name} | {m.method} | {perplexity[m.model]:.2f} | {m.top1:.1f} % | "
            f"{m.mean_criticality:.1f} ± {m.std_criticality:.1f} % | {top} |"
        )
    minutes, seconds = divmod(round(run.get("wall_s", 0)), 60)
    versions = run["versions"]
    source = (
        f"*From the run in `docs/lm_demo/` (`python -m tools.lm_demo run`): {run['cpu']} ({run['cpu_capability']}), "
        f"{run['cores']} cores, {minutes} min {seconds:02d} s for the whole study ({run['reset_jobs']} reset jobs; "
        f"median {run['reset_job_wall_s_median']:.3f} s and {run['tokens_per_s_median']:,} tokens/s per reset job, "
        f"clean and reset pass counted); torch {versions.get('torch')}, transformers {versions.get('transformers')}, "
        f"Python {versions.get('python')}. Next-token top-1 and perplexity of the clean model on the held-out text; "
        "criticality = 100 × (1 − mean cosine of the next-token distributions), mean over the reset seeds, then "
        f"over the model's {int(models['n_layers'].max())} layers.*"
    )
    findings = [comparison_finding(summary, models, pair) for pair in zoo.get("comparisons", [])]
    return "\n".join(rows) + "\n\n" + source + "\n\n" + "\n".join(f"- {f}" for f in findings)


def most_critical(summary: pd.DataFrame, model: str, n: int) -> str:
    rows = summary[summary["model"] == model].nlargest(n, "criticality_mean")
    return ", ".join(f"`{r.layer}` {r.criticality_mean:.1f} %" for r in rows.itertuples(index=False))


def comparison_finding(summary: pd.DataFrame, models: pd.DataFrame, pair: dict[str, str]) -> str:
    """One of the zoo's comparisons in words: mean criticality of both, and the layers whose
    criticality changed most (over seeds' means), with the sign."""
    by_model = models.set_index("model")
    model, reference = pair["model"], pair["reference"]
    a = summary[summary["model"] == model].set_index("layer")["criticality_mean"]
    b = summary[summary["model"] == reference].set_index("layer")["criticality_mean"]
    diff = (a - b).dropna()
    raised, lowered = diff.nlargest(3)[lambda d: d > 0], diff.nsmallest(3)[lambda d: d < 0]
    up = ", ".join(f"`{layer}` {d:+.1f}" for layer, d in raised.items()) or "none"
    down = ", ".join(f"`{layer}` {d:+.1f}" for layer, d in lowered.items()) or "none"
    named = summary[summary["model"].isin([model, reference]) & summary["layer"].isin([*raised.index, *lowered.index])]
    spread = f"; over the 3 reset seeds these layers' criticality varies by at most {named['criticality_std'].max():.1f} (std)" if len(named) else ""
    return (
        f"{by_model.loc[model, 'display_name']} against {by_model.loc[reference, 'display_name']}: mean criticality "
        f"{by_model.loc[model, 'mean_criticality']:.1f} % vs {by_model.loc[reference, 'mean_criticality']:.1f} %; "
        f"most raised: {up}; most lowered: {down} (points{spread})."
    )


def reset_differences(fresh: pd.DataFrame, committed: pd.DataFrame) -> list[str]:
    """Where a fresh run's reset jobs (resets.csv) differ from the committed ones beyond
    TOLERANCE, on the jobs the fresh run made ([] if none; a job the committed run lacks is one)."""
    key = ["model", "layer", "seed"]
    joined = fresh.merge(committed, on=key, how="left", suffixes=("", "_committed"), indicator=True)
    problems = [f"{tuple(r)}: not in the committed run" for r in joined.loc[joined["_merge"] != "both", key].itertuples(index=False)]
    for column, bound in TOLERANCE.items():
        a, b = joined[column].to_numpy(float), joined[f"{column}_committed"].to_numpy(float)
        diff = np.abs(a - b) / (np.abs(b) if column.endswith("perplexity") else 1.0)
        for row in np.flatnonzero(~(diff <= bound)):
            problems.append(f"{tuple(joined.loc[row, key])}: {column} {a[row]:.6g}, committed {b[row]:.6g} (bound {bound})")
    return problems


def with_clean_perplexity(tables: Path) -> pd.DataFrame:
    """models.csv of a run with each model's clean perplexity (the median over its reset jobs, as
    the criticality-vs-perplexity figure takes it) as a column, for the docs."""
    models = pd.read_csv(tables / "models.csv")
    resets = pd.read_csv(tables / "resets.csv")
    clean = resets.groupby("model")["clean_perplexity"].median()
    return models.assign(clean_perplexity=models["model"].map(clean))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["architecture", "train", "ship", "check", "run", "render", "check-readme"])
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    results = ROOT / "results" / "lm_demo"
    zoo = shipped_zoo()
    if args.action == "architecture":
        write_architecture()
    elif args.action in ("train", "ship", "check"):
        if args.action == "train":
            zoo.train(args.cores)
        if args.action in ("train", "ship"):
            zoo.ship(heldout_effect, steps_summary)
        problems = zoo.check()
        if problems:
            sys.exit(f"the shipped LM demo zoo does not match {ZOO.relative_to(ROOT)}:\n  " + "\n  ".join(problems))
        print(f"the shipped LM demo zoo matches {ZOO.relative_to(ROOT)}", flush=True)
    elif args.action == "run":
        render(results, run_demo(ROOT, "lm_demo"))
    elif args.action == "render":
        render(results, None)
    elif demo_docs.current_block(demo_docs.README.read_text(), BLOCK, TOOL) != readme_block():
        sys.exit(f"README.md's {BLOCK} block is not what docs/lm_demo/ says: run `python -m tools.lm_demo render`")


if __name__ == "__main__":
    main()
