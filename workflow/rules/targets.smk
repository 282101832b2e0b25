# What a study produces: the inputs of the targets `all`, `aggregate`, `figures`,
# `replication` and `published`.


def table_targets():
    return expand(
        f"{RESULTS}/tables/{MODE}/{{table}}.csv",
        table=["resets", "summary", "models"],
    )


def figure_targets(study=None, mode=MODE):
    """Every figure of a study (PNG and PDF), Table 1 rendered and as CSV, the correlations."""
    study = study or STUDY
    root = f"results/{study.name}"
    targets = expand(
        f"{root}/figures/{mode}/{{figure}}.{{ext}}",
        figure=[*study.figures, "model_table"],
        ext=["png", "pdf"],
    ) + [f"{root}/tables/{mode}/table1.csv", f"{root}/tables/{mode}/correlations.csv"]
    return targets


# Models of this study that the published results also hold (by id): those can be compared.
SHARED_WITH_PUBLISHED = [m for m in STUDY.models if m in PUBLISHED.models]


def figure_index_target():
    """The index of the study's figures: which it has, why not the others (and figures of an
    earlier run that it no longer makes moved to outdated/: layercrit.figures.index)."""
    return f"{RESULTS}/figures/{MODE}/index.json"


def figures_made():
    """The figures this study draws into figures/<mode>/, by name."""
    return [*STUDY.figures, "model_table"] + (
        ["replication"] if replication_targets() else []
    )


def figures_left_out():
    """Each figure the study does not draw, with the reason."""
    left_out = dict(STUDY.figures_left_out)
    reasons = replication_reasons()
    if reasons:
        left_out["replication"] = "; ".join(reasons)
    return left_out


def replication_reasons():
    """Why this study is not compared with the published results (none: it is)."""
    reasons = []
    if not config["published"]["compare"]:
        reasons.append("published.compare is false")
    if MODE != "randomize":
        reasons.append(f"reset.mode is {MODE!r}; the published results are 'randomize'")
    if not SHARED_WITH_PUBLISHED:
        reasons.append(
            f"no model id of zoo {config['zoo']!r} is in the published zoo {config['published']['zoo']!r}"
        )
    return reasons


def replication_targets(required=False):
    """The comparison with the published results (table, per-layer table, figure), when this
    study re-randomizes models that the published results hold and `published.compare` is on.
    With ``required`` (the `replication` target), say why there is nothing to compare.
    """
    reasons = replication_reasons()
    if reasons:
        if required:
            raise WorkflowError(
                "Nothing to compare with the published results: " + "; ".join(reasons)
            )
        return []
    root = f"{RESULTS}/tables/randomize"
    return [
        f"{root}/replication.csv",
        f"{root}/replication_layers.csv",
        f"{RESULTS}/figures/randomize/replication.png",
        f"{RESULTS}/figures/randomize/replication.pdf",
    ]


def study_named(name):
    """The study a figure or table belongs to: this config's, or the published results'."""
    return PUBLISHED if name == PUBLISHED_NAME else STUDY
