"""Snakemake adapter: compare this study's criticality with the authors' published results."""

import pandas as pd

from layercrit.figures import replication_figure
from layercrit.io import write_csv
from layercrit.joblog import script_log
from layercrit.replication import agreement, replication_by_model, replication_points


def main(sm) -> None:
    own = pd.read_csv(sm.input.own)
    own["kernel"] = own["kernel"].fillna("")  # linear layers have no kernel
    published = pd.read_csv(sm.input.published)
    points = replication_points(own, published)
    uncompared = sorted(set(own["model"]) - set(points["model"]))
    if uncompared:  # said in the log: the table lists compared models only
        print(f"not in the published results, not compared: {uncompared}", flush=True)
    if points.empty:
        raise ValueError(
            "no model × layer pair of this study is in the published results: "
            "compare a study of the paper's models (config/zoo/paper.yaml ids) with published.zoo set to its zoo"
        )
    by_model = replication_by_model(points, pd.read_csv(sm.input.models))
    write_csv(points, sm.output.layers)
    write_csv(by_model, sm.output.table)
    replication_figure(points, by_model, sm.params.categories, sm.output.png.removesuffix(".png"))
    overall = agreement(points)
    print(f"{len(points)} model × layer pairs of {len(by_model)} models; overall {overall}", flush=True)
    print(by_model.to_string(index=False), flush=True)


with script_log(snakemake.log[0]):
    main(snakemake)
