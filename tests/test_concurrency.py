"""Evaluation jobs as threads of one process: each gives what it gives alone (issue 29).

Function-level checks of what the side-by-side workflow test (test_side_by_side.py) shows end
to end: seeded draws, torch.fx tracing beside forward passes, activations that belong to their
model object, per-device caches, the device pool, job logs.
"""

from __future__ import annotations

import logging
import threading
import time

import pytest
import torch

from layercrit.evaluation.concurrency import module_calls, tracing
from layercrit.data import ImageSet, save_image_set
from layercrit.evaluation.devices import DevicePool, pool_for
from layercrit.evaluation import EvaluationCache, ResetInputs, evaluate_baseline, evaluate_reset
from layercrit.evaluation.forward import EvalSettings, free_memory, predict_logits
from layercrit.evaluation.graph import graph_segments
from layercrit.models.seed_schemes import fresh_model
from layercrit.study import Architecture
from layercrit.models.zoo import build_architecture, save_checkpoint

NORM = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
TINY_VIT = Architecture("tiny_vit", "vit_tiny_patch16_224", {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2, "num_classes": 10}, ())


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run_threads(*targets, timeout: float = 300) -> None:
    """Start ``targets`` together; re-raise the first exception one of them raised."""
    errors: list[BaseException] = []
    start = threading.Barrier(len(targets))

    def wrap(target):
        def run():
            start.wait()
            try:
                target()
            except BaseException as e:  # noqa: BLE001 - reported to the test
                errors.append(e)

        return run

    threads = [threading.Thread(target=wrap(t)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    if errors:
        raise errors[0]


def same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_seeded_draws_do_not_depend_on_threads_drawing_beside_them(demo_arch):
    """H1: fresh models of both seed schemes, built on threads beside each other and beside
    model loading (a seeded build) and an unseeded build, are their seed's own draws."""
    expected = {
        ("independent", 1): fresh_model(demo_arch, 1).state_dict(),
        ("authors", 2): fresh_model(demo_arch, 2, "authors").state_dict(),
    }
    wrong: list[str] = []

    def draw(scheme: str, seed: int, times: int):
        def run():
            for i in range(times):
                if not same_state(fresh_model(demo_arch, seed, scheme).state_dict(), expected[scheme, seed]):
                    wrong.append(f"{scheme} seed {seed}, draw {i}")

        return run

    def load_models():
        for _ in range(12):
            build_architecture(demo_arch, seed=0)  # what loading a checkpoint builds
            build_architecture(demo_arch)  # the global stream, as it stands

    run_threads(draw("independent", 1, 12), draw("authors", 2, 4), load_models)
    assert not wrong, f"{len(wrong)} fresh models differ from their seed's draw: {wrong}"


def test_a_trace_never_runs_beside_a_forward_pass(demo_arch):
    """H6: torch.fx patches every module's __call__ while it traces; forward passes on other
    threads meanwhile must neither fail nor change, and the patch must not stay."""
    model = build_architecture(demo_arch, seed=1)
    images = ImageSet(torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8), torch.zeros(16, dtype=torch.long))
    settings = EvalSettings(device="cpu", batch_size=8)
    expected = predict_logits(model, images, NORM, settings, "cpu")
    call = torch.nn.Module.__call__
    differ: list[int] = []

    def forward():
        for i in range(60):
            if not torch.equal(predict_logits(model, images, NORM, settings, "cpu"), expected):
                differ.append(i)

    def trace():
        for _ in range(6):
            assert graph_segments(build_architecture(TINY_VIT, seed=0)) is not None

    run_threads(forward, forward, trace)
    assert not differ
    assert torch.nn.Module.__call__ is call


def test_a_trace_waits_for_running_forward_passes_and_holds_back_new_ones():
    events: list[str] = []
    in_call, trace_waiting = threading.Event(), threading.Event()

    def first_call():
        with module_calls():
            in_call.set()
            assert trace_waiting.wait(5)
            time.sleep(0.1)
            events.append("first call ends")

    def trace():
        assert in_call.wait(5)
        trace_waiting.set()
        with tracing():
            events.append("trace")

    def later_call():
        assert trace_waiting.wait(5)
        time.sleep(0.05)  # asks while the trace waits
        with module_calls():
            events.append("later call")

    run_threads(first_call, trace, later_call, timeout=10)
    assert events == ["first call ends", "trace", "later call"]
    with module_calls(), module_calls():  # re-entrant within a thread
        with pytest.raises(RuntimeError, match="wait for itself"):
            with tracing():
                pass


@pytest.fixture
def two_models(tmp_path, demo_arch):
    """Two models of the demo architecture with their baselines, and the evaluation images."""
    g = torch.Generator().manual_seed(1)
    save_image_set(ImageSet(torch.randint(0, 256, (24, 3, 32, 32), dtype=torch.uint8, generator=g), torch.randint(0, 10, (24,), generator=g)), tmp_path / "eval.safetensors")
    files = {}
    for k, name in enumerate(("a", "b")):
        model = build_architecture(demo_arch, seed=10 + k)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.2 * torch.randn(p.shape, generator=g))
        save_checkpoint(tmp_path / f"{name}.safetensors", model.state_dict(), NORM, {"model": name})
        evaluate_baseline(model_id=name, arch=demo_arch, weights=tmp_path / f"{name}.safetensors", eval_data=tmp_path / "eval.safetensors",
                          settings=EvalSettings(device="cpu", batch_size=8), logits_out=tmp_path / f"{name}.logits.safetensors",
                          summary_out=tmp_path / f"{name}.json", cache=EvaluationCache())  # fmt: skip
        files[name] = ResetInputs(tmp_path / f"{name}.safetensors", tmp_path / "eval.safetensors", tmp_path / f"{name}.logits.safetensors", tmp_path / f"{name}.json")
    return files


def reset(files, arch, name, layer, seed, settings, cache, devices, out):
    return evaluate_reset(model_id=name, arch=arch, files=files[name], layer=layer, seed=seed, mode="randomize",
                          settings=settings, out=out, cache=cache, devices=devices)  # fmt: skip


METRICS = ("cosine", "criticality", "top1", "kl")


def test_activations_belong_to_the_model_object_they_were_recorded_with(two_models, demo_arch, tmp_path):
    """H5: a model evicted from the cache and built again is a new object; its resets must not
    run the old object's segments (which a reset of the new one does not reach: criticality 0)."""
    full = EvalSettings(device="cpu", batch_size=8, cpu_threads=1)
    reuse = EvalSettings(device="cpu", batch_size=8, activation_cache_mb=64, cpu_threads=1)
    cache, device = EvaluationCache(max_models=1), DevicePool(["cpu:0"])
    for name in ("a", "b", "a", "b"):  # each model evicts the other
        for layer in ("layer1.0.conv2", "fc"):
            got = reset(two_models, demo_arch, name, layer, 0, reuse, cache, device, tmp_path / "r.json")
            want = reset(two_models, demo_arch, name, layer, 0, full, EvaluationCache(), device, tmp_path / "w.json")
            assert {m: got[m] for m in METRICS} == {m: want[m] for m in METRICS}, (name, layer)
            assert got["criticality"] > 0 and got["forward_from"] != "input"


def test_four_devices_read_the_images_once_and_build_each_model_once_per_device(two_models, demo_arch, tmp_path):
    """M5: jobs spread over four devices: one read of the image file, one copy and one model
    per device, one fresh model per seed; and the results of a serial run."""
    settings = EvalSettings(device="cpu", batch_size=8, activation_cache_mb=64, cpu_threads=1)
    cache, devices = EvaluationCache(), DevicePool([f"cpu:{i}" for i in range(4)])
    jobs = [(layer, seed) for seed in (0, 1) for layer in ("conv1", "layer1.0.conv2", "layer2.0.conv1", "layer3.0.conv3", "layer4.0.conv1", "fc")]
    results: dict = {}

    def worker(part):
        def run():
            for layer, seed in part:
                results[layer, seed] = reset(two_models, demo_arch, "a", layer, seed, settings, cache, devices, tmp_path / f"{layer}-{seed}.json")

        return run

    run_threads(*(worker(jobs[k::4]) for k in range(4)))
    assert cache.loads["image_file_reads"] == 1
    used = {r["device"].split()[0] for r in results.values()}
    assert cache.loads["image_copies"] == cache.loads["model_builds"] == len(used) >= 2
    assert cache.loads["fresh_builds"] == 2
    serial = EvaluationCache()
    for layer, seed in jobs:
        want = reset(two_models, demo_arch, "a", layer, seed, settings, serial, DevicePool(["cpu"]), tmp_path / "w.json")
        assert {m: results[layer, seed][m] for m in METRICS} == {m: want[m] for m in METRICS}, (layer, seed)


def test_the_pool_holds_the_gpus_snakemake_granted_and_reuses_the_last_returned(monkeypatch):
    """M4: --resources gpu=N gives N devices (at most the visible ones); jobs one at a time stay
    on one device instead of visiting every GPU."""
    monkeypatch.setenv("LAYERCRIT_EMULATED_GPUS", "8")
    assert pool_for("auto", granted=2).devices == ("cpu:0", "cpu:1")
    assert pool_for("auto", granted=16).devices == tuple(f"cpu:{i}" for i in range(8))
    assert pool_for("auto").devices == tuple(f"cpu:{i}" for i in range(8))
    assert pool_for("cuda:3", granted=1).devices == ("cpu:3",)
    pool, seen = pool_for("auto"), []
    for _ in range(10):
        with pool.lease() as device:
            seen.append(device)
    assert seen == ["cpu:0"] * 10
    with pool.lease() as first, pool.lease() as second:  # side by side: two devices
        assert (first, second) == ("cpu:0", "cpu:1")
    monkeypatch.setenv("LAYERCRIT_EMULATED_GPUS", "two")
    with pytest.raises(ValueError, match="number of GPUs to emulate"):
        pool_for("auto")


def test_the_activation_budget_counts_memory_pytorch_keeps_reserved(monkeypatch):
    """L7: memory PyTorch reserved and freed is free for the next model's activations."""
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1000, 8000))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 3000)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 1000)
    assert free_memory("cuda:0") == 3000


def test_the_activation_budget_is_in_the_job_log(two_models, demo_arch, tmp_path):
    from layercrit.joblog import job_log

    settings = EvalSettings(device="cpu", batch_size=8, activation_cache_mb=64, cpu_threads=1)
    with job_log(tmp_path / "job.log"):
        reset(two_models, demo_arch, "a", "fc", 0, settings, EvaluationCache(), DevicePool(["cpu"]), tmp_path / "r.json")
    text = (tmp_path / "job.log").read_text()
    assert "a on cpu: activation budget 64 MiB (activation_cache_mb 64, half of" in text
    assert "a fc seed 0 (randomize) on cpu (1 threads): criticality" in text


def test_no_job_loses_a_log_line_when_another_jobs_log_closes_meanwhile(tmp_path):
    """L8: job X's log closes while job V's thread is emitting a line (paused, by a handler of
    the test's, between X's and V's log files): V's line must still reach V's log."""
    from layercrit.joblog import job_log

    package, log = logging.getLogger("layercrit"), logging.getLogger("layercrit.test")
    v_emitting, x_closed, x_open = threading.Event(), threading.Event(), threading.Event()

    class PauseV(logging.Handler):
        def emit(self, record):
            if record.getMessage() == "V's line":
                v_emitting.set()
                assert x_closed.wait(5)

    pause = PauseV()

    def job_x():
        with job_log(tmp_path / "x.log"):
            package.addHandler(pause)  # after X's log, before V's
            x_open.set()
            assert v_emitting.wait(5)
        x_closed.set()

    def job_v():
        assert x_open.wait(5)
        with job_log(tmp_path / "v.log"):
            log.info("V's line")

    try:
        run_threads(job_x, job_v, timeout=20)
    finally:
        package.removeHandler(pause)
    assert "V's line" in (tmp_path / "v.log").read_text()
