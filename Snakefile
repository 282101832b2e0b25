# Layer criticality: reset one layer of a trained vision model at a time and measure how much
# its outputs change (Gavrikov et al., 2024). Default study: the offline demo (config/demo.yaml);
# the paper's study: --configfile config/config.yaml.


include: "workflow/rules/common.smk"
include: "workflow/rules/targets.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/evaluation.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/published.smk"
include: "workflow/rules/replication.smk"


rule all:
    default_target: True
    input:
        figure_targets(),
        replication_targets(),
        figure_index_target(),
        table_targets(),
        # Listed so that a deleted result is made again (Snakemake leaves missing intermediate
        # files alone while the tables built from them are up to date).
        reset_results(MODE),
