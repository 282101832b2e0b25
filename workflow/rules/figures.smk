# The paper's figures from the tidy tables, for this study and for the published results.


rule correlation_table:
    input:
        models="results/{study}/tables/{mode}/models.csv",
    output:
        "results/{study}/tables/{mode}/correlations.csv",
    log:
        "results/{study}/logs/tables/{mode}.correlations.log",
    conda:
        "../../envs/layercrit.yaml"
    script:
        "../scripts/correlations.py"


rule plot_figure:
    input:
        summary="results/{study}/tables/{mode}/summary.csv",
        models="results/{study}/tables/{mode}/models.csv",
    output:
        png=report(
            "results/{study}/figures/{mode}/{figure}.png",
            caption="../report/figure.rst",
            category="Figures",
            subcategory="{study}",
        ),
        pdf="results/{study}/figures/{mode}/{figure}.pdf",
    log:
        "results/{study}/logs/figures/{mode}/{figure}.log",
    wildcard_constraints:
        figure="|".join(FIGURE_NAMES),
    conda:
        "../../envs/layercrit.yaml"
    params:
        categories=lambda wc: study_named(wc.study).categories,
        baseline=lambda wc: study_named(wc.study).baseline,
        min_difference=config["figures"]["min_difference"],
    script:
        "../scripts/plot_figure.py"


# A text study's own figures (layercrit.figures.language): they read the per-seed table too.
rule plot_language_figure:
    input:
        resets="results/{study}/tables/{mode}/resets.csv",
        summary="results/{study}/tables/{mode}/summary.csv",
        models="results/{study}/tables/{mode}/models.csv",
    output:
        png=report(
            "results/{study}/figures/{mode}/{figure}.png",
            caption="../report/language_figure.rst",
            category="Figures",
            subcategory="{study}",
        ),
        pdf="results/{study}/figures/{mode}/{figure}.pdf",
    log:
        "results/{study}/logs/figures/{mode}/{figure}.log",
    wildcard_constraints:
        figure="|".join(LANGUAGE_FIGURE_NAMES),
    conda:
        "../../envs/layercrit.yaml"
    params:
        categories=lambda wc: study_named(wc.study).categories,
        tokenizers=lambda wc: study_named(wc.study).tokenizers(),
        comparisons=lambda wc: [
            list(pair) for pair in study_named(wc.study).comparisons
        ],
    script:
        "../scripts/plot_language_figure.py"


rule model_table:
    input:
        models="results/{study}/tables/{mode}/models.csv",
    output:
        csv="results/{study}/tables/{mode}/table1.csv",
        png=report(
            "results/{study}/figures/{mode}/model_table.png",
            caption="../report/model_table.rst",
            category="Tables",
            subcategory="{study}",
        ),
        pdf="results/{study}/figures/{mode}/model_table.pdf",
    log:
        "results/{study}/logs/figures/{mode}/model_table.log",
    conda:
        "../../envs/layercrit.yaml"
    params:
        categories=lambda wc: study_named(wc.study).categories,
    script:
        "../scripts/model_table.py"


rule figure_index:
    input:
        figure_targets(),
        replication_targets(),
    output:
        index=figure_index_target(),
    log:
        f"{RESULTS}/logs/figures/{MODE}/index.log",
    conda:
        "../../envs/layercrit.yaml"
    params:
        made=figures_made(),
        left_out=figures_left_out(),
    script:
        "../scripts/figure_index.py"


rule figures:
    input:
        figure_targets(),
        replication_targets(),
        figure_index_target(),
