"""Snakemake adapter: the authors' raw results as this project's tidy tables."""

import pandas as pd

from layercrit.aggregation import model_table, reset_table, summarize
from layercrit.io import provenance, write_csv, write_json
from layercrit.joblog import script_log
from layercrit.published import published_to_tidy
from layercrit.study import build_study, load_zoo


def main(sm) -> None:
    from pathlib import Path

    zoo_path = Path(sm.params.zoo)
    zoo = load_zoo(zoo_path)
    tidy = published_to_tidy(pd.read_csv(sm.input[0]))
    zoo_ids = [m["id"] for m in zoo["models"]]
    unknown = sorted(set(tidy["model"]) - set(zoo_ids))
    if unknown:
        raise ValueError(f"published results name models that are not in the zoo {zoo_path}: {unknown}")
    present = [m for m in zoo_ids if m in set(tidy["model"])]
    seeds = sorted(tidy["seed"].unique().tolist())
    study = build_study({"study": "published", "models": present, "reset": {"mode": "randomize", "seeds": seeds}}, zoo, zoo_path.parent)
    resets = reset_table(study, tidy)
    summary = summarize(resets)
    models = model_table(study, summary, baselines=None)
    write_csv(resets, sm.output.resets)
    write_csv(summary, sm.output.summary)
    write_csv(models, sm.output.models)
    write_json(sm.output.provenance, provenance(source=sm.config["published"], rows=len(resets)))
    print(f"{len(resets)} published rows, {resets['model'].nunique()} models", flush=True)


with script_log(snakemake.log[0]):
    main(snakemake)
