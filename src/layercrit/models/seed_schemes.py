"""Which freshly initialized model a ``randomize`` reset takes a layer from: the seed schemes.

- ``independent`` (the default): seed s is the first model built after ``torch.manual_seed(s)``.
  Each seed is a draw of its own, the same for every model of an architecture and independent
  of what ran before in the process, so any (model, layer, seed) job can run anywhere, alone.
- ``authors``: trial t is the fresh model the authors' code (github.com/paulgavrikov/
  layer_criticality, ``code/main.py``) drew for it. That script seeds the global RNG once
  (``--seed``, 0 for the published results), builds the model under test (its constructor draws
  an initialization even though pretrained weights are then loaded), then builds one fresh model
  per trial without seeding again; its evaluation DataLoaders draw from their own seeded
  generators and leave the global stream alone. So trial t is the (t + 2)-th construction after
  ``torch.manual_seed(0)``, by the constructor that script used for the model: timm's
  ``resnet50`` for most of the paper's models, torchvision's for ``tv2_resnet50``
  (``authors_constructor`` in the zoo). With it, a reset result can be compared with the
  published one of the same trial, not only with its distribution over trials.

An initializer is code of timm and torch: a release that changes one changes the draws of both
schemes. ``VERIFIED_VERSIONS`` are the versions under which tests/test_authors_trials.py found
this module's draws equal to the authors' script's (run on the same machine); the authors'
repository does not record the versions the published results were made with, so only the
per-trial replication (``snakemake replication``) shows whether an installation draws what
they drew.
"""

from __future__ import annotations

import torch

from layercrit.evaluation.concurrency import global_rng
from layercrit.io import package_versions
from layercrit.models.builders import prepare_model
from layercrit.models.zoo import build_architecture
from layercrit.study import Architecture, SEED_SCHEMES

# main.py's --seed default, with which the published results were made.
AUTHORS_GLOBAL_SEED = 0

# The lock file's versions (requirements/lock.txt); tests/test_authors_trials.py checks that they
# still are, so a re-lock runs the comparison with the authors' code under the new ones first.
VERIFIED_VERSIONS = {"torch": "2.14.1", "torchvision": "0.29.1", "timm": "1.0.31"}


def fresh_model(arch: Architecture, seed: int, scheme: str = "independent") -> torch.nn.Module:
    """The freshly initialized ``arch`` that seed ``seed`` stands for under ``scheme`` (eval mode).

    The global RNG state is left as it was: the draws happen on a forked stream.
    """
    if scheme == "independent":
        return build_architecture(arch, seed=seed)
    if scheme != "authors":
        raise ValueError(f"unknown seed scheme {scheme!r}; allowed: {', '.join(SEED_SCHEMES)}")
    if seed < 0:
        raise ValueError(f"seed scheme authors: trial {seed} is not a trial (0, 1, 2, ...)")
    prepare_model(arch)  # imports outside the stream: constructions are what it counts
    with global_rng(AUTHORS_GLOBAL_SEED):  # one stream for all of them: no other thread draws between
        # the model under test and the fresh models of the trials before this one
        for _ in range(seed + 1):
            build_architecture(arch)
        return build_architecture(arch)


def unverified_versions() -> dict[str, tuple[str | None, str]]:
    """Installed versions that differ from ``VERIFIED_VERSIONS``: {package: (installed, verified)}
    (the versions every result's provenance records, looked up once per process)."""
    installed = {package: v.split("+")[0] for package, v in package_versions().items()}
    return {p: (installed.get(p), v) for p, v in VERIFIED_VERSIONS.items() if installed.get(p) != v}
