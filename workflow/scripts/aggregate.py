"""Snakemake adapter: collect every reset result into the tidy tables."""

from layercrit.aggregation import (
    check_against_baselines,
    model_table,
    read_baselines,
    read_reset_results,
    reset_table,
    summarize,
)
from layercrit.io import provenance, write_csv, write_json
from layercrit.joblog import script_log
from layercrit.study import load_study


def main(sm) -> None:
    study = load_study(sm.config)
    results = read_reset_results(sm.input.resets)
    baselines, baseline_files = read_baselines(sm.input.baselines)
    check_against_baselines(results, baselines, baseline_files)
    resets = reset_table(study, results)
    summary = summarize(resets)
    models = model_table(study, summary, baselines)
    write_csv(resets, sm.output.resets)
    write_csv(summary, sm.output.summary)
    write_csv(models, sm.output.models)
    write_json(
        sm.output.provenance,
        provenance(
            config=sm.config,
            result_devices=sorted(resets["device"].unique()),
            result_hosts=sorted(resets["host"].unique()),
            result_precisions=sorted(resets["precision"].unique()),
        ),
    )
    print(f"{len(resets)} reset results, {len(summary)} model × layer rows, {len(models)} models", flush=True)


with script_log(snakemake.log[0]):
    main(snakemake)
