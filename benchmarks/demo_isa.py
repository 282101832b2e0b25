"""Does the demo give its committed numbers under other CPU instruction sets?

Runs the demo study from scratch (as `make demo` does: images, the shipped zoo fetched and
verified, baselines, every reset, tables, figures) once per instruction-set setting, each in a
fresh process tree whose numerical libraries are told to use only that instruction set:

- ATen's own kernels (``ATEN_CPU_CAPABILITY``), oneDNN's convolutions and matmuls
  (``ONEDNN_MAX_CPU_ISA``), MKL (``MKL_ENABLE_INSTRUCTIONS``), and numpy, which generates the
  demo's images (``NPY_DISABLE_CPU_FEATURES``) —

the way another vendor's or an older CPU runs the same code: other vector widths, other
summation orders. Each run's tables are compared with the committed ones (docs/demo/) with
``tools/demo_compare.py``'s comparison, whose bounds the demo check in `make test` applies on any
CPU, and its evaluation images with those of the first setting. Usage:

    python -m benchmarks.demo_isa --out docs/demo_isa_cpu.json          # every setting (minutes each)
    python -m benchmarks.demo_isa --only avx2 --out /tmp/avx2.json
    python -m benchmarks.demo_isa --markdown docs/demo_isa_cpu.json     # the table of a record
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks import harness
from tools import demo_compare, demo_docs

ROOT = Path(__file__).resolve().parents[1]

# name -> environment; each keeps the settings of the one before it and narrows them further.
SETTINGS: dict[str, dict[str, str]] = {
    "native": {},
    "avx2": {
        "ATEN_CPU_CAPABILITY": "avx2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "NPY_DISABLE_CPU_FEATURES": "AVX512_SPR AVX512_ICL X86_V4",
    },
    "sse4": {
        "ATEN_CPU_CAPABILITY": "default",
        "ONEDNN_MAX_CPU_ISA": "SSE41",
        "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
        "NPY_DISABLE_CPU_FEATURES": "AVX512_SPR AVX512_ICL X86_V4 X86_V3",
    },
}


def what_runs(env: dict[str, str]) -> dict[str, Any]:
    """What torch and numpy report under ``env`` (a fresh process: both read it at import): torch's
    kernel level, and whether numpy dispatches to its x86-64-v4 (AVX-512) and v3 (AVX2) kernels."""
    probe = (
        "import json, torch, numpy; from numpy._core._multiarray_umath import __cpu_features__ as f; "
        "print(json.dumps({'torch_cpu_capability': torch.backends.cpu.get_cpu_capability(), "
        "'numpy_x86_v4': bool(f['X86_V4']), 'numpy_x86_v3': bool(f['X86_V3'])}))"
    )
    out = subprocess.run([sys.executable, "-c", probe], env={**os.environ, **env}, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def pixel_differences(a: Path, b: Path) -> dict[str, int]:
    from layercrit.data import load_image_set

    x, y = load_image_set(a), load_image_set(b)
    diff = (x.images.int() - y.images.int()).abs()
    return {
        "pixels": int((diff > 0).sum()),
        "images": int((diff.flatten(1).amax(1) > 0).sum()),
        "largest": int(diff.max()),
        "labels": int((x.labels != y.labels).sum()),
    }


def run(names: list[str], workdir: Path, record: dict[str, Any]) -> dict[str, Any]:
    record.update(bounds={f"{t}:{c}": b for (t, c), b in demo_compare.TOLERANCE.items()}, runs=[])
    first_eval = None
    for name in names:
        env = {**os.environ, **SETTINGS[name]}
        study = f"demo_isa_{name}"
        wall = demo_docs.run_demo(workdir, study, env)
        tables = workdir / "results" / study / "tables" / "randomize"
        eval_data = workdir / "results" / study / "data" / "eval.safetensors"
        first_eval = first_eval or (names[0], eval_data)
        differences = demo_compare.largest_differences(tables, demo_compare.DOCS)
        record["runs"].append({
            "setting": name,
            "environment": SETTINGS[name],
            "reports": what_runs(SETTINGS[name]),
            "wall_s": round(wall, 1),
            "largest_differences": {f"{t}:{c}": {"largest": d["largest"], "where": str(d["where"])} for (t, c), d in differences.items()},
            "problems": demo_compare.compare_tables(tables, demo_compare.DOCS),
            "eval_images_vs_first": {"setting": first_eval[0], **pixel_differences(eval_data, first_eval[1])},
        })  # fmt: skip
        print(markdown(record), flush=True)
    return record


def markdown(record: dict[str, Any]) -> str:
    keys = list(record["bounds"])
    head = "| setting | torch kernels | numpy kernels x86-64-v4 / v3 | wall | " + " | ".join(f"`{k}`" for k in keys) + " | eval images vs first |"
    rows = [head, "|" + "---|" * (5 + len(keys))]
    rows.append("| bound (`tools/demo_compare.py`) | | | | " + " | ".join(f"{record['bounds'][k]:g}" for k in keys) + " | |")
    for r in record["runs"]:
        reports, pixels = r["reports"], r["eval_images_vs_first"]
        same = "identical" if pixels["pixels"] == 0 and pixels["labels"] == 0 else (
            f"{pixels['pixels']} pixels in {pixels['images']} images differ (by ≤ {pixels['largest']})")
        cells = " | ".join(f"{r['largest_differences'][k]['largest']:.2g}" for k in keys)
        rows.append(
            f"| {r['setting']} | {reports['torch_cpu_capability']} | {'yes' if reports['numpy_x86_v4'] else 'no'} / "
            f"{'yes' if reports['numpy_x86_v3'] else 'no'} | {r['wall_s']:.0f} s | {cells} | {same} |"
        )  # fmt: skip
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--workdir", type=Path, default=ROOT, help="where the runs' results/ go (default: the checkout)")
    started = harness.start(parser, "demo_isa", markdown, out="optional", not_settings=("workdir",))
    if started is None:
        return
    args, record = started
    record = run(args.only, args.workdir, record)
    harness.finish(args, record, markdown)
    failed = [r["setting"] for r in record["runs"] if r["problems"]]
    if failed:
        sys.exit(f"beyond the bounds under {failed}: " + "; ".join(p for r in record["runs"] for p in r["problems"]))


if __name__ == "__main__":
    main()
