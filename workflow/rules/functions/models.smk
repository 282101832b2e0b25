# The model stage's helpers (its rules: ../models.smk): the params and priorities of the
# training and download jobs, and the download job's body.
from layercrit.weights.specs import local_source_files, local_source_param
from layercrit.study import jobs as study_jobs
from layercrit.study.language_training import init_from
from layercrit.study.text_data import tokenizers


def checkpoint_entry(model_id):
    """A model's zoo entry as its download job's params (layercrit.study.jobs.checkpoint_entry)."""
    return study_jobs.checkpoint_entry(STUDY, model_id)


def download_entry(model_id):
    """A downloaded model's params: its checkpoint_entry, and the sha256 of its local source files
    (layercrit.weights.specs.local_source_param): a file saved over with other content re-makes
    the checkpoint, also with an older modification time (rsync -a, cp -p)."""
    source = STUDY.models[model_id].source
    return checkpoint_entry(model_id) | local_source_param(
        source, model_checkpoint(model_id)
    )


def local_model_files(wildcards):
    """A downloaded model's source files on this machine (file:// or a path): inputs of its
    download, so that a file saved over (a model retrained) re-makes its checkpoint and all that
    depends on it. Web files are not: their cached copy is verified by sha256 instead.
    """
    return local_source_files(STUDY.models[wildcards.model].source)


def training_entry(model_id):
    """A trained model's zoo entry as its training job's params (layercrit.study.jobs.training_entry)."""
    return study_jobs.training_entry(STUDY, model_id)


def language_training_text(wildcards):
    """The text file a language model trains on: its recipe's text (text_file, ../functions/data.smk)."""
    return text_file(STUDY.models[wildcards.model].source["recipe"]["text"])


def language_training_start(wildcards):
    """The checkpoint a language model's training starts from: that of the model its recipe's
    init_from names (trained or downloaded first), or none for a fresh initialization.
    """
    parent = init_from(STUDY.models[wildcards.model])
    return [f"{RESULTS}/models/{parent}.safetensors"] if parent else []


def model_tokenizer(model_id):
    """Where a language model's tokenizer is fetched from, with its files' sha256 (its layer list's)."""
    arch = STUDY.architectures[STUDY.models[model_id].architecture]
    (tokenizer,) = tokenizers(
        {arch.id: arch}, Path(config["zoo"]).parent
    ).values()  # a local directory is relative to the zoo
    return tokenizer


def training_priority(wildcards):
    """Longest training first (layercrit.study.jobs.training_priority)."""
    return study_jobs.training_priority(STUDY.models[wildcards.model])


def training_records(wildcards=None):
    """The training records of the models trained here, for the tables' provenance. As inputs
    they also make the switch to training.retrain: true re-make checkpoints that were fetched
    from their recorded training: the records are then missing, so train_model runs, and the
    baselines and resets after it (Snakemake re-runs no job for changed params whose outputs
    lack its metadata, as the training's record and initial weights do after a download).
    """
    return [f"{RESULTS}/models/{model}.training.json" for model in TRAINED_MODELS]


# The download job's body. It is a `run:` job, executed as a thread of the Snakemake process like
# the evaluation jobs (see evaluation.smk): torch, timm and the download libraries are imported
# once for all models instead of once per model (~4 s each), and a download waits on the
# network, not on the CPU.
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
