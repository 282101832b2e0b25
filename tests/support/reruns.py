"""Reset jobs run again (another scheduler, a fresh process): every result recomputed, its numbers
the same bit for bit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

METRICS = ("criticality", "cosine", "top1", "top5", "l1", "l2", "kl", "top1_agreement")


def reset_records(results: Path) -> dict[Path, dict[str, Any]]:
    """Every reset result of a study's results folder, by path."""
    return {p: json.loads(p.read_text()) for p in results.glob("resets/*/*/*/*.json")}


def assert_recomputed_with_the_same_numbers(before: dict[Path, dict[str, Any]]) -> None:
    """Each result in ``before`` (reset_records) was made again, with the same metrics."""
    for path, old in before.items():
        new = json.loads(path.read_text())
        assert new["created"] != old["created"], f"{path} was not recomputed"
        assert {m: new[m] for m in METRICS} == {m: old[m] for m in METRICS}, path
