# This study against the authors' published results, where both hold the same models.


rule compare_with_published:
    input:
        own=f"{RESULTS}/tables/randomize/summary.csv",
        models=f"{RESULTS}/tables/randomize/models.csv",
        published=f"results/{PUBLISHED_NAME}/tables/randomize/summary.csv",
    output:
        table=f"{RESULTS}/tables/randomize/replication.csv",
        layers=f"{RESULTS}/tables/randomize/replication_layers.csv",
        png=report(
            f"{RESULTS}/figures/randomize/replication.png",
            caption="../report/replication.rst",
            category="Replication",
        ),
        pdf=f"{RESULTS}/figures/randomize/replication.pdf",
    log:
        f"{RESULTS}/logs/figures/randomize/replication.log",
    conda:
        "../../envs/layercrit.yaml"
    params:
        categories=STUDY.categories,
    script:
        "../scripts/replication.py"


# With reset.seed_scheme authors a seed is the authors' trial: compare trial by trial.
rule compare_trials_with_published:
    input:
        own=f"{RESULTS}/tables/randomize/resets.csv",
        models=f"{RESULTS}/tables/randomize/models.csv",
        published=f"results/{PUBLISHED_NAME}/tables/randomize/resets.csv",
    output:
        table=f"{RESULTS}/tables/randomize/replication_trials.csv",
        points=f"{RESULTS}/tables/randomize/replication_trials_layers.csv",
        png=report(
            f"{RESULTS}/figures/randomize/replication_trials.png",
            caption="../report/replication_trials.rst",
            category="Replication",
        ),
        pdf=f"{RESULTS}/figures/randomize/replication_trials.pdf",
    log:
        f"{RESULTS}/logs/figures/randomize/replication_trials.log",
    conda:
        "../../envs/layercrit.yaml"
    params:
        tolerance=config["published"]["trial_tolerance"],
    script:
        "../scripts/replication_trials.py"


rule replication:
    input:
        # a function: only asking for this target is an error when there is nothing to compare
        lambda wildcards: replication_targets(required=True),
