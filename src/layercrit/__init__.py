"""Layer criticality of trained vision models.

Reset the parameters of one layer of a trained model, keep the rest, and measure how much the
model's outputs change (Gavrikov et al., 2024). One subpackage per concept:

- ``study``: the study configuration and the schemas' facts (pure Python, parse time)
- ``data``, ``synthetic``, ``imagenet``: evaluation images (uint8), the demo's generated
  dataset, the paper's ImageNet subset (your own folders and how images are prepared per model
  are the study's: ``study.image_folders``, ``study.pipelines``)
- ``models``: building architectures, checkpoints and layer lists (``zoo``), which fresh model a
  seed stands for (``seed_schemes``), training the demo zoo (``training``)
- ``weights``, ``downloads``: where published weights live and how they become the
  architecture's state_dict; the verified download cache
- ``evaluation``: the paper's method and its jobs (``reset``, ``metrics``, ``forward``,
  ``graph``, the baseline and reset jobs, their cache, ``devices``, ``concurrency``)
- ``analysis``: results back into tables and numbers (``readback``, ``aggregation``,
  ``statistics``, ``published``, ``replication``)
- ``figures``: the paper's figures (one registry, ``figures.FIGURES``)
- ``notebook``: the method on a model in memory, without a study (``notebook.layer_criticality``,
  the rows of ``resets.csv``), and its heatmap and depth profile
- ``slurm``: ``layercrit-slurm``, a study as a few Slurm allocations running the local Snakemake
- ``io``, ``joblog``: outputs with provenance, job logs

Modules that moved into a subpackage keep their old names (``layercrit.reset`` is
``layercrit.evaluation.reset``; ``_moved.MOVED`` lists them).

Importing this package imports no torch: the Snakefile imports ``layercrit.study`` at parse time.
"""

from layercrit import _moved

__version__ = "0.1.0"

_moved.install()


def put_on_subprocess_path(src: str) -> None:
    """Prepend ``src`` to PYTHONPATH so that job processes import this package from a checkout."""
    import os

    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != src]
    os.environ["PYTHONPATH"] = os.pathsep.join([src, *parts])
