# Tidy tables: every reset result, the per model × layer summary, the per-model table.


include: "functions/aggregate.smk"


# The tables check every baseline against the files it evaluated (sha256, accuracy from its
# logits), so those files are inputs too: a file replaced with an old modification time, which
# Snakemake cannot see, stops the tables instead of mixing models.
BASELINE_FILES = {model: baseline_files(model) for model in MODEL_IDS}


rule aggregate_tables:
    input:
        resets=reset_results,
        baselines=baseline_summaries,
        baseline_files=sorted(
            {p for files in BASELINE_FILES.values() for p in files.values()}
        ),
        training=training_records,
        # no file: where --rerun-triggers leaves out params, say which settings changed unseen
        unseen_settings=warn_of_unseen_setting_changes,
    output:
        resets=f"{RESULTS}/tables/{{mode}}/resets.csv",
        summary=f"{RESULTS}/tables/{{mode}}/summary.csv",
        models=f"{RESULTS}/tables/{{mode}}/models.csv",
        provenance=f"{RESULTS}/tables/{{mode}}/provenance.json",
    log:
        f"{RESULTS}/logs/tables/{{mode}}.log",
    conda:
        "../../envs/layercrit.yaml"
    params:
        baseline_inputs=BASELINE_FILES,
        # the models' labels (display name, category, …) are in the tables: a change re-makes them
        zoo_entries={m: model_record(model) for m, model in STUDY.models.items()},
    script:
        "../scripts/aggregate.py"


rule aggregate:
    input:
        table_targets(),
