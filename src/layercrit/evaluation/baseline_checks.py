"""A reset is compared with the clean outputs its model's baseline computed, so every reset job
checks that it evaluates the files the baseline evaluated (sha256 of the checkpoint, the
evaluation data and the logits), and that the baseline's summary says what its logits give.
A checkpoint replaced after its baseline fails the job (:class:`StaleBaselineError`) instead of
being compared with the clean outputs of another model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any


class StaleBaselineError(RuntimeError):
    """A reset job's inputs are not the files its model's baseline was computed from."""


# What a baseline evaluates, recorded by sha256 in its summary and verified by every reset job.
BASELINE_INPUTS = ("checkpoint", "eval_data", "logits")


def recompute_command(name: str, baseline_summary: str | Path, model: str) -> str:
    """The command that brings a baseline and its model's reset results back in line with its
    input ``name`` (of BASELINE_INPUTS): the evaluation data is shared between models (every
    model's, or with per-model pipelines those of one pipeline), so every baseline."""
    if name == "eval_data":
        return "snakemake --forcerun baseline  (the evaluation data is shared between models: recomputes every baseline and reset result)"
    return f"snakemake --forcerun {baseline_summary}  (recomputes the baseline and every reset result of {model!r})"


def verify_baseline_inputs(
    baseline: dict[str, Any], baseline_summary: str | Path, files: dict[str, tuple[str | Path, str]]
) -> None:
    """Raise :class:`StaleBaselineError` unless each file (name → (path, sha256)) is the one the
    baseline recorded; the message names the changed file and the command that recomputes."""
    model = baseline.get("model", "?")
    for name, (path, actual) in files.items():
        redo = recompute_command(name, baseline_summary, model)
        recorded = baseline.get(f"{name}_sha256")
        if recorded is None:
            raise StaleBaselineError(
                f"the baseline {baseline_summary} does not record which {name} it evaluated (made by an older "
                f"version of this workflow), so reset results cannot be checked against it. Recompute it: {redo}"
            )
        if recorded != actual:
            raise StaleBaselineError(
                f"{path} has changed since the baseline {baseline_summary} was computed (sha256 now {actual[:16]}…, "
                f"the baseline evaluated {recorded[:16]}…): its clean outputs no longer belong to these inputs. "
                f"Recompute it: {redo}"
            )


def summary_contradictions(baseline: Mapping[str, Any], accuracy: Mapping[str, float | int]) -> dict[str, tuple[Any, Any]]:
    """The entries of a baseline summary other than its clean logits give (``accuracy``, of
    ``metrics.clean_accuracy``: top1, top5, n_nonfinite), as {key: (recorded, measured)}; NaN
    equals NaN (non-finite logits). Every reset job checks this (it copies the top-1 into its
    result), and so do the tables (``readback.check_baseline_files``)."""

    def same(recorded: Any, measured: float | int) -> bool:
        if not isinstance(recorded, (int, float)):
            return False
        return recorded == measured or (math.isnan(recorded) and math.isnan(measured))

    return {key: (baseline.get(key), value) for key, value in accuracy.items() if not same(baseline.get(key), value)}


def check_baseline_summary(
    baseline: dict[str, Any], baseline_summary: str | Path, accuracy: Mapping[str, float | int], n_images: int
) -> None:
    """Raise :class:`StaleBaselineError` unless the summary's accuracy and image count are those
    ``accuracy`` measures on the clean logits beside it: every reset result copies the top-1
    (``original_top1``, and ``recovered_acc`` from it), so a summary edited by hand would spread
    into all of them."""
    wrong = summary_contradictions(baseline, accuracy)
    if wrong or baseline.get("n_images") != n_images:
        others = [key for key in wrong if key != "top1"]
        recorded = "".join(f", {key} {wrong[key][0]!r}" for key in others)
        measured = "".join(f", {key} {wrong[key][1]!r}" for key in others)
        model = baseline.get("model", "?")
        raise StaleBaselineError(
            f"{baseline_summary} says top-1 {baseline.get('top1')} on {baseline.get('n_images')} images{recorded}, but "
            f"the clean logits it records give top-1 {accuracy['top1']} on {n_images} images{measured}: the summary "
            f"was edited or does not belong to them. Recompute it: {recompute_command('logits', baseline_summary, model)}"
        )
