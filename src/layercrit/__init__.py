"""Layer criticality of trained vision models.

Reset the parameters of one layer of a trained model, keep the rest, and measure how much the
model's outputs change (Gavrikov et al., 2024). Modules, one concept each:

- ``study``: the study configuration and the schemas' facts (pure Python, parse time)
- ``data``, ``synthetic``, ``imagenet``: evaluation images (uint8), the demo's generated dataset,
  the paper's ImageNet subset
- ``zoo``: architectures, layer lists and model checkpoints
- ``sources``, ``downloads``, ``conversion``: where published weights live, the verified
  download cache, turning a published file into the architecture's state_dict
- ``training``: training recipes for the demo zoo
- ``reset``: resetting one layer (randomize / zero / reinit)
- ``metrics``: output-change metrics, including criticality
- ``forward``: how a model runs on the evaluation images (settings, batches, activation reuse)
- ``evaluation``: the baseline and the reset evaluation (``measure_reset``: the paper's method)
- ``devices``, ``concurrency``, ``io``, ``joblog``: device leases, what evaluation jobs side by
  side in one process share (the global RNG, torch.fx tracing), outputs with provenance, job logs
- ``aggregation``, ``statistics``: tidy tables over models, layers and seeds; correlations
- ``published``, ``replication``: the authors' raw results, and this study against them
- ``figures``: the paper's figures (one registry, ``figures.FIGURES``)
- ``slurm``: ``layercrit-slurm``, a study as a few Slurm allocations running the local Snakemake

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
