# The tables' helpers (their rules: ../aggregate.smk): settings changed where --rerun-triggers
# leaves out params.
import functools
import json
from layercrit.study import model_record

from snakemake.logging import logger


def settings_changed_unseen(settings):
    """With --rerun-triggers that leave out params (e.g. `--rerun-triggers mtime`), Snakemake
    re-runs no job for a changed setting. ``settings`` (dotted config keys that are params of the
    jobs) that differ from the config the study's tables recorded (their provenance.json), each
    as 'key: then … now …'; none where params trigger re-runs, or there are no tables yet.
    """
    provenance = Path(f"{RESULTS}/tables/{MODE}/provenance.json")
    if params_trigger_on() or not provenance.is_file():
        return []
    try:
        recorded = json.loads(provenance.read_text()).get("config", {})
    except ValueError:
        return []

    def value(data, key):
        for part in key.split("."):
            data = data.get(part) if isinstance(data, dict) else None
        return data

    return [
        f"{key}: {value(recorded, key)!r} then, {value(config, key)!r} now"
        for key in settings
        if value(recorded, key) != value(config, key)
    ]


@functools.lru_cache
def warn_of_unseen_setting_changes(wildcards=None):
    """Warn, once, of the job settings changed since the study's tables were made, where
    --rerun-triggers leaves out params, so that Snakemake re-makes nothing for them. An input
    function of the tables that adds no input: Snakemake knows its triggers only when it plans
    the jobs, not while it parses the workflow."""
    # the settings the jobs take as params: evaluation (evaluation.smk), seed scheme, data
    settings = [
        *EVALUATION,
        "reset.seed_scheme",
        *(f"data.{key}" for key in data_params()),
    ]
    unseen = settings_changed_unseen(settings)
    if unseen and workflow.is_main_process:
        logger.warning(
            f"--rerun-triggers leaves out params, so Snakemake re-runs nothing for the settings changed since "
            f"{RESULTS}/tables/{MODE} was made ({'; '.join(unseen)}): its results are still those of the "
            "old settings. Run with the default triggers (or add params: --rerun-triggers mtime params), "
            "or name what to make again: --forcerun reset for reset.seed_scheme, --forcerun baseline for "
            "device, precision or batch_size (the resets follow), --forcerun with the evaluation-data "
            f"file ({RESULTS}/data/...) for a data setting"
        )
    return []
