# Tidy tables: every reset result, the per model × layer summary, the per-model table.


rule aggregate_tables:
    input:
        resets=reset_results,
        baselines=baseline_summaries,
    output:
        resets=f"{RESULTS}/tables/{{mode}}/resets.csv",
        summary=f"{RESULTS}/tables/{{mode}}/summary.csv",
        models=f"{RESULTS}/tables/{{mode}}/models.csv",
        provenance=f"{RESULTS}/tables/{{mode}}/provenance.json",
    log:
        f"{RESULTS}/logs/tables/{{mode}}.log",
    conda:
        "../../envs/layercrit.yaml"
    script:
        "../scripts/aggregate.py"


rule aggregate:
    input:
        table_targets(),
