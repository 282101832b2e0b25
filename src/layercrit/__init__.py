"""Layer criticality of trained vision models.

Reset the parameters of one layer of a trained model, keep the rest, and measure how much the
model's outputs change (Gavrikov et al., 2024). Modules, one concept each:

- ``study``: the study configuration (pure Python, imported by the Snakefile at parse time)
- ``data``: evaluation images as uint8 tensors, and the model input transform
- ``synthetic``: the demo study's procedurally generated dataset
- ``zoo``: architectures and model checkpoints
- ``training``: training recipes for the demo zoo
- ``reset``: resetting one layer (randomize / zero / reinit)
- ``metrics``: output-change metrics, including criticality
- ``evaluation``: the baseline and reset evaluations
- ``aggregation``: tidy tables over models, layers and seeds
- ``figures``: the paper's figures
- ``slurm``: ``layercrit-slurm``, a study as a few Slurm allocations running the local Snakemake

Importing this package imports no torch: the Snakefile imports ``layercrit.study`` at parse time.
"""

__version__ = "0.1.0"


def put_on_subprocess_path(src: str) -> None:
    """Prepend ``src`` to PYTHONPATH so that job processes import this package from a checkout."""
    import os

    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != src]
    os.environ["PYTHONPATH"] = os.pathsep.join([src, *parts])
