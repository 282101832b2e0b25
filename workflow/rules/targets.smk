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
        figure=[*study.figures, *study.language_figures, MODEL_TABLE],
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
    """The figures this study draws into figures/<mode>/, by name (of layercrit.study.STUDY_FIGURE_FILES)."""
    return [*STUDY.figures, *STUDY.language_figures, MODEL_TABLE] + [
        name for name in REPLICATION_FIGURES if replication_targets(name)
    ]


def figures_left_out():
    """Each figure the study does not draw, with the reason."""
    left_out = dict(STUDY.figures_left_out)
    reasons = replication_reasons()
    means, trials = REPLICATION_FIGURES
    if reasons:
        left_out[means] = left_out[trials] = "; ".join(reasons)
    elif STUDY.seed_scheme != "authors":
        left_out[trials] = (
            f"reset.seed_scheme is {STUDY.seed_scheme!r}: its seeds are not the authors' trials"
        )
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


def replication_targets(name=None, required=False):
    """The comparison with the published results (table, per-layer table, figure), when this
    study re-randomizes models that the published results hold and `published.compare` is on;
    with reset.seed_scheme authors also trial by trial (`replication_trials`). ``name`` picks one
    of the two. With ``required`` (the `replication` target), say why there is nothing to compare.
    """
    reasons = replication_reasons()
    if reasons:
        if required:
            raise WorkflowError(
                "Nothing to compare with the published results: " + "; ".join(reasons)
            )
        return []
    means, trials = REPLICATION_FIGURES
    names = [means] + ([trials] if STUDY.seed_scheme == "authors" else [])
    return [
        path
        for figure in names
        if name in (None, figure)
        for path in (
            f"{RESULTS}/tables/randomize/{figure}.csv",
            f"{RESULTS}/tables/randomize/{figure}_layers.csv",
            f"{RESULTS}/figures/randomize/{figure}.png",
            f"{RESULTS}/figures/randomize/{figure}.pdf",
        )
    ]


def study_named(name):
    """The study a figure or table belongs to: this config's, or the published results'."""
    return PUBLISHED if name == PUBLISHED_NAME else STUDY
