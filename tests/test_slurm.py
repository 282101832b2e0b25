"""The Slurm profile (profiles/slurm) on a real one-node Slurm cluster started for the test.

tests/slurm/start_slurm.sh installs Slurm and munge with apt-get where they are missing, writes
/etc/slurm/slurm.conf with two fake GPUs and starts the daemons; the module fixture stops them
again. Needs root and apt-get (or Slurm already installed): skipped elsewhere, except under CI,
where a skip would hide a broken profile and so fails instead.

A tiny study goes through `--profile profiles/slurm` with only what this machine needs changed
(partition, small memory, no accounting database, short status intervals, smaller groups), and
the test checks what Slurm actually did: every job ran under Slurm, GPU rules got one GPU and
CPU rules none, reset jobs were bundled into fewer Slurm jobs, and a job asking for more GPUs
than any node has fails with Slurm's own message.
"""

import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
import yaml

from conftest import REPO, run_snakemake, snakemake_env, tiny_study

pytestmark = pytest.mark.slow

SLURM_SCRIPTS = Path(__file__).resolve().parent / "slurm"
PROFILE = REPO / "profiles" / "slurm" / "config.yaml"
MODEL = "demo_baseline"
LAYERS = ["conv1", "layer1.0.conv1", "fc"]
SEEDS = [0, 1]
RESETS_PER_GROUP = 3  # 6 reset jobs -> 2 Slurm jobs
TEST_MEM_MB = 500  # every job fits a small CI machine (DefMemPerCPU is 500 too)


def _unavailable(reason):
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"Slurm test cluster unavailable on CI: {reason}")
    pytest.skip(f"Slurm test cluster unavailable: {reason}")


@pytest.fixture(scope="module")
def slurm_plugin():
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        _unavailable("snakemake-executor-plugin-slurm is not installed (pip install snakemake-executor-plugin-slurm)")


@pytest.fixture(scope="module")
def slurm_cluster(slurm_plugin):
    """A running one-node cluster; yields its partition. Stopped afterwards if this fixture started it."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        _unavailable("needs root (to install Slurm and run slurmd)")
    if shutil.which("apt-get") is None and shutil.which("slurmctld", path=os.environ.get("PATH", "") + ":/usr/sbin") is None:
        _unavailable("Slurm is not installed and apt-get is not available")
    proc = subprocess.run([str(SLURM_SCRIPTS / "start_slurm.sh")], capture_output=True, text=True, timeout=900)
    if proc.returncode == 3:
        _unavailable(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "start_slurm.sh exited 3")
    if proc.returncode != 0:
        pytest.fail(f"start_slurm.sh failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    started_here = "already running" not in proc.stderr
    partition = proc.stdout.strip().splitlines()[-1]
    try:
        yield partition
    finally:
        if started_here:
            subprocess.run([str(SLURM_SCRIPTS / "stop_slurm.sh")], capture_output=True, text=True, timeout=120)


def _workflow_rules_with_outputs():
    """Rules of the workflow that make files (the target rules `all`, `figures`, ... make none)."""
    rules = {}
    for smk in [REPO / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]:
        # (rules may be indented, inside `if config[...]:`); a rule's text ends at the next rule
        blocks = re.split(r"^[ \t]*(?:rule|checkpoint) (\w+):[ \t]*\n", smk.read_text(), flags=re.M)
        for name, body in zip(blocks[1::2], blocks[2::2]):
            rules[name] = bool(re.search(r"^\s+output:", body, flags=re.M))
    return {name for name, has_output in rules.items() if has_output}


def test_profile_settings():
    """The profile itself: Slurm executor, runtime and memory for every rule, grouped evaluations."""
    profile = yaml.safe_load(PROFILE.read_text())
    assert profile["executor"] == "slurm"
    rules = _workflow_rules_with_outputs()
    assert {"train_model", "baseline", "reset", "aggregate_tables", "plot_figure"} <= rules
    missing = rules - set(profile["set-resources"])
    assert not missing, f"rules without runtime/mem_mb in {PROFILE.relative_to(REPO)}: {sorted(missing)}"
    for rule in rules:
        assert {"runtime", "mem_mb"} <= set(profile["set-resources"][rule]), rule
    assert "reset=resets" in profile["groups"]
    assert any(entry.startswith("resets=") for entry in profile["group-components"])
    # grouped rules take the group's one slot, so that a group asks for one member's resources
    grouped = {entry.split("=")[0] for entry in profile["groups"]}
    for rule in grouped:
        assert profile["set-resources"][rule].get("group_slot") == 1, rule
    assert "group_slot=1" in profile["resources"] and "group_slot=local" in profile["set-resource-scopes"]
    # nothing cluster-specific is baked in
    assert "slurm_partition" not in profile["default-resources"]
    assert "slurm_account" not in profile["default-resources"]


def test_profile_dry_run(slurm_plugin, tmp_path):
    """The profile parses and plans the tiny study (no cluster needed for a dry run)."""
    config = _study(tmp_path)
    proc = run_snakemake(tmp_path, "--configfile", str(config), "--profile", str(PROFILE.parent), "-n", "--quiet", "rules", slurm=True)
    assert "reset" in proc.stdout


def _study(workdir: Path) -> Path:
    # device: auto, so baseline and reset ask for a GPU; on this machine torch sees none and the
    # jobs compute on the CPU, while Slurm still allocates one (fake) GPU to each.
    config = tiny_study(workdir, models=[MODEL], seeds=SEEDS, epochs=2, device="auto")
    cfg = yaml.safe_load(config.read_text())
    cfg["reset"]["layers"] = {"include": LAYERS}
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return config


def _test_profile(directory: Path, partition: str) -> Path:
    """profiles/slurm with only what this one-node test cluster needs changed."""
    profile = yaml.safe_load(PROFILE.read_text())
    profile["default-resources"]["slurm_partition"] = f"'{partition}'"
    profile["default-resources"]["mem_mb"] = TEST_MEM_MB
    profile["max-threads"] = min(int(profile["max-threads"]), os.cpu_count() or 1)
    for resources in profile["set-resources"].values():
        resources["mem_mb"] = min(int(resources["mem_mb"]), TEST_MEM_MB)
    profile["group-components"] = [
        f"resets={RESETS_PER_GROUP}" if entry.startswith("resets=") else entry for entry in profile["group-components"]
    ]
    profile.update(
        {
            # no accounting database here: squeue instead of sacct (MinJobAge=600 in slurm.conf)
            "slurm-status-command": "squeue",
            "slurm-init-seconds-before-status-checks": 2,
            "slurm-no-account": True,
            "slurm-keep-successful-logs": True,
            "retries": 0,
            "latency-wait": 5,
        }
    )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return directory


@pytest.fixture(scope="module")
def slurm_run(slurm_cluster, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("slurm-study")
    config = _study(workdir)
    profile = _test_profile(tmp_path_factory.mktemp("slurm-profile"), slurm_cluster)
    with pytest.MonkeyPatch.context() as mp:
        # jobs inherit the submitting environment (sbatch --export=ALL): no GPU may leak in
        for var in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID", "SLURM_CONF"):
            mp.delenv(var, raising=False)
        start = time.monotonic()
        proc = run_snakemake(workdir, "--configfile", str(config), "--profile", str(profile), timeout=900, slurm=True)
        elapsed = time.monotonic() - start
    print(f"Slurm run: {elapsed:.0f} s")
    return {"workdir": workdir, "config": config, "profile": profile, "partition": slurm_cluster, "proc": proc}


def _results(workdir: Path) -> Path:
    return workdir / "results" / "tiny"


def _reset_records(workdir):
    files = sorted((_results(workdir) / "resets" / "randomize").glob("*/*/seed*.json"))
    return {f.relative_to(_results(workdir)).as_posix(): json.loads(f.read_text()) for f in files}


def _slurm_job(job_id: str) -> dict:
    """`scontrol show job` of a finished job (slurmctld keeps it for MinJobAge = 10 minutes)."""
    out = subprocess.run(["scontrol", "show", "job", "-d", "-o", str(job_id)], capture_output=True, text=True, check=True).stdout
    fields = {}
    for token in out.split():
        key, sep, value = token.partition("=")
        if sep and key not in fields:
            fields[key] = value
    return fields


def _gpus(job: dict) -> int:
    """GPUs Slurm allocated to a job: `JOB_GRES=gpu:1` in `scontrol show job -d` (TRES lists GPUs only
    where accounting tracks them), cross-checked with what was requested (`TresPerJob=gres:gpu:1`)."""
    allocated = 0
    for part in job.get("JOB_GRES", "(null)").split(","):
        name, _, count = part.partition(":")
        if name == "gpu":
            allocated = int(count.split("(")[0])
    requested = 0
    for part in job.get("TresPerJob", "").split(","):
        if part.startswith(("gres:gpu:", "gres/gpu:", "gpu:")):
            requested = int(part.rsplit(":", 1)[1])
    assert allocated == requested, (job.get("JOB_GRES"), job.get("TresPerJob"))
    return allocated


def _provenance_records_gpus(monkeypatch) -> bool:
    """Whether layercrit.io.provenance() records CUDA_VISIBLE_DEVICES as `cuda_visible_devices`
    (then the jobs' own view of their GPUs is checked too)."""
    from layercrit.io import provenance

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "layercrit-test-marker")
    return provenance().get("cuda_visible_devices") == "layercrit-test-marker"


def test_every_result_made_under_slurm(slurm_run):
    workdir = slurm_run["workdir"]
    resets = _reset_records(workdir)
    assert len(resets) == len(LAYERS) * len(SEEDS)
    for path, record in resets.items():
        assert record.get("slurm_job_id"), f"{path} was not made inside a Slurm job"
        assert record["device"].startswith("cpu")  # no CUDA here: device auto fell back to the CPU
    for path in (f"baselines/{MODEL}.json", f"models/{MODEL}.training.json", "tables/randomize/provenance.json"):
        assert json.loads((_results(workdir) / path).read_text()).get("slurm_job_id"), path
    figures = list((_results(workdir) / "figures" / "randomize").glob("*.png"))
    assert figures and (_results(workdir) / "tables/randomize/correlations.csv").is_file()


def test_reset_jobs_grouped(slurm_run):
    resets = _reset_records(slurm_run["workdir"])
    job_ids = {record["slurm_job_id"] for record in resets.values()}
    # group-components=3: six independent reset jobs become two Slurm jobs
    assert len(job_ids) == math.ceil(len(resets) / RESETS_PER_GROUP) < len(resets)
    logs = slurm_run["workdir"] / ".snakemake" / "slurm_logs"
    assert {p.stem for p in (logs / "group_resets_reset").glob("*.log")} == job_ids
    for job_id in job_ids:
        job = _slurm_job(job_id)
        assert job["JobState"] == "COMPLETED"
        assert job["Partition"] == slurm_run["partition"]
        # a group asks for one member's CPUs and memory (members run one after another) ...
        assert job["NumCPUs"] == "1"
        assert job["TRES"].startswith("cpu=1,mem=500M")


def test_gpu_rules_get_one_gpu_cpu_rules_none(slurm_run, monkeypatch):
    workdir = slurm_run["workdir"]
    resets = _reset_records(workdir)
    gpu_jobs = {r["slurm_job_id"] for r in resets.values()}
    baseline = json.loads((_results(workdir) / f"baselines/{MODEL}.json").read_text())
    gpu_jobs.add(baseline["slurm_job_id"])
    training = json.loads((_results(workdir) / f"models/{MODEL}.training.json").read_text())
    tables = json.loads((_results(workdir) / "tables/randomize/provenance.json").read_text())
    cpu_jobs = {training["slurm_job_id"], tables["slurm_job_id"]}
    for job_id in gpu_jobs:
        assert _gpus(_slurm_job(job_id)) == 1, f"GPU job {job_id}: {_slurm_job(job_id)}"
    for job_id in cpu_jobs:
        assert _gpus(_slurm_job(job_id)) == 0, f"CPU job {job_id}: {_slurm_job(job_id)}"
    # As seen from inside the jobs, once provenance records the visible GPUs.
    if _provenance_records_gpus(monkeypatch):
        for path, record in resets.items():
            # one GPU, as Slurm numbers it inside the job (the fake devices are 0 and 1)
            assert record.get("cuda_visible_devices") in ("0", "1"), f"{path}: {record.get('cuda_visible_devices')!r}"
        assert training.get("cuda_visible_devices") in (None, ""), training.get("cuda_visible_devices")


def test_too_many_gpus_fails_clearly(slurm_run, tmp_path):
    """A job asking for more GPUs than any node has is refused by sbatch, and Snakemake says why."""
    workdir = tmp_path / "study"
    shutil.copytree(slurm_run["workdir"], workdir, ignore=shutil.ignore_patterns(".snakemake"))
    target = f"results/tiny/baselines/{MODEL}.json"
    proc = run_snakemake(
        workdir,
        "--configfile",
        str(workdir / "config.yaml"),
        "--profile",
        str(slurm_run["profile"]),
        "--set-resources",
        "baseline:gpu=3",
        f"baseline:mem_mb={TEST_MEM_MB}",
        # baseline ungrouped: when sbatch refuses a *group* job, the plugin (2.8.0) reports the
        # failure without sbatch's reason (snakemake-executor-plugin-slurm issue #456)
        "--groups",
        "reset=resets",
        "--forcerun",
        "baseline",
        "--",
        target,
        check=False,
        timeout=300,
        slurm=True,
    )
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert "sbatch failed" in output and "Requested node configuration is not available" in output, output[-3000:]


def test_device_cuda_is_left_to_the_compute_nodes(slurm_run, tmp_path):
    """The submitting host has no GPU while the nodes may: a Slurm run with `device: cuda` is
    not refused up front (a local run is), its GPU jobs are submitted and decide on the node."""
    workdir = tmp_path / "study"
    shutil.copytree(slurm_run["workdir"], workdir, ignore=shutil.ignore_patterns(".snakemake"))
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    config["device"] = "cuda"
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    proc = run_snakemake(
        workdir, "--configfile", str(workdir / "config.yaml"), "--profile", str(slurm_run["profile"]),
        "--forcerun", "baseline", "--", f"results/tiny/baselines/{MODEL}.json",
        check=False, timeout=300, slurm=True, env={"CUDA_VISIBLE_DEVICES": ""},
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert "needs GPU 0, but this machine has" not in output  # the local check did not apply
    # the node here has only fake GPUs, so torch on the node refuses: that is where it is decided
    logs = "".join(p.read_text() for p in (workdir / ".snakemake" / "slurm_logs").rglob("*.log"))
    logs += (workdir / f"results/tiny/logs/baselines/{MODEL}.log").read_text()
    assert proc.returncode != 0 and "torch sees no GPU" in logs + output, output[-3000:]


# ----------------------------------------------------------------------------------------------
# layercrit-slurm: the study as a few allocations, each running the local, in-process Snakemake

LAUNCHER = Path(sys.executable).parent / "layercrit-slurm"
METRICS = ["criticality", "cosine", "l1", "l2", "kl", "top1_agreement", "top1", "top5", "recovered_acc", "n_nonfinite"]


def _launch_command(partition: str, allocations: int = 2) -> list[str]:
    """The one documented command, as a user on the login node runs it."""
    return [
        str(LAUNCHER), "--allocations", str(allocations), "--gpus", "1", "--cpus", "1", "--mem", f"{TEST_MEM_MB}M",
        "--partition", partition, "--time", "00:10:00", "--prepare-time", "00:10:00", "--finish-time", "00:10:00",
        "--wait", "--", "-s", str(REPO / "Snakefile"), "--configfile", "config.yaml",
    ]  # fmt: skip


def _launch_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID", "SLURM_CONF")}


def _path_without(directory: Path, *commands: str) -> str:
    """$PATH with ``commands`` gone: each folder of it that holds one is replaced by a folder of
    links to everything else in it."""
    folders = []
    for folder in map(Path, os.environ["PATH"].split(os.pathsep)):
        if any((folder / command).exists() for command in commands):
            mirror = directory / f"{len(folders)}-{folder.name}"
            mirror.mkdir(parents=True)
            for entry in folder.iterdir():
                if entry.name not in commands:
                    (mirror / entry.name).symlink_to(entry)
            folder = mirror
        folders.append(str(folder))
    return os.pathsep.join(folders)


def _launch(workdir: Path, partition: str, allocations: int = 2) -> subprocess.CompletedProcess:
    """Run the launcher (two allocations unless told) until every allocation has ended; it must succeed."""
    proc = subprocess.run(_launch_command(partition, allocations), cwd=workdir, capture_output=True, text=True, timeout=600, env=_launch_env())
    logs = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted((workdir / "logs/slurm").glob("*.out")))
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}\n{logs}"
    return proc


@pytest.fixture(scope="module")
def allocations_run(slurm_run, tmp_path_factory):
    """The Slurm run's study (data, model, baseline made) with its reset results, tables and
    figures removed, made again by layercrit-slurm in two allocations."""
    workdir = tmp_path_factory.mktemp("slurm-allocations")
    shutil.copytree(slurm_run["workdir"], workdir, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".snakemake"))
    for part in ("resets", "tables", "figures"):
        shutil.rmtree(_results(workdir) / part)
    proc = _launch(workdir, slurm_run["partition"])
    return {"workdir": workdir, "partition": slurm_run["partition"], "proc": proc}


def test_allocations_make_every_result_in_parallel_allocations(allocations_run):
    workdir = allocations_run["workdir"]
    resets = _reset_records(workdir)
    assert len(resets) == len(LAYERS) * len(SEEDS)  # one result file per (model, layer, seed)
    tasks = {record["slurm_job_id"] for record in resets.values()}
    assert len(tasks) == 2, tasks  # the two shards, one allocation each
    array_ids = set()
    for job_id in tasks:
        job = _slurm_job(job_id)
        assert job["JobState"] == "COMPLETED" and job["JobName"] == "layercrit-shards"
        assert _gpus(job) == 1
        array_ids.add(job["ArrayJobId"])
    assert len(array_ids) == 1  # one job array, submitted by the one command
    for record in resets.values():  # ran as threads of the allocation's one Snakemake process
        assert record["device"].startswith("cpu")
    assert (_results(workdir) / "tables/randomize/summary.csv").is_file()
    assert list((_results(workdir) / "figures/randomize").glob("*.png"))
    finish = json.loads((_results(workdir) / "tables/randomize/provenance.json").read_text())
    assert _slurm_job(finish["slurm_job_id"])["JobName"] == "layercrit-finish"
    assert _gpus(_slurm_job(finish["slurm_job_id"])) == 0


def test_allocations_give_the_results_of_a_local_run(allocations_run, tmp_path):
    workdir = allocations_run["workdir"]
    local = tmp_path / "local"
    shutil.copytree(workdir, local, ignore=shutil.ignore_patterns(".snakemake", "logs"))
    shutil.rmtree(_results(local) / "resets")
    run_snakemake(local, "--configfile", str(local / "config.yaml"), "--cores", "2", "--until", "reset")
    ours, theirs = _reset_records(workdir), _reset_records(local)
    assert ours.keys() == theirs.keys()
    for path in ours:  # the same device and precision: bit for bit
        assert {k: ours[path][k] for k in METRICS} == {k: theirs[path][k] for k in METRICS}, path
        assert "slurm_job_id" not in theirs[path]


def test_allocations_rerun_recomputes_exactly_a_deleted_result(allocations_run):
    workdir = allocations_run["workdir"]
    before = {f: f.read_bytes() for f in (_results(workdir) / "resets/randomize").rglob("seed*.json")}
    victim = sorted(before)[2]
    victim.unlink()
    _launch(workdir, allocations_run["partition"])
    after = {f: f.read_bytes() for f in (_results(workdir) / "resets/randomize").rglob("seed*.json")}
    assert after.keys() == before.keys()
    assert [f for f in before if after[f] != before[f]] == [victim]
    old, new = json.loads(before[victim]), json.loads(after[victim])
    assert {k: new[k] for k in METRICS} == {k: old[k] for k in METRICS}
    assert new["slurm_job_id"] not in {json.loads(v)["slurm_job_id"] for f, v in before.items()}


def test_the_finish_step_never_evaluates_a_missing_result_on_its_own_device(allocations_run, tmp_path):
    """It runs with --resources gpu=0 and LAYERCRIT_EVALUATIONS=none (what its batch command
    exports): the run stops before its first job, naming the reset it would have evaluated. (A
    run with gpu=0 alone on a machine without GPUs evaluates on the CPU: issue 29 M3.)"""
    workdir = tmp_path / "study"
    shutil.copytree(allocations_run["workdir"], workdir, ignore=shutil.ignore_patterns(".snakemake"))
    victim = next((_results(workdir) / "resets/randomize").rglob("seed*.json"))
    victim.unlink()
    proc = run_snakemake(workdir, "--configfile", str(workdir / "config.yaml"), "--cores", "1", "--resources", "gpu=0", check=False,
                         env={"LAYERCRIT_EVALUATIONS": "none"})  # fmt: skip
    assert proc.returncode != 0 and not victim.exists()
    assert "This run has 1 reset job(s) to evaluate, but this step evaluates nothing" in proc.stdout + proc.stderr


def test_a_failed_and_a_cancelled_shard_fail_the_command_and_the_same_command_resumes(allocations_run, tmp_path):
    """With --wait, the exit status and the last lines say which allocation did not complete, in
    what state, where its log is, and the command that resumes; that command then computes exactly
    what is missing. (Before, the command exited 0: `sbatch --wait` on the finish step, cancelled
    because a shard failed, returns 0.) Three shards of two reset jobs each, in model, seed, layer
    order: the second fails (the folder of its seed-0 `fc` result is a file: Snakemake stops), the
    third is cancelled before it starts. The launcher runs where Slurm's accounting command `sacct`
    is not installed (issue 30 C6: the wait crashed with FileNotFoundError there, when slurmctld
    had forgotten the cancelled task)."""
    workdir = tmp_path / "study"
    shutil.copytree(allocations_run["workdir"], workdir, ignore=shutil.ignore_patterns(".snakemake", "logs"))
    original = _reset_records(workdir)
    shutil.rmtree(_results(workdir) / "resets")
    blocker = _results(workdir) / "resets/randomize" / MODEL / "fc"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("a file where the results of layer fc go")
    command = _launch_command(allocations_run["partition"], allocations=3)
    env = {**_launch_env(), "PATH": _path_without(tmp_path / "bin", "sacct")}
    launcher = subprocess.Popen(command, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        shown, array = [], None
        for line in launcher.stdout:
            shown.append(line)
            if match := re.match(r"shards: Slurm job (\d+)", line):
                array = match[1]
                subprocess.run(["scancel", f"{array}_3"], check=True)
                break
        out, err = launcher.communicate(timeout=600)
    finally:
        launcher.kill()
    output = "".join(shown) + out + err
    assert array and launcher.returncode == 1, output
    last = err.strip().splitlines()
    failed = next(line for line in last if f"shards (Slurm job {array}_2)" in line)
    assert f"FAILED (NonZeroExitCode, exit code 1:0); log logs/slurm/shards-{array}_2.out" in failed, output
    assert f"{MODEL}/fc" in (workdir / f"logs/slurm/shards-{array}_2.out").read_text()  # Snakemake's error
    cancelled = next(line for line in last if f"shards (Slurm job {array}_3)" in line)
    # slurmctld forgets a task cancelled while pending at once, and this cluster keeps no accounting
    assert re.search(r": (CANCELLED|UNKNOWN)\b.*; it never started \(no log\)$", cancelled), output
    assert "UNKNOWN" not in cancelled or "sacct is not installed here" in cancelled, cancelled
    assert re.search(r"finish \(Slurm job \d+\): CANCELLED \(DependencyNeverSatisfied, a step before it did not complete\)", err), output
    assert f"{array}_1)" not in err  # the first shard completed
    assert last[-1] == "  " + shlex.join(["layercrit-slurm", *command[1:]])
    kept = _reset_records(workdir)
    first_shard = {f"resets/randomize/{MODEL}/{layer}/seed0.json" for layer in LAYERS[:2]}
    assert first_shard <= kept.keys() and f"resets/randomize/{MODEL}/fc/seed0.json" not in kept

    blocker.unlink()
    _launch(workdir, allocations_run["partition"], allocations=3)
    after = _reset_records(workdir)
    assert after.keys() == original.keys()
    assert {path: after[path] for path in kept} == kept  # made once, not again
    for path in after.keys() - kept.keys():  # the missing ones, as the first run made them
        assert {k: after[path][k] for k in METRICS} == {k: original[path][k] for k in METRICS}, path
        assert after[path]["slurm_job_id"] not in {record["slurm_job_id"] for record in kept.values()}


# Without the test cluster: the sbatch commands a launch plans (--dry-run), the checks before it
# submits, and how it reads Slurm's answers (fake Slurm commands).


def _planned(*options: str, snakemake: Sequence[str] = ("--configfile", "config/demo.yaml"), check: bool = True):
    """The sbatch command line of each step (by name), for the demo study; or the failed launch."""
    proc = subprocess.run([str(LAUNCHER), *options, "--cpus", "1", "--dry-run", "--", *snakemake],
                          capture_output=True, text=True, cwd=REPO, env=snakemake_env())  # fmt: skip
    if not check:
        return proc
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {re.search(r"--job-name=layercrit-(\w+)", line).group(1): line for line in proc.stdout.splitlines() if line.startswith("sbatch")}


def test_shards_do_not_share_snakemakes_lock():
    """Shards of one study run side by side in one directory: a shard that ends must not remove
    the lock folder under another (FileNotFoundError .snakemake/locks/0.input.lock, seen in the
    re-run above). Their outputs are disjoint, so the shards run without Snakemake's lock; the
    prepare and finish steps, which run alone, keep it."""
    steps = _planned("--allocations", "3")
    assert "--nolock" in steps["shards"]
    assert "--nolock" not in steps["prepare"] and "--nolock" not in steps["finish"]


def _fake_commands(directory: Path, **scripts: str) -> dict[str, str]:
    """An environment in which Slurm's commands are the given shell scripts (their bodies)."""
    directory.mkdir(exist_ok=True)
    for name, body in scripts.items():
        (directory / name).write_text(f"#!/bin/sh\n{body}\n")
        (directory / name).chmod(0o755)
    env = snakemake_env()
    return {**env, "PATH": f"{directory}{os.pathsep}{env['PATH']}"}


def _launch_tiny_study(workdir: Path, allocations: int, env: dict[str, str]) -> subprocess.CompletedProcess:
    command = [str(LAUNCHER), "--allocations", str(allocations), "--cpus", "1", "--", "-s", str(REPO / "Snakefile"), "--configfile", "config.yaml"]
    return subprocess.run(command, capture_output=True, text=True, cwd=workdir, env=env)


def test_more_allocations_than_reset_jobs_are_refused_before_anything_is_submitted(tmp_path):
    """Each allocation runs a part of the reset jobs, at least one: with more allocations than
    jobs a shard fails in its allocation. The launcher counts the jobs of the study the steps will
    run (the Snakemake options after '--') and refuses before the first sbatch."""
    _study(tmp_path)  # 3 layers x 2 seeds: 6 reset jobs
    env = _fake_commands(tmp_path / "bin", sbatch=f'echo "$@" >>{tmp_path}/sbatch.log; echo 100')
    proc = _launch_tiny_study(tmp_path, 7, env)
    assert proc.returncode != 0 and not (tmp_path / "sbatch.log").exists(), proc.stdout + proc.stderr
    assert "--allocations 7 is more than the study's 6 reset jobs" in proc.stderr and "--allocations 6 or fewer" in proc.stderr
    proc = _launch_tiny_study(tmp_path, 6, env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    submitted = (tmp_path / "sbatch.log").read_text().splitlines()
    assert len(submitted) == 3 and "--array=1-6" in submitted[1]


def test_a_config_the_steps_would_refuse_is_refused_before_anything_is_submitted(tmp_path):
    """An integer written as a float, or a key given twice, fails every step on its node after it
    queued: the launcher reads the config as the steps do and refuses at once, naming the key."""
    config = _study(tmp_path)
    env = _fake_commands(tmp_path / "bin", sbatch=f'echo "$@" >>{tmp_path}/sbatch.log; echo 100')
    original = config.read_text()
    as_float = yaml.safe_load(original) | {"batch_size": 500.0}
    cases = {
        "batch_size: 500.0": ("config key 'batch_size': 500.0 is not of type 'integer'", yaml.safe_dump(as_float)),
        "device twice": ("key 'device' is given a second time", original + "device: cpu\n"),
    }
    for name, (message, text) in cases.items():
        config.write_text(text)
        proc = _launch_tiny_study(tmp_path, 2, env)
        assert proc.returncode != 0 and not (tmp_path / "sbatch.log").exists(), (name, proc.stdout + proc.stderr)
        assert "layercrit-slurm: nothing submitted" in proc.stderr and message in proc.stderr, (name, proc.stderr)


def test_a_refused_submission_cancels_the_steps_submitted_before_it(tmp_path):
    """Half a chain would run prepare alone, and hold Snakemake's lock when the same command runs
    again: when sbatch refuses a step, the steps before it are cancelled."""
    _study(tmp_path)
    env = _fake_commands(
        tmp_path / "bin",
        sbatch='case "$*" in *--array=*) echo "sbatch: error: Invalid generic resource (gres) specification" >&2; exit 1;; esac; echo 100',
        scancel=f'echo "$@" >>{tmp_path}/scancel.log',
    )
    proc = _launch_tiny_study(tmp_path, 2, env)
    assert proc.returncode == 1 and "sbatch failed for shards" in proc.stderr, proc.stdout + proc.stderr
    assert (tmp_path / "scancel.log").read_text() == "100\n"


def test_gpus_by_type_or_gres_are_the_evaluations_gpus_and_the_finish_step_gets_none():
    """A GPU type (--gpu-model, sbatch --gpus=<type>:<n>) or a gres request (--gres) instead of a
    bare count, under the names of Snakemake's Slurm executor; the evaluations of the prepare and
    shard steps may use as many GPUs as that asks for (--resources gpu=N); the finish step asks
    for none. GPUs through --sbatch-arg are refused: they would reach the finish step too, and
    the evaluations would not know of them."""
    for options, request, count in (
        (("--gres", "gpu:a100:2"), "--gres=gpu:a100:2", 2),
        (("--gres", "gpu,tmpdisk:100"), "--gres=gpu,tmpdisk:100", 1),
        (("--gpus", "2", "--gpu-model", "a100"), "--gpus=a100:2", 2),
        ((), "--gpus=1", 1),
    ):
        steps = _planned(*options)
        for step in ("prepare", "shards"):
            assert request in steps[step] and f"--resources gpu={count} " in steps[step], (options, steps[step])
            assert len(re.findall(r"--(gpus|gres)=", steps[step])) == 1, steps[step]
        assert "--gpus=" not in steps["finish"] and "--gres=" not in steps["finish"] and "--resources gpu=0" in steps["finish"]
    for options, message in (
        (("--gres", "gpu:a100:1", "--gpus", "1"), "--gres gpu:a100:1 already asks for GPUs"),
        (("--sbatch-arg=--gres=gpu:a100:1",), "layercrit-slurm sets --gres itself; use --gpus, --gpu-model or --gres"),
        (("--shards-sbatch-arg=-G2",), "layercrit-slurm sets -G itself"),
    ):
        proc = _planned(*options, check=False)
        assert proc.returncode != 0 and message in proc.stderr, (options, proc.stderr)


def test_sbatch_options_per_step_and_the_clusters_default_memory():
    """Options for one step only (--prepare-/--shards-/--finish-sbatch-arg) beside those for
    every step; no --mem unless given, so that the cluster's default memory applies (a fixed
    64G was refused on partitions of smaller nodes)."""
    steps = _planned("--sbatch-arg=--qos=high", "--shards-sbatch-arg=--constraint=a100", "--finish-sbatch-arg=--qos=cpu")
    assert all("--qos=high" in line and "--mem" not in line for line in steps.values())
    assert [name for name, line in steps.items() if "--constraint=a100" in line] == ["shards"]
    assert [name for name, line in steps.items() if "--qos=cpu" in line] == ["finish"]
    assert all("--mem=3G" in line for line in _planned("--mem", "3G").values())


def test_a_cpu_study_asks_for_no_gpus_and_a_gpu_study_cannot_go_without():
    """--gpus 0 is for studies on CPUs (device: cpu); with device auto or cuda every evaluation
    would refuse in its allocation for want of a GPU, so the launcher refuses first."""
    steps = _planned("--gpus", "0", snakemake=("--configfile", "config/demo.yaml", "--config", "device=cpu"))
    assert not any(re.search(r"--(gpus|gres)=", line) for line in steps.values())
    assert "--resources gpu=0" in steps["shards"] and "--resources gpu=0" in steps["prepare"]
    proc = _planned("--gpus", "0", check=False)  # the demo: device auto
    assert proc.returncode != 0 and "set device: cpu for a study on CPUs" in proc.stderr, proc.stderr


def test_requeue_puts_a_step_back_in_the_queue_when_slurm_signals_its_time_limit(tmp_path):
    """--requeue: sbatch --requeue (preemption, node failure) and a signal before the time limit,
    on which the step requeues itself, at most MAX_REQUEUES times; it then runs again and computes
    what is missing. Tried here with a fake scontrol: the batch shell requeues its job and still
    waits for Snakemake (its status is the step's)."""
    from layercrit.slurm.steps import MAX_REQUEUES, REQUEUE_SIGNAL_S, _requeueing

    assert all("--requeue" in line and f"--signal=B:USR1@{REQUEUE_SIGNAL_S}" in line for line in _planned("--requeue").values())
    env = _fake_commands(tmp_path / "bin", scontrol=f'echo "$@" >>{tmp_path}/scontrol.log')
    step = tmp_path / "step.sh"  # stands for Snakemake
    step.write_text(f"touch {tmp_path}/started; sleep 1; exit 3\n")
    for restarts, requeued in ((0, "requeue 42\n"), (MAX_REQUEUES, "")):
        (tmp_path / "started").unlink(missing_ok=True)
        (tmp_path / "scontrol.log").write_text("")
        batch = subprocess.Popen(["bash", "-c", _requeueing(f"sh {step}")], env={**env, "SLURM_JOB_ID": "42", "SLURM_RESTART_COUNT": str(restarts)})
        deadline = time.monotonic() + 10
        while not (tmp_path / "started").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        batch.send_signal(signal.SIGUSR1)
        assert batch.wait(timeout=10) == 3
        assert (tmp_path / "scontrol.log").read_text() == requeued, restarts


def test_the_wait_reads_accounting_for_forgotten_jobs_and_cancels_jobs_left_waiting(tmp_path, monkeypatch, capsys):
    """What the test cluster cannot show: a job slurmctld has forgotten (MinJobAge) is read from
    accounting (sacct, which real clusters have), and a job left pending on a dependency that can
    never be satisfied is cancelled, so that the wait ends; the report names each allocation that
    did not complete with its state and log."""
    from layercrit import slurm
    from layercrit.slurm import jobs as slurm_jobs

    env = _fake_commands(
        tmp_path / "bin",
        # scontrol --oneliner show job <id>
        scontrol=f"""case $4 in
            11) echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1;;
            12) echo "JobId=13 ArrayJobId=12 ArrayTaskId=1 JobState=COMPLETED Reason=None ExitCode=0:0"
                echo "JobId=12 ArrayJobId=12 ArrayTaskId=2 JobState=OUT_OF_MEMORY Reason=OutOfMemory ExitCode=0:125";;
            14) state=PENDING; [ -e {tmp_path}/scancel.log ] && state=CANCELLED
                echo "JobId=14 JobName=layercrit-finish JobState=$state Reason=DependencyNeverSatisfied Dependency=afterok:12_*(failed) ExitCode=0:0";;
            esac""",
        sacct='echo "11|COMPLETED|0:0"',
        scancel=f'echo "$@" >>{tmp_path}/scancel.log',
    )
    monkeypatch.setenv("PATH", env["PATH"])
    monkeypatch.setattr(slurm_jobs, "FIRST_POLL_S", 0.01)
    steps = [slurm.Step("prepare", "", 1, ""), slurm.Step("shards", "", 1, "", array=2), slurm.Step("finish", "", 0, "")]
    allocations = slurm_jobs.wait_for(list(zip(steps, ["11", "12", "14"])))
    assert [(a.job, a.state) for a in allocations] == [("11", "COMPLETED"), ("12_1", "COMPLETED"), ("12_2", "OUT_OF_MEMORY"), ("14", "CANCELLED")]
    assert (tmp_path / "scancel.log").read_text() == "14\n"
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs/shards-12_2.out").write_text("killed\n")
    capsys.readouterr()
    resume = ["layercrit-slurm", "--allocations", "2", "--", "--configfile", "c.yaml"]
    assert slurm_jobs.report(allocations, tmp_path / "logs", resume) == 1
    lines = capsys.readouterr().err.splitlines()
    assert lines[1:3] == [
        f"  shards (Slurm job 12_2): OUT_OF_MEMORY (OutOfMemory, exit code 0:125); log {tmp_path}/logs/shards-12_2.out",
        "  finish (Slurm job 14): CANCELLED (DependencyNeverSatisfied, a step before it did not complete); it never started (no log)",
    ]
    assert lines[-1] == "  layercrit-slurm --allocations 2 -- --configfile c.yaml"


def test_forcing_options_go_to_the_step_that_makes_what_they_force():  # issue 21 C2
    """--forcerun <baseline> after `--` once went to every step: prepare recomputed the baseline,
    every shard holding the model's jobs again, and the finish step (no GPU) failed on it."""
    baseline = "results/demo/baselines/demo_baseline.json"
    result = "results/demo/resets/randomize/demo_baseline/fc/seed0.json"
    steps = _planned(snakemake=("--configfile", "config/demo.yaml", "--forcerun", baseline, result, "plot_figure", "--printshellcmds"))
    assert f"--forcerun {baseline}" in steps["prepare"] and baseline not in steps["shards"] + steps["finish"]
    assert f"--forcerun {result}" in steps["shards"] and result not in steps["prepare"] + steps["finish"]
    assert "--forcerun plot_figure" in steps["finish"] and "plot_figure" not in steps["prepare"] + steps["shards"]
    assert all("--printshellcmds" in line for line in steps.values())  # the other options go to every step
    steps = _planned(snakemake=("--configfile", "config/demo.yaml", "-F"))
    assert "--forceall" in steps["prepare"] and "--forceall" not in steps["shards"] + steps["finish"]
    assert " -F" not in steps["shards"] + steps["finish"]


# ----------------------------------------------------------------------------------------------
# layercrit-slurm under faults (issues 29 C5, 30 C6-C8): a second launch, a request that can never
# start, a controller that does not answer, no sacct, a launcher stopped while it submits or waits.


@pytest.fixture(scope="module")
def short_partition(slurm_cluster):
    """A second partition on the test node whose MaxTime is 5 minutes (made with scontrol for the module)."""
    name = "layercrit-short"
    subprocess.run(["scontrol", "delete", f"PartitionName={name}"], capture_output=True)  # a leftover of a killed run
    subprocess.run(["scontrol", "create", f"PartitionName={name}", "Nodes=ALL", "MaxTime=00:05:00", "State=UP"], check=True)
    try:
        yield name
    finally:
        subprocess.run(["scontrol", "delete", f"PartitionName={name}"], capture_output=True)


def _jobs_from(workdir: Path) -> list[str]:
    """The job ids (an array's once) that squeue lists as submitted from ``workdir``."""
    out = subprocess.run(["squeue", "--noheader", "--format=%F|%Z"], capture_output=True, text=True, check=True).stdout
    return sorted({job for job, _, cwd in (line.partition("|") for line in out.splitlines()) if cwd == str(workdir)}, key=int)


def _cancel_jobs_from(workdir: Path) -> None:
    if jobs := _jobs_from(workdir):
        subprocess.run(["scancel", *jobs], check=True)


def _with(command: list[str], *options: str, without: Sequence[str] = ()) -> list[str]:
    """A launcher command with ``options`` added and ``without`` left out (the launcher's own, before '--')."""
    split = command.index("--")
    return [arg for arg in command[:split] if arg not in without] + list(options) + command[split:]


def _held_chain_command(partition: str) -> list[str]:
    """The documented command with its prepare step held back an hour: the chain stays queued and
    nothing of it runs, for the tests that only need it in the queue (they cancel it)."""
    return _with(_launch_command(partition), "--prepare-sbatch-arg=--begin=now+3600")


def _read_until(stream, pattern: str, shown: list[str]) -> re.Match:
    for line in stream:
        shown.append(line)
        if match := re.match(pattern, line):
            return match
    raise AssertionError(f"no line matching {pattern!r} in:\n{''.join(shown)}")


def test_the_same_command_again_finds_the_chain_in_the_queue_and_sigterm_says_what_is_left(slurm_cluster, tmp_path):
    """Issue 29 C5: run again while the first chain is queued, the same command submitted a
    second full chain. Now it names the chain it found (its steps' comment: study and directory)
    and submits nothing. Issue 30 C8: SIGTERM while waiting exited 143 without a word; now it says
    what is still queued or running and how to watch it, then exits 143."""
    _study(tmp_path)
    command = _held_chain_command(slurm_cluster)
    first = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_launch_env())
    try:
        shown: list[str] = []
        prepare = _read_until(first.stdout, r"prepare: Slurm job (\d+)", shown)[1]
        shards = _read_until(first.stdout, r"shards: Slurm job (\d+)", shown)[1]
        finish = _read_until(first.stdout, r"finish: Slurm job (\d+)", shown)[1]
        again = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120, env=_launch_env())
        assert again.returncode == 1 and "sbatch" not in again.stdout, again.stdout + again.stderr
        assert _jobs_from(tmp_path) == [prepare, shards, finish]  # no second chain
        assert f"study 'tiny' in {tmp_path} already has a chain queued or running: prepare (Slurm job {prepare}): PENDING" in again.stderr
        assert f"squeue --jobs={prepare},{shards},{finish}" in again.stderr and f"scancel {prepare} {shards} {finish}" in again.stderr
        first.send_signal(signal.SIGTERM)
        out, err = first.communicate(timeout=60)
    finally:
        first.kill()
        _cancel_jobs_from(tmp_path)
    assert first.returncode == 143, "".join(shown) + out + err
    assert "stopped waiting: stopped by SIGTERM" in err and "4 of 4 allocations had not ended" in err, err
    assert f"Watch them with: squeue --jobs={prepare},{shards},{finish}" in err, err
    assert err.strip().splitlines()[-1] == "  " + shlex.join(["layercrit-slurm", *command[1:]])


def test_ctrl_c_while_submitting_cancels_what_was_submitted(slurm_cluster, tmp_path):
    """Issue 30 C8: Ctrl-C during submission left half a chain running. Here the shards' sbatch
    is interrupted after Slurm took the job, before the launcher read its id: the launcher finds
    it in the queue by its launch's mark and cancels it with the prepare step."""
    _study(tmp_path)
    sbatch = shutil.which("sbatch")
    submitted = tmp_path / "shards-submitted"
    env = _fake_commands(tmp_path / "bin", sbatch=f'case "$*" in *--array=*) {sbatch} "$@" >/dev/null; touch {submitted}; exec sleep 60;; esac; exec {sbatch} "$@"')
    env = {**_launch_env(), "PATH": env["PATH"]}
    command = _with(_held_chain_command(slurm_cluster), without=["--wait"])
    launcher = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while not submitted.exists() and time.monotonic() < deadline and launcher.poll() is None:
            time.sleep(0.1)
        in_queue = _jobs_from(tmp_path)
        launcher.send_signal(signal.SIGINT)
        out, err = launcher.communicate(timeout=60)
        left = _jobs_from(tmp_path)
    finally:
        launcher.kill()
        _cancel_jobs_from(tmp_path)
    assert len(in_queue) == 2, (in_queue, out, err)  # prepare and the shards, before the Ctrl-C
    prepare, shards = in_queue
    assert launcher.returncode == 130 and left == [], (left, out, err)
    assert "stopped by Ctrl-C while submitting" in err, err
    assert f"Cancelled what was submitted: prepare (Slurm job {prepare}), shards (Slurm job {shards}, its sbatch interrupted)." in err, err


def test_a_step_its_partition_cannot_run_is_refused_before_anything_is_submitted(slurm_cluster, short_partition, tmp_path):
    """Issue 30 C7: a finish step whose --time exceeds its partition's MaxTime was accepted by
    Slurm and stayed PENDING (PartitionTimeLimit); --wait then waited for good. The launcher reads
    the partitions' limits first (scontrol show partition) and says what to give instead."""
    _study(tmp_path)
    command = _with(_held_chain_command(slurm_cluster), "--finish-partition", short_partition, without=["--wait"])
    try:
        proc = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120, env=_launch_env())
        submitted = _jobs_from(tmp_path)
    finally:
        _cancel_jobs_from(tmp_path)
    assert proc.returncode == 1 and submitted == [], proc.stdout + proc.stderr
    assert (
        f"the finish step asks for --finish-time 00:10:00, more than its partition allows: {short_partition} (MaxTime 00:05:00)"
        in proc.stderr
    ), proc.stderr
    assert "Give --finish-time 00:05:00 or less, or another partition (--finish-partition)" in proc.stderr


def _bounded(seconds: int):
    """Fail instead of hanging: an AssertionError in this thread after ``seconds``."""

    def expired(signum, frame):
        raise AssertionError(f"still waiting after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    return previous


def _unbounded(previous) -> None:
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def test_the_wait_cancels_and_reports_a_job_that_can_never_start(short_partition, tmp_path, monkeypatch, capsys):
    """Issue 30 C7: where the limits could not be read before (or changed after submitting), a job
    PENDING with a reason Slurm keeps until the job is changed (here PartitionTimeLimit, on the
    real cluster) is cancelled by the wait, which then ends with a report saying what to change."""
    from layercrit import slurm
    from layercrit.slurm import jobs as slurm_jobs

    monkeypatch.setattr(slurm_jobs, "FIRST_POLL_S", 0.2)
    monkeypatch.setattr(slurm_jobs, "NEVER_STARTS_AFTER_S", 3)  # (90 s: Slurm's scheduler may take a minute)
    job = subprocess.run(
        ["sbatch", "--parsable", f"--partition={short_partition}", "--time=00:10:00", f"--mem={TEST_MEM_MB}M",
         f"--output={tmp_path}/never.out", "--wrap=true"],
        capture_output=True, text=True, check=True, cwd=tmp_path,
    ).stdout.strip()  # fmt: skip
    previous = _bounded(60)
    try:
        allocations = slurm_jobs.wait_for([(slurm.Step("finish", "", 0, "00:10:00"), job)])
    finally:
        _unbounded(previous)
        subprocess.run(["scancel", job], capture_output=True)
    assert [(a.job, a.state, a.reason) for a in allocations] == [(job, "CANCELLED", "PartitionTimeLimit")]
    capsys.readouterr()
    assert slurm_jobs.report(allocations, tmp_path / "logs", ["layercrit-slurm", "--finish-time", "00:10:00"]) == 1
    err = capsys.readouterr().err
    assert (
        f"finish (Slurm job {job}): CANCELLED (PartitionTimeLimit, cancelled, it could never start: its time limit exceeds "
        "its partition's MaxTime (scontrol show partition): give a shorter --finish-time or another partition (--finish-partition))"
    ) in err, err


def test_without_requeue_slurms_default_requeues_a_step_whose_node_fails(allocations_run):
    """Issue 30 C8: the README said a step that loses its node ends as NODE_FAIL without
    --requeue. Slurm's default (JobRequeue=1) makes every batch job requeueable: the launcher's
    steps, submitted without --requeue, show Requeue=1. (On this cluster a job whose node was set
    DOWN came back PENDING with Restarts=1.) The README says so now."""
    resets = _reset_records(allocations_run["workdir"])
    job = _slurm_job(next(iter(resets.values()))["slurm_job_id"])
    assert job["Requeue"] == "1", job
    scaling = (REPO / "README.md").read_text().split("## Scaling")[1].split("\n## ")[0]
    assert "JobRequeue" in scaling and "ends as\n    `PREEMPTED`, `NODE_FAIL`" not in scaling


def test_after_a_damaged_result_the_last_line_forces_it_and_finishes_the_study(allocations_run, tmp_path):
    """Issue 30 C8: a truncated result is newer than what it was made from, so the same command
    makes nothing again and the finish step fails on it again; the last line said to run the same
    command. It now adds what the workflow said to make again (`-- ... --forcerun <path>`), and
    that command finishes the study, the result as it was."""
    workdir = tmp_path / "study"
    shutil.copytree(allocations_run["workdir"], workdir, ignore=shutil.ignore_patterns(".snakemake", "logs"))
    original = _reset_records(workdir)
    victim = sorted(original)[1]
    path = _results(workdir) / victim
    path.write_bytes(path.read_bytes()[:40])
    command = _launch_command(allocations_run["partition"])
    proc = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=600, env=_launch_env())
    assert proc.returncode == 1 and re.search(r"finish \(Slurm job \d+\): FAILED", proc.stderr), proc.stdout + proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last == "  " + shlex.join(["layercrit-slurm", *command[1:], "--forcerun", f"results/tiny/{victim}"]), proc.stderr
    again = shlex.split(last)
    proc = subprocess.run([str(LAUNCHER), *again[1:]], cwd=workdir, capture_output=True, text=True, timeout=600, env=_launch_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    after = _reset_records(workdir)
    assert {k: after[victim][k] for k in METRICS} == {k: original[victim][k] for k in METRICS}
    assert (_results(workdir) / "tables/randomize/summary.csv").stat().st_mtime > path.stat().st_mtime - 1


# ... and what of it needs no cluster: Slurm's time format, the checks of a plan, how the wait
# reads Slurm's answers and the lines it ends with (fake Slurm commands).


def test_slurm_times_are_read_as_sbatch_reads_them():
    from layercrit.slurm.cluster import slurm_seconds, slurm_time

    cases = {"90": 5400, "2:30": 180, "01:02:03": 3780, "1-12": 129600, "1-0:30": 88200, "2-01:00:05": 176460,
             "0": None, "UNLIMITED": None, "INFINITE": None}  # fmt: skip
    assert {text: slurm_seconds(text) for text in cases} == cases  # (seconds round up to a minute)
    for bad in ("4h", "1:2:3:4", "-5", ""):
        with pytest.raises(ValueError):
            slurm_seconds(bad)
    assert [slurm_time(s) for s in (120, 3780, 176460)] == ["00:02:00", "01:03:00", "2-01:01:00"]


def test_requeue_with_a_time_limit_within_its_signal_is_refused():
    """Issue 30 C8: --requeue signals a step 120 s before its time limit; with --time 120 s or
    less the signal comes as it starts, and it requeued itself at once, on every start (5 times,
    then TIMEOUT: 15 minutes for nothing). Refused, as is a time limit sbatch would not take, and
    a --time through --sbatch-arg (the limits checked are the launcher's own)."""
    for options, message in (
        (("--requeue", "--finish-time", "2"), "--requeue with --finish-time 2: the step is signalled 120 s before its time limit"),
        (("--requeue", "--time", "00:01:30"), "Give --time longer than 00:02:00"),
        (("--prepare-time", "2h"), "--prepare-time 2h: '2h' is not a Slurm time"),
        (("--shards-sbatch-arg=--time=1:00:00",), "layercrit-slurm sets --time itself; use --time, --prepare-time or --finish-time"),
    ):
        proc = _planned(*options, check=False)
        assert proc.returncode == 1 and message in proc.stderr and "sbatch" not in proc.stdout, (options, proc.stderr)
    assert all("--requeue" in line for line in _planned("--requeue", "--time", "00:02:01", "--finish-time", "3").values())


def test_the_finish_steps_snakemake_runs_with_evaluations_none(tmp_path):
    """The finish step has no GPU and must never evaluate: its Snakemake gets
    LAYERCRIT_EVALUATIONS=none (the evaluation jobs refuse there), the other steps' do not; with
    --requeue too (Snakemake then runs as a child of the batch shell). Each step's command runs
    here with a stand-in for Python that writes down what it sees."""
    from layercrit.slurm import SlurmSettings, plan

    assert "export LAYERCRIT_EVALUATIONS=none; " in _planned()["finish"]
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\necho "${{LAYERCRIT_EVALUATIONS:-unset}}" >>{tmp_path}/seen\n')
    python.chmod(0o755)
    for requeue in (False, True):
        for step in plan(SlurmSettings(requeue=requeue), ["--configfile", "config/demo.yaml"], python=str(python)):
            (tmp_path / "seen").unlink(missing_ok=True)
            # the submitting shell had it set: only the finish step keeps it
            subprocess.run(["bash", "-c", step.command], check=True, env={**os.environ, "LAYERCRIT_EVALUATIONS": "none"})
            expected = "none" if step.name == "finish" else "unset"
            assert (tmp_path / "seen").read_text() == f"{expected}\n", (step.name, requeue)


def test_the_wait_needs_no_sacct(tmp_path, monkeypatch):
    """Issue 30 C6: where `sacct` is not installed, the wait crashed (FileNotFoundError) as soon
    as slurmctld no longer knew a job, gave no report, and left the jobs unwatched. It now reads
    what slurmctld says (scontrol) and names a job it has forgotten as UNKNOWN, saying why."""
    from layercrit import slurm
    from layercrit.slurm import jobs as slurm_jobs

    env = _fake_commands(
        tmp_path / "bin",
        scontrol="""case $4 in
            11) echo "JobId=11 JobState=COMPLETED Reason=None ExitCode=0:0";;
            12) echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1;;
            esac""",
    )
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # Slurm's scontrol only: no sacct
    assert shutil.which("sacct") is None and env
    monkeypatch.setattr(slurm_jobs, "FIRST_POLL_S", 0.01)
    steps = [slurm.Step("prepare", "", 1, ""), slurm.Step("shards", "", 1, "", array=1)]
    allocations = slurm_jobs.wait_for(list(zip(steps, ["11", "12"])))
    assert [(a.job, a.state) for a in allocations] == [("11", "COMPLETED"), ("12_1", "UNKNOWN")]
    assert allocations[1].reason == "gone from slurmctld, and no accounting to ask (sacct is not installed here (not on PATH))"


def test_a_controller_that_does_not_answer_ends_the_wait_with_a_report(tmp_path, monkeypatch, capsys):
    """Issue 30 C7: a controller that stayed unreachable meant a silent, endless wait. The wait
    says so at once, asks again for UNREACHABLE_LIMIT_S, then ends with what it saw last, how to
    watch the jobs, and the command to run once they have ended."""
    from layercrit import slurm
    from layercrit.slurm import jobs as slurm_jobs

    env = _fake_commands(
        tmp_path / "bin",
        scontrol=f"""[ -e {tmp_path}/down ] && {{ echo "slurm_load_jobs error: Unable to contact slurm controller (connect failure)" >&2; exit 1; }}
            touch {tmp_path}/down; echo "JobId=$4 JobState=RUNNING Reason=None ExitCode=0:0\"""",
    )
    monkeypatch.setenv("PATH", env["PATH"])
    monkeypatch.setattr(slurm_jobs, "FIRST_POLL_S", 0.01)
    monkeypatch.setattr(slurm_jobs, "UNREACHABLE_LIMIT_S", 0.5)
    submitted = [(slurm.Step("prepare", "", 1, ""), "11")]
    seen: dict = {}
    previous = _bounded(30)
    try:
        with pytest.raises(slurm_jobs.StoppedWaiting) as stopped:
            slurm_jobs.wait_for(submitted, seen)
    finally:
        _unbounded(previous)
    err = capsys.readouterr().err
    assert "slurmctld does not answer (slurm_load_jobs error: Unable to contact slurm controller (connect failure))" in err
    assert str(stopped.value).startswith("slurmctld has not answered for 00:00:00")  # 0.5 s, as Slurm writes times
    assert slurm_jobs.report(slurm_jobs.last_seen(submitted, seen), tmp_path, ["layercrit-slurm"], stopped=str(stopped.value)) == 1
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("layercrit-slurm: stopped waiting: slurmctld has not answered") and "1 of 1 allocations had not ended" in lines[0]
    assert lines[1:] == [
        "  prepare (Slurm job 11): RUNNING; no log yet",
        "Watch them with: squeue --jobs=11   (stop them with: scancel 11)",
        "Once they have ended, the same command computes only what is still missing:",
        "  layercrit-slurm",
    ]


def test_the_last_line_forces_what_the_workflow_says_to_make_again(tmp_path):
    """Issue 30 C8: where a failed job's log (named in the step's log, as Snakemake names it) holds
    the workflow's advice `snakemake --forcerun <path>` (a damaged result), the last line adds
    `--forcerun <path>` to the Snakemake options, after a '--' where the command had none."""
    from layercrit.io import DamagedFileError
    from layercrit.slurm.jobs import forcerun_advice, resume_command

    damaged = "results/s/resets/randomize/m/fc/seed0.json"
    job_log = tmp_path / "results/s/logs/tables/randomize.log"
    job_log.parent.mkdir(parents=True)
    job_log.write_text(f"Traceback (most recent call last):\nlayercrit.io.DamagedFileError: {DamagedFileError(damaged, 'truncated')}\n")
    step_log = tmp_path / "finish-14.out"
    step_log.write_text(
        "Error in rule aggregate_tables:\n    jobid: 3\n"
        "    log: results/s/logs/tables/randomize.log (check log file(s) for error details)\n"
    )
    assert forcerun_advice([step_log], tmp_path) == [damaged]
    assert resume_command(["layercrit-slurm", "--wait"], [damaged]) == f"layercrit-slurm --wait -- --forcerun {damaged}"
    assert resume_command(["layercrit-slurm", "--", "--configfile", "c y.yaml"], []) == "layercrit-slurm -- --configfile 'c y.yaml'"


def test_a_chains_comment_is_read_back_whatever_its_directory_is_called(tmp_path, monkeypatch):
    """The comment that marks a chain (study, directory, launch) comes back from squeue as it was
    written, also for a directory with spaces, ':' or '|' in its name."""
    from layercrit.slurm.cluster import chain_comment, queued_chain_jobs

    workdir = tmp_path / "a b:c|d"
    comment = chain_comment("tiny", workdir, "abc123")
    assert " " not in comment
    env = _fake_commands(tmp_path / "bin", squeue=f"echo '7|7_[1-2]|layercrit-shards|PENDING|Dependency|{comment}'")
    monkeypatch.setenv("PATH", env["PATH"])
    [job] = queued_chain_jobs(["prepare", "shards", "finish"])
    assert (job.array_job, job.job, job.name, job.state, job.reason) == ("7", "7_[1-2]", "layercrit-shards", "PENDING", "Dependency")
    assert (job.study, job.workdir, job.launch) == ("tiny", str(workdir), "abc123")
