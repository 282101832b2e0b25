# The data stage's helpers (its rules: ../data.smk): the params of the jobs that prepare the
# evaluation and training images. Snakemake's lint keeps functions and rules in separate files.
import functools
from dataclasses import asdict

from snakemake.logging import logger

from layercrit import synthetic_text
from layercrit.study import jobs as study_jobs
from layercrit.study.image_folders import listing_param
from layercrit.study.saved_datasets import is_saved_dataset, saved_dataset
from layercrit.study.text_data import tokenizers

# The study's input pipelines by name: with data.pipeline per_model, one evaluation-data file each.
PIPELINES = {pipeline.name: pipeline for pipeline in STUDY.pipelines.values()}
# The folder the evaluation images are read from (data.kind imagenet or folder; generated images have none).
IMAGE_FOLDER = {
    "imagenet": config.get("imagenet_val"),
    "folder": config["data"].get("root"),
}.get(config["data"]["kind"])


def synthetic_split(split):
    """The params of one split of the generated images (layercrit.study.jobs.synthetic_split)."""
    return study_jobs.synthetic_split(config["data"], split)


def data_params():
    """The data settings as the preparing job's params (layercrit.study.jobs.data_params)."""
    return study_jobs.data_params(config["data"], STUDY.per_model_pipelines)


@functools.lru_cache
def folder_listing_of(prepared):
    """The image folder's listing as the param of the job that prepares ``prepared``
    (layercrit.study.image_folders.listing_param); a change since it was prepared is said once.
    """
    listing = listing_param(IMAGE_FOLDER, prepared)
    if listing.change and workflow.is_main_process:
        if params_trigger_on():
            then = "it is prepared again, and every model is evaluated on it again"
        else:
            then = f"--rerun-triggers leaves out params, so nothing is made again: add params, or --forcerun {prepared}"
        logger.warning(f"data: {listing.change}: {then}")
    return listing


def prepared_data_params(prepared):
    """data_params() and the image folder's listing, as the params of the job that prepares
    ``prepared``: images added, replaced or removed in the folder make the file again (and,
    through it, every baseline and reset), which Snakemake could not see otherwise."""
    return data_params() | folder_listing_of(prepared).param


def pipeline_params(wildcards):
    """The input pipeline of one evaluation-data file (data.pipeline per_model), as its params."""
    return asdict(PIPELINES[wildcards.pipeline])


# The study's distinct tokenizers (data.kind text): one token file each, by the digest of its files.
TOKENIZERS = (
    tokenizers(STUDY.architectures, Path(config["zoo"]).parent)
    if config["data"]["kind"] == "text"
    else {}
)
# The tasks of generated text (layercrit.synthetic_text; torch-free).
SYNTHETIC_TEXT_TASKS = synthetic_text.TASKS


def text_file(source):
    """The file of a text source: ``{path: ...}`` (that file) or ``{synthetic: {task, seed,
    documents}}`` (the output of rule synthetic_text, which generates it)."""
    if "path" in source:
        return str(Path(source["path"]).expanduser())
    text = source["synthetic"]
    return f"{RESULTS}/data/text/synthetic-{text['task']}-seed{text['seed']}-n{text['documents']}.txt"


def text_data_params():
    """The text settings as the token job's params, with the text file's size and modification
    time (a saved dataset's: its Arrow files' total size, their latest modification and
    datasets' fingerprint): a text replaced or edited makes the token files (and every
    evaluation) again. Generated text is what its settings say (its job makes it again if they
    change).
    """
    if "path" not in config["data"]:
        return config["data"]
    path = Path(config["data"]["path"]).expanduser()
    if is_saved_dataset(path):
        found = saved_dataset(path, config["data"].get("split"))
        return config["data"] | {
            "text_bytes": found.data_bytes,
            "text_mtime_ns": max(f.stat().st_mtime_ns for f in found.data_files),
            "dataset_fingerprint": found.fingerprint,
        }
    stat = path.stat()
    return config["data"] | {
        "text_bytes": stat.st_size,
        "text_mtime_ns": stat.st_mtime_ns,
    }
