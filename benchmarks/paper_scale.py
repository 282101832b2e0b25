"""The paper's study at its full job count, offline: 51 models × 54 layers × 3 seeds = 8,262 resets.

    python -m benchmarks.paper_scale --out docs/benchmark_paper_scale.json      # ~1 h on 2 CPU cores
    python -m benchmarks.paper_scale --models tv_resnet50 resnet50_dino --layers conv1 fc --seeds 0
    python -m benchmarks.paper_scale --markdown docs/benchmark_paper_scale.json  # the docs' table

What it sets up in ``--workdir`` (default: a temporary directory, removed afterwards):

- for every model of config/zoo/paper.yaml, fabricated ResNet-50 weights (a seeded fresh
  initialization, different per model) published the way its source says the real file is laid
  out: the inverse of its conversion fields (key, prefixes, renames, the SimCLRv2 names, an
  attacker's copy or auxiliary BatchNorms to be dropped, the file format), each checked by
  converting it back with layercrit.weights.conversion. They are served on 127.0.0.1 (layercrit.testing.fake_hosts:
  plain files and the Hugging Face Hub's resolve endpoint) at the addresses the zoo names, through
  the workflow's own LAYERCRIT_URL_REWRITE and HF_ENDPOINT. torchvision's file names carry a
  sha256 prefix fabricated bytes cannot match, so the rehearsal's copy of the zoo pins their sha256;
- an ImageNet-layout validation folder: 1,000 class folders, one generated JPEG each, of which
  ``--images`` (default 2) form the evaluation subset, prepared at ``--crop`` pixels (default 64,
  resized to 8/7 of that first, as 256 -> 224): a ResNet-50 forward on the CPU stays cheap
  (~0.04 s here against ~0.45 s at 224), so the run measures the machinery around it;
- config/config.yaml with only those paths, the subset, the image size and ``device: cpu`` changed.

Then it runs the README's command for the paper study once, the whole DAG (51 fetches, 51
baselines, 8,262 resets, tables, figures), as ``snakemake --cores N --configfile ...`` with the
repository's default profile, and records: wall time per stage (from the outputs' times), per-job
overhead of the reset jobs (the time from one result to the next minus its forward passes, as
benchmarks/job_overhead.py; median and p90 for the first, middle and last 1,000), the time spent
inside the evaluation besides the forward pass, the Snakemake process's memory (RSS, sampled each
second: peak overall and per model's reset jobs), the disk used, and, with ``--profile`` and
py-spy installed, where the Snakemake process spends its time (inclusive share per function).

With ``--slurm-allocations M`` the same study runs through ``layercrit-slurm --allocations M
--wait`` on a Slurm cluster instead (the tests' one-node cluster: tests/slurm/start_slurm.sh), and
the record adds, per step, the allocation seconds Slurm accounted (``scontrol show job``) and the
allocation seconds per reset job beyond its forward passes, start-up and DAG building included.
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import mmap
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
import torch
import yaml
from PIL import Image
from safetensors.torch import save as safetensors_bytes

from benchmarks import harness
from benchmarks.harness import quantiles
from layercrit.weights.conversion import convert_state_dict
from layercrit.study import Architecture
from layercrit.testing.fake_hosts import FakeHosts
from layercrit.models.zoo import build_architecture

REPO = Path(__file__).resolve().parents[1]

DRIVE_PREFIX = "https://drive.google.com/uc?id="
STAGES = {  # stage -> the outputs whose times bound it (relative to results/<study>/)
    "data": ["data/*.safetensors"],
    "fetch": ["models/*.safetensors"],
    "baselines": ["baselines/*.json"],
    "resets": ["resets/*/*/*/*.json"],
    "tables": ["tables/*/*.csv"],
    "figures": ["figures/*/*.png"],
}


# ----------------------------------------------------------------------------------------------
# Fabricated publications: the inverse of a source spec's conversion fields


def _simclrv2_name(key: str) -> str:
    """timm ResNet name -> the converted SimCLRv2 checkpoint's name (inverse of its mapping)."""
    parts = {"conv1.": "net.0.", "bn1.": "net.1.0.", "conv2.": "net.2.", "bn2.": "net.3.0.", "conv3.": "net.4.",
             "bn3.": "net.5.0.", "downsample.0.": "projection.shortcut.", "downsample.1.": "projection.bn.0."}  # fmt: skip
    for old, new in (("conv1.", "net.0.0."), ("bn1.", "net.0.1.0.")):
        if key.startswith(old):
            return new + key[len(old) :]
    match = re.fullmatch(r"layer(\d)\.(\d+)\.(.+)", key)
    if match:
        stage, block, rest = match.groups()
        old = next(p for p in parts if rest.startswith(p))
        return f"net.{stage}.blocks.{block}.{parts[old]}{rest[len(old) :]}"
    return key


INVERSE_MAPPINGS = {"simclrv2": _simclrv2_name}


def published_name(key: str, spec: dict) -> str:
    """The name ``key`` has in a file that ``spec``'s conversion turns into ``key``."""
    if spec.get("mapping"):
        key = INVERSE_MAPPINGS[spec["mapping"]](key)
    for old, new in reversed(spec.get("rename") or []):
        if key.startswith(new):
            return old + key[len(new) :]  # renamed names are given as published
    for prefix in reversed(spec.get("strip_prefix") or []):  # the default strips "module." where present
        key = prefix + key
    return key


def published_object(state: dict[str, torch.Tensor], spec: dict) -> Any:
    """What the file holds: the renamed tensors, the entries its conversion must drop, the wrapper."""
    published = {published_name(k, spec): v for k, v in state.items()}
    first = next(iter(published))
    for prefix in [spec["keep_prefix"]] if isinstance(spec.get("keep_prefix"), str) else spec.get("keep_prefix") or []:
        published["attacker." + first] = published[first] + 1  # e.g. Madry's attacker copy
    for part in spec.get("drop_containing") or []:
        published[f"{first}.{part}"] = torch.zeros(3)  # e.g. auxiliary BatchNorms
    if spec.get("strict") is False:
        published[(spec.get("strip_prefix") or [""])[0] + "projection_head.weight"] = torch.zeros(4, 4)
    if spec.get("key") is None:
        return published
    wrapped: dict[str, Any] = {spec["key"]: published, "epoch": 90}
    for name in spec.get("allowed_globals") or []:
        if name != "argparse.Namespace":
            raise ValueError(f"no fabricated object for allowed global {name!r}")
        wrapped["args"] = argparse.Namespace(arch="resnet50")  # as Madry's checkpoints pickle
    return wrapped


def file_bytes(obj: Any, file_name: str) -> bytes:
    if file_name.endswith(".safetensors"):
        return safetensors_bytes(obj)
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def check_round_trip(obj: Any, spec: dict, expected: dict[str, torch.Tensor], model_id: str) -> None:
    """The fabricated file converts back to exactly ``expected`` (a fabrication error is not
    left for the workflow to find)."""
    converted, _ = convert_state_dict(obj, spec, model_id=model_id)
    extra = set(converted) - set(expected) if spec.get("strict") is not False else set()
    if extra or not all(k in converted and torch.equal(converted[k], v) for k, v in expected.items()):
        raise AssertionError(f"{model_id}: the fabricated file does not convert back to its weights ({sorted(extra)[:3]})")


def address(spec: dict) -> tuple[str, ...]:
    """Where a file spec's file lives: ("url", url) or ("hub", repo, file, revision)."""
    kind = spec["kind"]
    if kind == "url":
        return ("url", spec["url"])
    if kind == "gdrive":
        return ("url", DRIVE_PREFIX + spec["id"])
    if kind == "torchvision":
        from torchvision.models import get_weight

        return ("url", get_weight(spec["weights"]).url)
    if kind == "huggingface":
        return ("hub", spec["repo"], spec["file"], spec.get("revision") or "main")
    if kind == "timm":
        from timm.models import get_pretrained_cfg

        repo, _, pinned = get_pretrained_cfg(spec["tag"]).hf_hub_id.partition("@")
        return ("hub", repo, spec.get("file") or "model.safetensors", spec.get("revision") or pinned or "main")
    raise ValueError(f"no fabricated publication for source kind {kind!r}")


def publish_model(model: dict, state: dict[str, torch.Tensor], classifier: str, folder: Path) -> list[tuple[tuple, Path]]:
    """Write the published file(s) of ``model`` under ``folder``; returns (address, path) pairs.
    The zoo entry gets the sha256 of torchvision files (see the module docstring)."""
    source = model["source"]
    parts = [(source, state)]
    if source["kind"] == "pair":
        head = {k: v for k, v in state.items() if k.startswith(classifier + ".")}
        parts = [(source["backbone"], {k: v for k, v in state.items() if k not in head}), (source["head"], head)]
    files = []
    for spec, part in parts:
        obj = published_object(part, spec)
        check_round_trip(obj, spec, part, model["id"])
        where = address(spec)
        path = folder / f"{model['id']}.{len(files)}"
        path.write_bytes(file_bytes(obj, where[-2] if where[0] == "hub" else where[1]))
        if spec["kind"] == "torchvision":
            import hashlib

            spec["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        files.append((where, path))
    return files


def fabricate_zoo(models: list[str] | None, workdir: Path, hosts: FakeHosts) -> tuple[Path, dict[str, str]]:
    """The rehearsal's zoo file and the environment that points the workflow at ``hosts``."""
    zoo = yaml.safe_load((REPO / "config/zoo/paper.yaml").read_text())
    zoo["architectures"]["resnet50"]["layers"] = str(REPO / "config/architectures/resnet50.tsv")
    if models:
        unknown = sorted(set(models) - {m["id"] for m in zoo["models"]})
        if unknown:
            raise SystemExit(f"not in config/zoo/paper.yaml: {unknown}")
        zoo["models"] = [m for m in zoo["models"] if m["id"] in models]
        if zoo["baseline"] not in models:
            zoo["baseline"] = zoo["models"][0]["id"]
    spec = zoo["architectures"]["resnet50"]
    arch = Architecture("resnet50", spec["timm"], spec.get("kwargs", {}))
    folder = workdir / "published"
    folder.mkdir(parents=True)
    maps = []  # keep the files mapped, not copied into this process's memory
    hosts_seen = set()
    for i, model in enumerate(zoo["models"]):
        state = build_architecture(arch, seed=1000 + i).state_dict()
        for where, path in publish_model(model, state, "fc", folder):
            with open(path, "rb") as f:
                data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            maps.append(data)
            if where[0] == "hub":
                hosts.add_hf_file(where[1], where[2], data, revision=where[3])
            elif where[1].startswith(DRIVE_PREFIX):
                hosts.serve(f"/drive/{where[1][len(DRIVE_PREFIX):]}", data)
            else:
                hosts_seen.add(urlsplit(where[1]).netloc)
                parts = urlsplit(where[1])  # the server routes by path (zenodo's ?download=1)
                hosts.serve(f"/{parts.netloc}{parts.path}", data)
        print(f"published {model['id']} ({model['source']['kind']})", flush=True)
    path = workdir / "zoo.yaml"
    path.write_text(yaml.safe_dump(zoo, sort_keys=False))
    rewrite = {f"https://{h}/": f"{hosts.base}/{h}/" for h in hosts_seen}
    rewrite[DRIVE_PREFIX] = f"{hosts.base}/drive/"
    env = {"LAYERCRIT_URL_REWRITE": json.dumps(rewrite), "HF_ENDPOINT": hosts.base}
    return path, env


def authors_results(zoo: Path, path: Path) -> str:
    """A results.csv in the authors' released format (their columns; layers as ``model.<name>``;
    trials 0-2) for every model of ``zoo``, with made-up numbers; returns its sha256. The
    workflow compares a study with it (replication figure and tables), so the rehearsal does too."""
    import hashlib

    import pandas as pd

    models = yaml.safe_load(zoo.read_text())["models"]
    layers = [l.split("\t")[0] for l in (REPO / "config/architectures/resnet50.tsv").read_text().splitlines()
              if not l.startswith("#") and l.split("\t")[1:2] in (["Conv2d"], ["Linear"])]  # fmt: skip
    g = torch.Generator().manual_seed(0)
    rows = []
    for model in models:
        for layer in layers:
            for trial in (0.0, 1.0, 2.0):
                u = torch.rand(5, generator=g).tolist()
                rows.append({"top1_acc": 80 * u[0], "top5_acc": 80 + 15 * u[1], "loss": 1 + 4 * u[2], "batch_acc": None,
                             "layer": f"model.{layer}", "pred_cos_sim": 1 - u[3], "pred_l1_err": u[4], "pred_l2_err": u[4] / 2,
                             "pred_ce_loss": 1.0, "trial": trial, "recovered_acc": u[0], "model_id": model["id"]})  # fmt: skip
    pd.DataFrame(rows).to_csv(path, index=False)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def imagenet_folder(root: Path, classes: int = 1000) -> None:
    """ImageNet's validation layout (class folders) with one small generated JPEG per class."""
    g = torch.Generator().manual_seed(0)
    for c in range(classes):
        folder = root / f"n{c:08d}"
        folder.mkdir(parents=True)
        pixels = torch.randint(0, 256, (64, 80, 3), dtype=torch.uint8, generator=g).numpy()
        Image.fromarray(pixels).save(folder / f"ILSVRC2012_val_{c + 1:08d}.JPEG", quality=85)


# ----------------------------------------------------------------------------------------------
# The run and what it records


class MemorySampler:
    """The RSS of a process and its children, sampled every ``interval`` seconds in a thread."""

    def __init__(self, pid: int, interval: float = 1.0):
        self.samples: list[tuple[float, int]] = []
        self.process = psutil.Process(pid)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
        self.thread.start()

    def _run(self, interval: float) -> None:
        while not self.stop.wait(interval):
            try:
                procs = [self.process, *self.process.children(recursive=True)]
                rss = sum(p.memory_info().rss for p in procs if p.is_running())
            except psutil.Error:
                continue
            self.samples.append((time.time(), rss))

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


def run_workflow(workdir: Path, config: Path, cores: int, env: dict[str, str], profile: bool) -> dict:
    """The README's command for the paper study, once, with memory sampled (and a py-spy profile)."""
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
               "--cores", str(cores), "--configfile", str(config)]  # fmt: skip
    spy = shutil.which("py-spy") if profile else None
    if profile and not spy:
        print("py-spy not found: no profile (pip install py-spy)", flush=True)
    if spy:
        command = [spy, "record", "--rate", "20", "--nonblocking", "--format", "raw", "--output", str(workdir / "profile.txt"), "--", *command]
    started = time.time()
    with open(workdir / "snakemake.log", "w") as log:
        proc = subprocess.Popen(command, cwd=workdir, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
        sampler = MemorySampler(proc.pid)
        returncode = proc.wait()
        sampler.close()
    log_text = (workdir / "snakemake.log").read_text()
    # py-spy exits 0 whatever the process it ran did: Snakemake's own last words decide
    if returncode != 0 or "(100%) done" not in log_text or "did not complete successfully" in log_text:
        raise SystemExit(f"snakemake failed ({returncode}):\n{log_text[-5000:]}")
    return {"started": started, "ended": time.time(), "memory": sampler.samples, "command": command}


class SlurmJobs:
    """What Slurm says about every job while the run lasts (``scontrol show job``, polled): the
    test cluster forgets finished jobs after 10 minutes (MinJobAge) and keeps no accounting."""

    def __init__(self, interval: float = 15.0):
        self.jobs: dict[str, dict[str, str]] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
        self.thread.start()

    def poll(self) -> None:
        out = subprocess.run(["scontrol", "show", "job", "-o"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            fields = dict(token.partition("=")[::2] for token in line.split() if "=" in token)
            if "JobId" in fields:
                self.jobs[fields["JobId"]] = fields

    def _run(self, interval: float) -> None:
        while not self.stop.wait(interval):
            self.poll()

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.poll()

    def elapsed_s(self, job_id: str) -> float:
        fields = self.jobs[job_id]
        start, end = (datetime.fromisoformat(fields[k]) for k in ("StartTime", "EndTime"))
        return (end - start).total_seconds()


def run_on_slurm(workdir: Path, config: Path, env: dict[str, str], args: argparse.Namespace) -> dict:
    """The study through layercrit-slurm: prepare, M shard allocations, finish."""
    launcher = [str(Path(sys.executable).parent / "layercrit-slurm"), "--allocations", str(args.slurm_allocations),
                "--gpus", "0", "--cpus", str(args.cores), "--mem", args.slurm_mem, "--partition", args.slurm_partition,
                "--wait", "--", "-s", str(REPO / "Snakefile"), "--configfile", str(config)]  # fmt: skip
    started = time.time()
    slurm = SlurmJobs()
    proc = subprocess.run(launcher, cwd=workdir, env={**os.environ, **env}, capture_output=True, text=True)
    slurm.close()
    (workdir / "layercrit-slurm.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"layercrit-slurm failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return {"started": started, "ended": time.time(), "memory": [], "command": launcher, "slurm": slurm}


def slurm_allocations(slurm: SlurmJobs, results: Path) -> dict:
    """Allocation seconds per step (Slurm's start and end times), and per reset job beyond its
    forward passes (start-up, DAG building and every job's overhead included)."""
    steps = {f"{f.get('JobName')} {job_id}": slurm.elapsed_s(job_id) for job_id, f in sorted(slurm.jobs.items()) if f.get("JobState") == "COMPLETED"}
    rows = [json.loads(p.read_text()) for p in results.glob("resets/*/*/*/*.json")]
    shard_ids = sorted({r["slurm_job_id"] for r in rows})
    shard_s = sum(slurm.elapsed_s(j) for j in shard_ids)
    forward = sum(r["forward_s"] for r in rows)
    return {
        "steps_elapsed_s": steps,
        "shard_allocations": len(shard_ids),
        "shard_allocation_s": shard_s,
        "allocation_s_per_reset_job": round(shard_s / len(rows), 4),
        "allocation_s_beyond_forward_per_reset_job": round((shard_s - forward) / len(rows), 4),
    }


def resume_sweep(workdir: Path, scheduler: str, stop_after: int, cores: int, options: tuple[str, ...] = ()) -> dict:
    """The resumed case: in a finished rehearsal, every reset result deleted, then the same
    command again (all 8,262 reset jobs ready at once, as after a kill or in a Slurm shard) until
    ``stop_after`` results exist; per-job overhead of those, with ``scheduler`` (and the
    Snakemake ``options`` given with it). ``gaps_s``: every job's overhead, in order;
    ``outside_gaps_s``: the same less the time inside the evaluation (Snakemake's own share)."""
    results = workdir / "results" / "paper_rehearsal"
    for path in results.glob("resets/*/*/*/*.json"):
        path.unlink()
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--cores", str(cores),
               "--configfile", str(workdir / "config.yaml"), "--scheduler", scheduler, *options, "--until", "reset"]  # fmt: skip
    started = time.time()
    with open(workdir / f"resume-{scheduler}.log", "w") as log:
        proc = subprocess.Popen(command, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        while proc.poll() is None and sum(1 for _ in results.glob("resets/*/*/*/*.json")) < stop_after:
            time.sleep(1)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    shutil.rmtree(workdir / ".snakemake" / "locks", ignore_errors=True)
    overheads = reset_overheads(results, window=stop_after)
    first = min(datetime.fromisoformat(json.loads(p.read_text())["created"]).timestamp() for p in results.glob("resets/*/*/*/*.json"))
    keep = ("reset_jobs", "overhead_s", "inside_evaluation_s", "forward_s", "gaps_s", "outside_gaps_s")
    return {"scheduler": scheduler, "first_result_after_s": round(first - started, 1), **{k: overheads[k] for k in keep}}


def reset_overheads(results: Path, window: int = 1000, max_gap_s: float = 5.0) -> dict:
    """Per-job overhead of the reset jobs in the order they finished (see job_overhead.py)."""
    rows = [json.loads(p.read_text()) for p in results.glob("resets/*/*/*/*.json")]
    rows.sort(key=lambda r: r["created"])
    times = [datetime.fromisoformat(r["created"]).timestamp() for r in rows]
    # gaps within one process: the Slurm shards run side by side, each its own Snakemake
    process = [r.get("slurm_job_id") for r in rows]
    last: dict = {}
    gaps, outside = [], []  # outside: the gap minus the job's whole evaluation (Snakemake's share)
    for t, r, proc in zip(times, rows, process):
        if proc in last and t - last[proc] <= max_gap_s:
            gaps.append((t - last[proc]) - r["forward_s"])
            outside.append((t - last[proc]) - r["wall_s"])
        last[proc] = t
    inside = [r["wall_s"] - r["forward_s"] for r in rows]
    middle = max(0, len(gaps) // 2 - window // 2)
    return {
        "reset_jobs": len(rows),
        "gaps_left_out": len(rows) - len(set(process)) - len(gaps),
        "overhead_s": {"all": quantiles(gaps), "first": quantiles(gaps[:window]),
                       "middle": quantiles(gaps[middle : middle + window]), "last": quantiles(gaps[-window:])},  # fmt: skip
        "inside_evaluation_s": quantiles(inside),
        "forward_s": quantiles([r["forward_s"] for r in rows]),
        "forward_from": dict(collections.Counter(r.get("forward_from", "?") for r in rows)),
        "models_in_order": list(dict.fromkeys(r["model"] for r in rows)),
        "gaps_s": gaps,
        "outside_gaps_s": outside,
        "spans": {m: (min(t for t, r in zip(times, rows) if r["model"] == m), max(t for t, r in zip(times, rows) if r["model"] == m))
                  for m in dict.fromkeys(r["model"] for r in rows)},  # fmt: skip
    }


def stage_walls(results: Path, started: float) -> dict[str, dict]:
    stages = {}
    for stage, patterns in STAGES.items():
        times = [p.stat().st_mtime for pattern in patterns for p in results.glob(pattern)]
        if times:
            stages[stage] = {"files": len(times), "first_s": round(min(times) - started, 1), "last_s": round(max(times) - started, 1)}
    return stages


def memory_per_model(samples: list[tuple[float, int]], spans: dict[str, tuple[float, float]], interval: float = 1.0) -> dict[str, float]:
    """Peak RSS (MiB) while each model's reset jobs ran (from its first result to one sample
    after its last)."""
    peaks = {}
    for model, (start, end) in spans.items():
        inside = [rss for t, rss in samples if start <= t <= end + interval]
        if inside:
            peaks[model] = round(max(inside) / 2**20)
    return peaks


def profile_summary(path: Path, top: int = 60) -> dict | None:
    """py-spy's raw stacks -> the share of busy samples per function (inclusive), main thread
    (Snakemake's scheduler) and job threads separately."""
    if not path.exists():
        return None
    inclusive: dict[str, collections.Counter] = {"scheduler": collections.Counter(), "jobs": collections.Counter()}
    totals = collections.Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if frames[-1].startswith(" (") or any(idle in frames[-1] for idle in ("wait (threading", "select (selectors")):
            continue  # waiting (a condition, the event loop's select), or a frame py-spy could not name
        part = "jobs" if "_bootstrap" in frames[0] else "scheduler"  # job threads vs the main thread
        totals[part] += int(count)
        for frame in set(frames):
            name, _, where = frame.partition(" (")
            inclusive[part][f"{name} ({where.split('/')[-1].split(':')[0]}"] += int(count)
    return {part: {"busy_samples": totals[part], "top": [(f, round(100 * n / totals[part], 1)) for f, n in inclusive[part].most_common(top)]}
            for part in inclusive if totals[part]}  # fmt: skip


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def rehearse(args: argparse.Namespace, workdir: Path, record: dict) -> dict:
    hosts = FakeHosts()
    try:
        t0 = time.time()
        zoo, env = fabricate_zoo(args.models, workdir, hosts)
        imagenet_folder(workdir / "val")
        setup_s = time.time() - t0
        config = yaml.safe_load((REPO / "config/config.yaml").read_text())
        config.update(study="paper_rehearsal", zoo=str(zoo), imagenet_val=str(workdir / "val"), device="cpu",
                      downloads=str(workdir / "downloads"))  # fmt: skip
        config["data"].update(subset_size=args.images, resize=args.crop * 256 // 224, crop=args.crop)
        results_csv = workdir / "published" / "results.csv"
        config["published"] = {"url": str(results_csv), "sha256": authors_results(zoo, results_csv)}
        if args.seeds is not None:
            config["reset"]["seeds"] = args.seeds
        if args.layers:
            config["reset"]["layers"] = {"include": args.layers}
        config_path = workdir / "config.yaml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        if args.slurm_allocations:
            run = run_on_slurm(workdir, config_path, env, args)
        else:
            run = run_workflow(workdir, config_path, args.cores, env, args.profile)
    finally:
        hosts.close()
    results = workdir / "results" / "paper_rehearsal"
    resets = reset_overheads(results)
    resets.pop("gaps_s"), resets.pop("outside_gaps_s")
    per_model = memory_per_model(run["memory"], resets.pop("spans"))
    peaks = list(per_model.values())
    return dict(
        record,
        command=("layercrit-slurm " + " ".join(run["command"][1:])) if args.slurm_allocations
        else f"snakemake --cores {args.cores} --configfile config.yaml",
        setup_s=round(setup_s, 1),
        wall_s=round(run["ended"] - run["started"], 1),
        stages=stage_walls(results, run["started"]),
        resets=resets,
        memory_mib={
            "peak": round(max(rss for _, rss in run["memory"]) / 2**20) if run["memory"] else None,
            "per_model_peak": per_model,
            "per_model_first_last": [peaks[0], peaks[-1]] if peaks else None,
            "per_model_min_max": [min(peaks), max(peaks)] if peaks else None,
        },
        disk_mib={name: round(du(workdir / name) / 2**20) for name in ("results", "downloads", ".snakemake")},
        profile=profile_summary(workdir / "profile.txt"),
        slurm=slurm_allocations(run["slurm"], results) if args.slurm_allocations else None,
    )


# Frames every sample of a thread passes through (interpreter, CLI, event loop, thread pool),
# left out of the docs' summary of a profile.
GENERIC_FRAMES = ("runpy", "<module>", "cli.py", "api.py", "base_events.py", "events.py", "runners.py", "threading.py",
                  "thread.py", "Workflow.execute", "Workflow.async_run", "local.py", "tasks.py")  # fmt: skip


def markdown(record: dict) -> str:
    """The record as docs/benchmarks.md shows it (so that no number there is typed by hand)."""
    r, o = record["resets"], record["resets"]["overhead_s"]
    lines = [
        f"{r['reset_jobs']:,} reset jobs of {len(r['models_in_order'])} models; `{record['command']}`; "
        f"{record['machine']['cpu']} ({record['machine'].get('cores', '?')} cores), {record['created'][:10]}.",
        "",
        "| stage | outputs | first (s) | last (s) |",
        "|---|---|---|---|",
        *(f"| {k} | {v['files']:,} | {v['first_s']:,} | {v['last_s']:,} |" for k, v in record["stages"].items()),
        "",
        f"Whole run: {record['wall_s']:,} s (plus {record['setup_s']} s to fabricate and serve the zoo).",
        "",
        "| reset jobs | per-job overhead, median | p90 | jobs measured |",
        "|---|---|---|---|",
        *(f"| {part} | {q['median']} s | {q['p90']} s | {q['n']:,} |" for part, q in o.items() if q),
        "",
        f"Inside the evaluation besides the forward pass: median {r['inside_evaluation_s']['median']} s "
        f"(p90 {r['inside_evaluation_s']['p90']} s); forward pass median {r['forward_s']['median']} s; "
        f"gaps over 5 s left out: {r['gaps_left_out']}.",
        "",
        (f"Memory (RSS of Snakemake and its job processes): peak {record['memory_mib']['peak']:,} MiB; "
         f"peak while one model's reset jobs ran, first and last model {record['memory_mib']['per_model_first_last']} MiB, "
         f"lowest and highest {record['memory_mib']['per_model_min_max']} MiB. " if record["memory_mib"]["peak"] else
         "Memory: not sampled (the Snakemake processes ran in Slurm allocations). ")
        + "Disk: " + ", ".join(f"{k} {v:,} MiB" for k, v in record["disk_mib"].items()) + ".",
    ]  # fmt: skip
    if record.get("resumed"):
        lines += ["", "Resumed (every reset result deleted, the same command again: all 8,262 reset jobs ready at once; "
                  "stopped after the first results):", "",
                  "| scheduler | reset jobs | per-job overhead, median | p90 | inside the evaluation, median | forward pass, median | first result after |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        for name, res in record["resumed"].items():
            q = res["overhead_s"]["all"]
            lines.append(f"| {name} | {res['reset_jobs']:,} | {q['median']} s | {q['p90']} s | {res['inside_evaluation_s']['median']} s "
                         f"| {res['forward_s']['median']} s | {res['first_result_after_s']} s |")  # fmt: skip
    if record.get("slurm"):
        sl = record["slurm"]
        lines += ["", f"On Slurm: {sl['shard_allocations']} shard allocations held {sl['shard_allocation_s']:,.0f} s for "
                  f"{r['reset_jobs']:,} reset jobs: {sl['allocation_s_per_reset_job']} s per reset job, of which "
                  f"**{sl['allocation_s_beyond_forward_per_reset_job']} s beyond its forward passes** (start-up and DAG building "
                  "included). Steps (s): " + ", ".join(f"{k} {v:,.0f}" for k, v in sl["steps_elapsed_s"].items()) + "."]  # fmt: skip
    if record.get("profile"):
        for part, summary in record["profile"].items():
            top = [f"{name}) {share} %" for name, share in summary["top"] if name.strip(" (") and not any(g in name for g in GENERIC_FRAMES)][:12]
            lines += ["", f"Profile, {part} ({summary['busy_samples']:,} busy samples at 20 Hz), inclusive: " + "; ".join(top) + "."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", help="a part of the paper zoo (default: all 51)")
    parser.add_argument("--layers", nargs="+", help="reset only these layers (default: the paper's 54)")
    parser.add_argument("--seeds", nargs="+", type=int, help="default: the paper's 0 1 2")
    parser.add_argument("--images", type=int, default=2, help="evaluation images (the subset size)")
    parser.add_argument("--crop", type=int, default=64, help="image side (the paper's 224; smaller keeps a CPU forward cheap)")
    parser.add_argument("--cores", type=int, default=os.cpu_count())
    parser.add_argument("--profile", action="store_true", help="sample the Snakemake process with py-spy")
    parser.add_argument("--slurm-allocations", type=int, help="run through layercrit-slurm with this many shard allocations")
    parser.add_argument("--slurm-partition", default="layercrit", help="partition (default: the test cluster's)")
    parser.add_argument("--slurm-mem", default="4G", help="memory per allocation")
    parser.add_argument("--workdir", type=Path, help="keep everything here (default: a temporary directory)")
    parser.add_argument("--resume", type=Path, metavar="WORKDIR", help="the resumed case in a finished rehearsal's --workdir; "
                        "adds it to the record --out under 'resumed'")  # fmt: skip
    parser.add_argument("--scheduler", default="by-priority", help="with --resume: Snakemake's --scheduler")
    parser.add_argument("--stop-after", type=int, default=1200, help="with --resume: reset results after which it stops")
    started = harness.start(parser, "paper_scale", markdown, not_settings=("workdir", "resume", "scheduler", "stop_after"))
    if started is None:
        return
    args, record = started
    if args.resume:
        record = json.loads(args.out.read_text())
        resumed = resume_sweep(args.resume, args.scheduler, args.stop_after, args.cores)
        resumed.pop("gaps_s"), resumed.pop("outside_gaps_s")
        record.setdefault("resumed", {})[args.scheduler] = resumed
        harness.write_record(record, args.out)
        print(json.dumps(record["resumed"][args.scheduler], indent=1))
        return
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=False)
        record = rehearse(args, args.workdir, record)
    else:
        with tempfile.TemporaryDirectory(prefix="paper_scale.") as tmp:
            record = rehearse(args, Path(tmp), record)
    harness.finish(args, record, markdown)


if __name__ == "__main__":
    main()
