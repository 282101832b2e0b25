"""Snakemake adapter: collect every reset result, checked against its baseline and the files on disk, into the tidy tables."""

from layercrit.aggregation import result_origins, study_tables, training_provenance, write_tables
from layercrit.joblog import script_log
from layercrit.readback import (
    check_against_baselines,
    check_baseline_files,
    check_one_image_set,
    check_seed_scheme,
    check_trained_checkpoints,
    read_baselines,
    read_reset_results,
    read_training_records,
)
from layercrit.study import load_study


def main(sm) -> None:
    study = load_study(sm.config)
    baselines, baseline_files = read_baselines(sm.input.baselines)
    check_baseline_files(baselines, baseline_files, sm.params.baseline_inputs)
    check_one_image_set(files["eval_data"] for files in sm.params.baseline_inputs.values())
    results = read_reset_results(sm.input.resets)
    check_against_baselines(results, baselines, baseline_files)
    check_seed_scheme(results, study.seed_scheme)
    trained = read_training_records(sm.input.training)
    check_trained_checkpoints(trained, {m: files["checkpoint"] for m, files in sm.params.baseline_inputs.items()})
    tables = study_tables(study, results, baselines)
    write_tables(
        tables, sm.output, config=sm.config, trained_here=training_provenance(trained), **result_origins(tables.resets)
    )
    print(
        f"{len(tables.resets)} reset results, {len(tables.summary)} model × layer rows, {len(tables.models)} models",
        flush=True,
    )


with script_log(snakemake.log[0]):
    main(snakemake)
