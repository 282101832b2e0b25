from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
DEMO_LAYERS = REPO / "config" / "architectures" / "demo_resnet.tsv"


@pytest.fixture(scope="session")
def demo_arch():
    from layercrit.study import Architecture, read_layer_table

    zoo = yaml.safe_load((REPO / "config/zoo/demo.yaml").read_text())
    spec = zoo["architectures"]["demo_resnet"]
    return Architecture("demo_resnet", spec["timm"], spec["kwargs"], read_layer_table(DEMO_LAYERS))


# The Slurm executor plugin runs `scontrol show config` when Snakemake loads it, and that waits
# 10 s for a controller once the Slurm test has installed (and stopped) one on this machine.
# Runs that are not Slurm runs get an `scontrol` that fails at once.
_NO_SLURM_BIN = Path(tempfile.mkdtemp(prefix="layercrit-no-slurm-"))
(_NO_SLURM_BIN / "scontrol").write_text("#!/bin/sh\nexit 1\n")
(_NO_SLURM_BIN / "scontrol").chmod(0o755)


def snakemake_env(slurm: bool = False, **extra: str) -> dict[str, str]:
    """The environment of a Snakemake run in the tests (see _NO_SLURM_BIN)."""
    env = {**os.environ, **extra}
    if not slurm:
        env["PATH"] = f"{_NO_SLURM_BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def run_snakemake(
    workdir: Path, *args: str, check: bool = True, timeout: float = 900, env=None, slurm: bool = False
) -> subprocess.CompletedProcess:
    """Run the repository's workflow with ``workdir`` as working directory (its own results/)."""
    cmd = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--directory", str(workdir), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=snakemake_env(slurm, **(env or {})))
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-5000:]}\n{proc.stderr[-8000:]}")
    return proc


def tiny_study(workdir: Path, *, models: list[str] | None = None, seeds=(0, 1), epochs: int = 1, **overrides) -> Path:
    """Write a tiny demo-like study (zoo + config) into ``workdir`` and return the config path:
    its models trained here for one epoch without warm-up (the tests check the plumbing, not the
    training), on 256 images, evaluated on 64."""
    from layercrit.study import relocatable_zoo

    zoo = relocatable_zoo(REPO / "config/zoo/demo.yaml")
    for m in zoo["models"]:
        m["source"]["recipe"] = {**m["source"]["recipe"], "epochs": epochs, "warmup_epochs": 0}
    if models is not None:
        zoo["models"] = [m for m in zoo["models"] if m["id"] in models]
    (workdir / "zoo.yaml").write_text(yaml.safe_dump(zoo, sort_keys=False))
    config = yaml.safe_load((REPO / "config/demo.yaml").read_text())
    config.update(study="tiny", zoo="zoo.yaml", device="cpu")
    config["data"].update(train_images=256, eval_images=64)
    # trained here from the shortened recipes, not fetched from the demo's recorded checkpoints
    config["training"]["retrain"] = True
    config["reset"]["seeds"] = list(seeds)
    for key, value in overrides.items():
        config[key] = value
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


TINY_RESULTS = Path("results") / "tiny"
# The models the end-to-end tests train (test_workflow's and test_bad_input_workflow's).
TRAINED_TINY_MODELS = ["demo_baseline", "demo_linf_4", "demo_control", "demo_cutout"]
# What training the tiny study makes: its images and each trained model's checkpoint, initial
# weights and record. Copied with their modification times, so Snakemake sees them as made.
_TRAINED_FILES = ("data/train.safetensors", "data/eval.safetensors", "models")


@pytest.fixture(scope="session")
def trained_tiny_zoo(tmp_path_factory, worker_id) -> Path:
    """The tiny study's images and trained models (tiny_study's defaults, TRAINED_TINY_MODELS),
    made once per test run however many xdist workers share it (the lock pattern of
    pytest-xdist's documentation). The end-to-end tests that need these models start from them
    (copy_trained); test_training checks training itself, test_workflow that a forced retraining
    gives the same checkpoint."""
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp()
    if worker_id != "master":
        shared = shared.parent
    root = shared / "trained_tiny_zoo"
    with FileLock(str(shared / "trained_tiny_zoo.lock")):
        if not (root / "done").is_file():
            root.mkdir(exist_ok=True)
            config = tiny_study(root, models=TRAINED_TINY_MODELS)
            made = [TINY_RESULTS / "data/eval.safetensors", *(TINY_RESULTS / f"models/{m}.safetensors" for m in TRAINED_TINY_MODELS)]
            run_snakemake(root, "--configfile", str(config), "--cores", "2", *map(str, made))
            (root / "done").touch()
    return root / TINY_RESULTS


def copy_trained(trained: Path, workdir: Path) -> None:
    """The trained tiny zoo's images and models into ``workdir``'s tiny study (see trained_tiny_zoo);
    models a test's zoo leaves out are copied too and stay unused. The study must train
    (tiny_study's default) and keep tiny_study's data settings."""
    import shutil

    target = workdir / TINY_RESULTS
    for name in _TRAINED_FILES:
        source, destination = trained / name, target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, destination, dirs_exist_ok=True)
        else:
            shutil.copy2(source, destination)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a test module's in-process evaluations: its models are so small that
    each op takes microseconds, and on a shared 2-core machine two threads waiting for each other
    make a forward pass ~50× slower. (Use: pytestmark = pytest.mark.usefixtures("one_torch_thread").)"""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def workdir(tmp_path):
    return tmp_path


def write_layer_list(workdir: Path, arch_id: str, spec: dict) -> Path:
    """Write the layer list of architecture ``spec`` to ``workdir / spec["layers"]`` with the
    project's own command (builds the model: torch, in the test process)."""
    from layercrit.models.zoo import write_layers

    zoo = workdir / f".{arch_id}.zoo.yaml"
    zoo.write_text(yaml.safe_dump({"architectures": {arch_id: spec}}))
    out, _ = write_layers(zoo, arch_id)
    return out


def standin_imagenet(root: Path, classes: int = 1000, per_class: int = 10) -> Path:
    """An ImageNet-shaped validation folder of empty files, for runs that read no image (dry
    runs, --unlock): as many class folders and images as the parse-time counts ask for."""
    for c in range(classes):
        folder = root / f"n{c:08d}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            (folder / f"ILSVRC2012_val_{c * per_class + i + 1:08d}.JPEG").touch()
    return root


# The longest files (`make test --durations` lists them), started first so that no long file is left
# for the end while the other worker idles. A hint only: a file missing here still runs.
LONGEST_FILES = ("test_slurm.py", "test_workflow.py", "test_authors_trials.py", "test_readme_commands.py", "test_demo_run.py")


def pytest_collection_modifyitems(config, items):
    """Files in the order `make test` should hand them to its workers (--dist loadfile with
    --no-loadscope-reorder, which keeps this order instead of putting files with many tests
    first): LONGEST_FILES, then the other files with end-to-end (slow) tests, then the rest.
    Files stay whole and keep their own order."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}

    def rank(item):
        name = item.path.name
        return (LONGEST_FILES.index(name) if name in LONGEST_FILES else len(LONGEST_FILES), item.path not in slow_files)

    items.sort(key=rank)
