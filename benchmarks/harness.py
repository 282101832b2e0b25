"""The command line and the record every benchmark shares.

A benchmark builds its own ``argparse`` parser (its settings), then::

    started = harness.start(parser, "paper_scale", markdown)
    if started is None:          # --markdown JSON: the docs' text of an existing record, printed
        return
    args, record = started       # record: provenance (created, host, versions) + machine + settings
    record["runs"] = ...         # what it measured
    harness.finish(args, record, markdown)   # --out: the JSON record; prints the docs' text

``--out`` and ``--markdown`` are the harness's; the record's machine is
:func:`layercrit.io.machine` (CPU model, the kernels torch uses, cores, OS) and its provenance
:func:`layercrit.io.provenance`, so that every record names where and with what it ran the same
way. ``table`` renders a record as docs/benchmarks.md shows it (tests/test_benchmark_docs.py keeps
the two equal); a benchmark without one prints its record as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from layercrit.io import machine, provenance

Table = Callable[[dict], str]
# The harness's own options, never a benchmark's setting.
OWN_OPTIONS = ("out", "markdown")


def start(
    parser: argparse.ArgumentParser,
    benchmark: str,
    table: Table | None = None,
    *,
    out: Literal["default", "optional", "required"] = "default",
    not_settings: tuple[str, ...] = (),
    argv: list[str] | None = None,
) -> tuple[argparse.Namespace, dict[str, Any]] | None:
    """Add --out (``out="default"``: default ``<benchmark>.json``; ``"optional"``: no record
    unless given; ``"required"``) and, with a ``table``, --markdown; parse the command line.
    With --markdown: print ``table`` of that record and return None. Otherwise return the
    arguments and the record's start: provenance, machine and the settings (every argument but
    the harness's own and ``not_settings``)."""
    if out == "required":
        parser.add_argument("--out", type=Path, required=True, help="write the JSON record here")
    else:
        default = Path(f"{benchmark}.json") if out == "default" else None
        parser.add_argument("--out", type=Path, default=default, help=f"write the JSON record here (default: {default or 'none'})")
    if table is not None:
        parser.add_argument("--markdown", type=Path, metavar="JSON", help="only print the docs' text of an existing record")
    args = parser.parse_args(argv)
    if getattr(args, "markdown", None):
        print(table(json.loads(args.markdown.read_text())))
        return None
    skip = (*OWN_OPTIONS, *not_settings)
    record = provenance(benchmark=benchmark, machine=machine(), settings={k: v for k, v in vars(args).items() if k not in skip})
    return args, record


def write_record(record: dict[str, Any], path: Path) -> None:
    """The record as JSON (paths and other objects as their text)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1, default=str) + "\n")


def finish(args: argparse.Namespace, record: dict[str, Any], table: Table | None = None) -> None:
    """Write the record to --out (where there is one) and print ``table`` of it (else the JSON)."""
    if args.out is not None:
        write_record(record, args.out)
    print(table(record) if table is not None else json.dumps(record, indent=1, default=str))


def quantiles(values: list[float]) -> dict[str, float] | None:
    """Median and p90 (the value below which 90 % of the others lie, no interpolation) and the count."""
    if not values:
        return None
    ordered = sorted(values)
    return {"n": len(values), "median": round(statistics.median(ordered), 4), "p90": round(ordered[int(0.9 * (len(ordered) - 1))], 4)}
