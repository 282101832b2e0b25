"""Which step of a layercrit-slurm chain gets which of the user's forcing options.

Snakemake's options that force jobs to run again, given to every step, would force them in every
step: ``--forcerun <baseline>`` would recompute the baseline in prepare, again in every shard
that holds the model's jobs, and fail the finish step (it evaluates nothing). So each step gets
the forcing that is its own: rules (and files) up to the baselines go to prepare (their results
then re-run through the newer baselines, by modification time, in the shards), reset results to
the shards, tables and figures to finish.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

FORCE_OPTIONS = {"--forcerun": True, "-R": True, "--forceall": False, "-F": False, "--force": False, "-f": False}
PREPARE_RULES = (
    "synthetic_data", "imagenet_subset", "image_folder", "pipeline_images", "synthetic_text", "text_tokens", "train_model",
    "download_model", "baseline",
)
PREPARE_OUTPUTS = ("data", "models", "baselines")  # results/<study>/<these>/...
SHARD_RULES, SHARD_OUTPUTS = ("reset",), ("resets",)


def split_forcing(args: Sequence[str]) -> tuple[list[str], list[str], bool]:
    """The user's Snakemake options without the forcing ones, the targets of --forcerun/-R, and
    whether --forceall/-F/--force/-f (everything: the prepare step's, from whose newer outputs
    everything after runs again) was given. As argparse reads them: --forcerun takes the words up
    to the next option."""
    rest, targets, everything = [], [], False
    taking = False
    for arg in args:
        name, eq, value = arg.partition("=")
        if name in FORCE_OPTIONS and (eq == "" or FORCE_OPTIONS[name]):
            taking = FORCE_OPTIONS[name] and not eq
            everything |= not FORCE_OPTIONS[name]
            targets += [value] if eq else []
        elif taking and not arg.startswith("-"):
            targets.append(arg)
        else:
            taking = False
            rest.append(arg)
    return rest, targets, everything


def forcing_step(target: str) -> str:
    """Which step a --forcerun target (a rule name or an output path) belongs to."""
    parts = Path(target).parts
    kind = parts[2] if len(parts) > 2 and parts[0] == "results" else None
    if target in PREPARE_RULES or kind in PREPARE_OUTPUTS:
        return "prepare"
    return "shards" if target in SHARD_RULES or kind in SHARD_OUTPUTS else "finish"
