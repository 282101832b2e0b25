# The download job's body (download_model in models.smk). It is a `run:` job, executed as a
# thread of the Snakemake process like the evaluation jobs (see reset.smk): torch, timm and the
# download libraries are imported once for all models instead of once per model (~4 s each),
# and a download waits on the network, not on the CPU.


def run_download(wildcards, output, params, log):
    """The download job: layercrit.weights.sources.fetch_model of one model into its canonical checkpoint."""
    from pathlib import Path

    from layercrit.joblog import job_log
    from layercrit.weights.sources import fetch_model
    from layercrit.study import Architecture

    with job_log(log[0]) as logger:
        record = fetch_model(
            params.model,
            Architecture(**params.architecture),
            cache_dir=Path(params.cache),
            out=Path(output.checkpoint),
        )
        logger.info("model %s: %s", wildcards.model, record)
