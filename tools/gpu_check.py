"""The GPU check: everything only a GPU can show, in one command, with its numbers written down.

    make gpu-check                                    # on a machine with an NVIDIA GPU
    PYTHONPATH=src python -m tools.gpu_check --device cpu --quick --out /tmp/check   # the plumbing, anywhere

It needs torch, torchvision, timm, pandas, matplotlib and the project's other dependencies, not
an installed project: with src/ on PYTHONPATH (as `make gpu-check` puts it) it runs from the
checkout, and its steps get src/ on their path too. Where snakemake (or another package) is
missing, bring it along as wheels and put them on PYTHONPATH; every step runs with this interpreter.

1. ``tests``: the GPU tests (tests/test_gpu.py: leases over the GPUs, images on the device,
   activation reuse exact on CUDA, the GPU against the CPU in each precision) and the evaluation
   tests, with pytest.
2. ``study``: a small demo study end to end with Snakemake, prepared once (data, models trained on
   the CPU), then evaluated on the CPU in fp32 (the reference) and on the GPU in fp32, PyTorch's
   defaults (cuDNN TF32 on, matmul TF32 off: what the authors' runs used), tf32 and bf16; every
   reset's criticality is compared with the CPU's against the tolerances in ``TOLERANCE``.
3. ``benchmark``: benchmarks.reset_eval on ResNet-50 at 224 with 10,000 generated images,
   authors'-style against this project's evaluation, full forward and with activation reuse,
   every precision, and the per-layer sweep.
4. ``side_by_side``: benchmarks.side_by_side on every visible GPU at once (reset jobs as
   threads, one per GPU): bitwise the serial results, image reads and model builds per job, and
   the activation budget each GPU gave each model (with ``--device cpu``: 2 emulated GPUs).

Writes ``gpu_check.json`` (everything, with the GPU model) and ``gpu_check.md`` (the tables that
docs/benchmarks.md points to) into ``--out``; exits non-zero if a step failed or a tolerance was
exceeded.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
import yaml

from layercrit.io import machine, provenance
from layercrit.study import relocatable_zoo

REPO = Path(__file__).resolve().parents[1]

# Largest |criticality − CPU fp32 criticality| (points) accepted per reset, per precision: fp32
# differs from the CPU only by summation order; TF32 rounds matmul/conv inputs to 10 mantissa
# bits and bf16 to 7, which moves small models' outputs by up to a few tenths of a point (the
# CPU bf16 comparison in docs/benchmarks.md: max 0.115 over 459 resets).
TOLERANCE = {"fp32": 0.05, "torch_default": 0.5, "tf32": 0.5, "bf16": 1.0}
# The mean over layers per model (the number the model-level figures use) must agree closer.
TOLERANCE_MODEL_MEAN = {"fp32": 0.01, "torch_default": 0.1, "tf32": 0.1, "bf16": 0.25}


def env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


def run(command: list[str], cwd: Path = REPO, timeout: float = 3600, extra_env: dict | None = None) -> tuple[int, str, float]:
    print("$", " ".join(command), flush=True)
    started = time.monotonic()
    proc = subprocess.run(command, cwd=cwd, env={**env(), **(extra_env or {})}, capture_output=True, text=True, timeout=timeout)
    output = proc.stdout + proc.stderr
    print(output[-3000:], flush=True)
    return proc.returncode, output, time.monotonic() - started


# The test files whose GPU paths the check runs (test_gpu.py runs only where there is a GPU).
TEST_FILES = ("tests/test_gpu.py", "tests/test_evaluation.py", "tests/test_forward.py", "tests/test_devices.py", "tests/test_concurrency.py")


def check_tests() -> dict:
    rc, output, seconds = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TEST_FILES])
    summary = output.strip().splitlines()[-1] if output.strip() else ""
    return {"ok": rc == 0, "summary": summary, "seconds": round(seconds, 1)}


def small_study(workdir: Path, quick: bool) -> Path:
    zoo = relocatable_zoo(REPO / "config/zoo/demo.yaml")
    keep = ["demo_baseline", "demo_linf_4"] if quick else ["demo_baseline", "demo_linf_1", "demo_linf_4", "demo_mixup", "demo_improved"]
    zoo["models"] = [m for m in zoo["models"] if m["id"] in keep]
    for m in zoo["models"]:
        m["source"]["recipe"] = {**m["source"]["recipe"], "epochs": 1 if quick else 4}
    (workdir / "zoo.yaml").write_text(yaml.safe_dump(zoo, sort_keys=False))
    config = yaml.safe_load((REPO / "config/demo.yaml").read_text())
    # trained here for 1 or 4 epochs, as when its tolerances were measured (not the shipped zoo)
    config.update(study="gpucheck", zoo="zoo.yaml")
    config["training"]["retrain"] = True
    config["data"].update(train_images=500 if quick else 5000, eval_images=200 if quick else 1000)
    config["reset"]["seeds"] = [0] if quick else [0, 1]
    if quick:
        config["reset"]["layers"] = {"include": ["conv1", "layer2.*", "fc"]}
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return workdir / "config.yaml"


def check_study(device: str, precisions: list[str], quick: bool, base: Path) -> dict:
    snakemake = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--cores", str(os.cpu_count() or 1)]
    prepared = base / "prepared"
    prepared.mkdir(parents=True, exist_ok=True)
    config = small_study(prepared, quick)
    rc, output, seconds = run([*snakemake, "--configfile", str(config), "--until", "train_model"], cwd=prepared)
    if rc:
        return {"ok": False, "error": "preparing the study failed", "log": output[-2000:]}
    runs = {}
    for name, dev, precision in [("reference", "cpu", "fp32"), *[(f"{device}_{p}", device, p) for p in precisions]]:
        workdir = base / name
        shutil.copytree(prepared, workdir, ignore=shutil.ignore_patterns(".snakemake"))
        rc, output, seconds = run(
            [*snakemake, "aggregate", "--configfile", "config.yaml", "--resources", "gpu=1", "--config", f"device={dev}", f"precision={precision}"],
            cwd=workdir,
        )  # fmt: skip
        if rc:
            return {"ok": False, "error": f"the study failed on {dev} in {precision}", "log": output[-3000:]}
        resets = pd.read_csv(workdir / "results/gpucheck/tables/randomize/resets.csv")
        runs[name] = {"precision": precision, "device": dev, "resets": resets, "seconds": round(seconds, 1)}
    reference = runs.pop("reference")["resets"].set_index(["model", "layer", "seed"])["criticality"]
    out: dict = {"ok": True, "resets": len(reference), "comparisons": {}}
    for name, r in runs.items():
        mine = r["resets"].set_index(["model", "layer", "seed"])["criticality"].loc[reference.index]
        diff = (mine - reference).abs()
        per_model = (mine.groupby("model").mean() - reference.groupby("model").mean()).abs()
        devices = sorted(r["resets"]["device"].unique())
        ok = bool(diff.max() <= TOLERANCE[r["precision"]] and per_model.max() <= TOLERANCE_MODEL_MEAN[r["precision"]])
        out["comparisons"][name] = {
            "device": devices, "precision": r["precision"], "wall_s": r["seconds"],
            "max_abs_diff": round(float(diff.max()), 4), "mean_abs_diff": round(float(diff.mean()), 4),
            "median_abs_diff": round(float(diff.median()), 4), "max_abs_diff_model_mean": round(float(per_model.max()), 4),
            "tolerance": TOLERANCE[r["precision"]], "tolerance_model_mean": TOLERANCE_MODEL_MEAN[r["precision"]], "ok": ok,
        }  # fmt: skip
        out["ok"] &= ok
    return out


def check_benchmark(device: str, precisions: list[str], quick: bool, base: Path) -> dict:
    images, repeats = (16, 1) if quick else (10_000, 3)
    out = base / "reset_eval.json"
    command = [sys.executable, "-m", "benchmarks.reset_eval", "--images", str(images), "--repeats", str(repeats),
               "--device", device, "--precision", *precisions, "--workers", str(os.cpu_count() or 1), "--out", str(out)]  # fmt: skip
    if not quick:
        command += ["--sweep", "--activation-cache-mb", "60000"]
    rc, output, seconds = run(command)
    if rc:
        return {"ok": False, "error": "benchmarks.reset_eval failed", "log": output[-3000:]}
    return {"ok": True, "seconds": round(seconds, 1), **json.loads(out.read_text())}


def check_side_by_side(device: str, quick: bool, base: Path) -> dict:
    out = base / "side_by_side.json"
    command = [sys.executable, "-m", "benchmarks.side_by_side", "--images", "64" if quick else "2000",
               "--activation-cache-mb", "64" if quick else "20000", "--out", str(out)]  # fmt: skip
    emulated = None if device.startswith("cuda") else {"LAYERCRIT_EMULATED_GPUS": "2"}
    rc, output, seconds = run(command, extra_env=emulated)
    if rc:
        return {"ok": False, "error": "benchmarks.side_by_side failed", "log": output[-3000:]}
    record = json.loads(out.read_text())
    return {"ok": record["bitwise"], "seconds": round(seconds, 1), **record}


def markdown(record: dict) -> str:
    lines = [f"# GPU check: {record['machine']['gpu'] or record['machine']['device']}", "",
             f"`{record['command']}` on {record['created']}; versions: "
             + ", ".join(f"{k} {v}" for k, v in record["versions"].items()), ""]  # fmt: skip
    tests = record.get("tests")
    if tests:
        lines += [f"Tests: {'passed' if tests['ok'] else 'FAILED'} ({tests['summary']}).", ""]
    study = record.get("study", {})
    if study.get("comparisons"):
        lines += [f"Study ({study['resets']} resets) against the CPU in fp32, criticality in points:", "",
                  "| run | max abs diff | mean | max of model means | tolerance (reset / model mean) | ok | wall |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        for name, c in study["comparisons"].items():
            lines.append(f"| {name} | {c['max_abs_diff']} | {c['mean_abs_diff']} | {c['max_abs_diff_model_mean']} | "
                         f"{c['tolerance']} / {c['tolerance_model_mean']} | {'yes' if c['ok'] else 'NO'} | {c['wall_s']} s |")  # fmt: skip
        lines.append("")
    bench = record.get("benchmark", {})
    if bench.get("ok"):
        lines += [f"ResNet-50 at 224, {bench['images']} generated images, layer {bench['layer']}, seconds per reset evaluation:", "",
                  "| run | s per evaluation | images/s |", "|---|---|---|"]  # fmt: skip
        for key, value in bench.items():
            if isinstance(value, dict) and "per_eval_s" in value:
                ips = value.get("images_per_s")
                lines.append(f"| {key} | {value['per_eval_s']:.3f} | {ips:.0f} |" if ips else f"| {key} | {value['per_eval_s']:.3f} | |")
        if bench.get("speedup_fp32"):
            lines += ["", f"Authors'-style / ours (fp32, full forward): {bench['speedup_fp32']:.1f}×"]
        lines.append("")
    side = record.get("side_by_side", {})
    if "bitwise" in side:
        lines += [f"Side by side on {side['devices']} device(s), {side['jobs']} reset jobs: bitwise the serial results: "
                  f"{'yes' if side['bitwise'] else 'NO'}; per job {side['per_job']['load_image_set']:.2f} image-file reads, "
                  f"{side['per_job']['load_model']:.2f} model builds. Activation budgets:", ""]  # fmt: skip
        lines += [f"- {line}" for line in side["budgets"]] + [""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (default), or cpu to try the plumbing without a GPU")
    parser.add_argument("--precision", nargs="+", default=["fp32", "torch_default", "tf32", "bf16"])
    steps = ["tests", "study", "benchmark", "side_by_side"]
    parser.add_argument("--steps", nargs="+", default=steps, choices=steps)
    parser.add_argument("--quick", action="store_true", help="small sizes (minutes on a CPU): checks the command, not the GPU")
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: torch sees no CUDA GPU here; use --device cpu --quick to check the command itself", file=sys.stderr)
        return 2
    gpu = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None
    record = provenance(command=" ".join(["python -m tools.gpu_check", *sys.argv[1:]]),
                        machine={**machine(), "device": args.device, "gpu": gpu, "gpus": torch.cuda.device_count()})  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="layercrit-gpu-check-") as tmp:
        if "tests" in args.steps:
            record["tests"] = check_tests()
        if "study" in args.steps:
            record["study"] = check_study(args.device, args.precision, args.quick, Path(tmp) / "study")
        if "benchmark" in args.steps:
            record["benchmark"] = check_benchmark(args.device, args.precision, args.quick, Path(tmp))
        if "side_by_side" in args.steps:
            record["side_by_side"] = check_side_by_side(args.device, args.quick, Path(tmp))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    (args.out / "gpu_check.md").write_text(markdown(record))
    failed = [step for step in args.steps if not record[step]["ok"]]
    print(f"gpu_check: {'FAILED: ' + ', '.join(failed) if failed else 'all steps passed'}; wrote {args.out}/gpu_check.json and .md")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
