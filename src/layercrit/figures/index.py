"""Which figures a study has, and why it lacks the others.

A study's figures depend on its zoo and config (a difference heatmap needs a baseline model), so
changing them can leave a figure of an earlier run beside the new ones, looking current. The
index moves such a figure into ``outdated/`` (kept, not deleted) and says so in the log, and
writes ``index.json``: the figures made and the reason for each one left out.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from layercrit.io import write_json
from layercrit.study import STUDY_FIGURE_FILES

log = logging.getLogger(__name__)

# Every figure the workflow draws into a study's figures/<mode>/ (nothing else there is touched).
KNOWN_FIGURES = STUDY_FIGURE_FILES


def write_figure_index(directory: str | Path, made: Sequence[str], left_out: Mapping[str, str], out: str | Path) -> list[Path]:
    """Move the figures of ``directory`` that the study does not make (``left_out``, or no
    longer known to it) into ``directory/outdated/``; write the index to ``out``; return where
    moved figures went."""
    directory = Path(directory)
    moved = []
    for name in KNOWN_FIGURES:
        if name in made:
            continue
        for ext in ("png", "pdf"):
            stale = directory / f"{name}.{ext}"
            if stale.exists():
                target = directory / "outdated" / stale.name
                target.parent.mkdir(exist_ok=True)
                os.replace(stale, target)
                moved.append(target)
                log.warning(
                    "%s is from an earlier run: this study does not make it (%s); moved to %s",
                    stale, left_out.get(name, "not one of its figures"), target,
                )  # fmt: skip
    for name in made:
        log.info("figure %s: made", name)
    for name, reason in left_out.items():
        log.info("figure %s: not made, %s", name, reason)
    write_json(out, {"figures": list(made), "left_out": dict(left_out), "moved_to_outdated": [str(p) for p in moved]})
    return moved
