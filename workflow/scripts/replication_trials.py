"""Snakemake adapter: compare this study with the authors' published results trial by trial (seed scheme authors)."""

import pandas as pd

from layercrit.figures import trial_replication_figure
from layercrit.io import write_csv
from layercrit.joblog import script_log
from layercrit.replication import seed_to_seed_spread, trial_points, trials_by_model


def main(sm) -> None:
    published = pd.read_csv(sm.input.published)
    points = trial_points(pd.read_csv(sm.input.own), published)
    if points.empty:
        raise ValueError(
            "no (model, layer, trial) of this study is in the published results: "
            "compare a study of the paper's models (config/zoo/paper.yaml ids) with published.zoo set to its zoo"
        )
    by_model = trials_by_model(points, pd.read_csv(sm.input.models), sm.params.tolerance)
    spread = seed_to_seed_spread(published, points)
    write_csv(points, sm.output.points)
    write_csv(by_model, sm.output.table)
    trial_replication_figure(points, spread, by_model, sm.params.tolerance, sm.output.png.removesuffix(".png"))
    beyond = by_model[by_model["beyond_tolerance"]]
    print(
        f"{len(points)} (model, layer, trial) comparisons of {len(by_model)} models; median |residual| "
        f"{points['residual'].abs().median():.2e}, seed-to-seed median {spread.median():.2f}; "
        f"{len(beyond)} model(s) beyond the tolerance {sm.params.tolerance}: {list(beyond['model'])}",
        flush=True,
    )
    print(by_model.to_string(index=False), flush=True)


with script_log(snakemake.log[0]):
    main(snakemake)
