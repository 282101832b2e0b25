# The authors' released raw results as a study of their own: every paper figure without a GPU.


rule published_results:
    output:
        "resources/published/results.csv",
    log:
        "results/published/logs/download.log",
    conda:
        "../../envs/layercrit.yaml"
    params:
        source=config["published"],
        cache="resources/downloads",
    script:
        "../scripts/fetch_published.py"


rule published_tables:
    input:
        "resources/published/results.csv",
    output:
        resets="results/published/tables/randomize/resets.csv",
        summary="results/published/tables/randomize/summary.csv",
        models="results/published/tables/randomize/models.csv",
        provenance="results/published/tables/randomize/provenance.json",
    log:
        "results/published/logs/tables.log",
    conda:
        "../../envs/layercrit.yaml"
    params:
        zoo=config["published"]["zoo"],
    script:
        "../scripts/published_tables.py"


rule published:
    input:
        figure_targets(PUBLISHED, "randomize"),
