# The paper's figures from the tidy tables.


rule correlation_table:
    input:
        models=f"{RESULTS}/tables/{{mode}}/models.csv",
    output:
        f"{RESULTS}/tables/{{mode}}/correlations.csv",
    log:
        f"{RESULTS}/logs/tables/{{mode}}.correlations.log",
    conda:
        "../../envs/layercrit.yaml"
    script:
        "../scripts/correlations.py"


rule plot_figure:
    input:
        summary=f"{RESULTS}/tables/{{mode}}/summary.csv",
        models=f"{RESULTS}/tables/{{mode}}/models.csv",
    output:
        png=report(
            f"{RESULTS}/figures/{{mode}}/{{figure}}.png",
            caption="../report/figure.rst",
            category="Figures",
        ),
        pdf=f"{RESULTS}/figures/{{mode}}/{{figure}}.pdf",
    log:
        f"{RESULTS}/logs/figures/{{mode}}/{{figure}}.log",
    wildcard_constraints:
        figure="|".join(figure_names()),
    conda:
        "../../envs/layercrit.yaml"
    params:
        categories=STUDY.categories,
        baseline=STUDY.baseline,
    script:
        "../scripts/plot_figure.py"


rule figures:
    input:
        figure_targets(),
