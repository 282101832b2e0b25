"""What only a GPU can show: device leases over real GPUs, images kept on the device, activation
reuse exact on CUDA, and the GPU's numbers against the CPU's in every precision.

Skipped without CUDA (CI has none); run them where there is a GPU with `make gpu-check`, which
also runs a study end to end on the GPU and the benchmarks (tools/gpu_check.py).
"""

import math
import threading

import pytest
import torch

from layercrit.data import ImageSet, save_image_set
from layercrit.evaluation import EvaluationCache, ResetInputs, evaluate_baseline, evaluate_reset
from layercrit.evaluation.forward import EvalSettings
from layercrit.models.zoo import build_architecture, save_checkpoint

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

NORM = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
METRICS = ["criticality", "cosine", "l1", "l2", "kl", "top1_agreement", "top1", "top5", "n_nonfinite"]
# How far a GPU's criticality may be from the CPU's, in points, for the tiny model here (the
# workflow-level comparison with stated tolerances is tools/gpu_check.py's).
TOLERANCE = {"fp32": 0.01, "torch_default": 0.05, "tf32": 0.5, "bf16": 1.0}


@pytest.fixture(scope="module")
def files(tmp_path_factory, demo_arch):
    tmp = tmp_path_factory.mktemp("gpu")
    g = torch.Generator().manual_seed(0)
    model = build_architecture(demo_arch, seed=3)
    with torch.no_grad():  # an untrained timm ResNet zeroes each block's last BN: perturb all weights
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))
    save_checkpoint(tmp / "m.safetensors", model.state_dict(), NORM)
    images = ImageSet(torch.randint(0, 256, (300, 3, 32, 32), dtype=torch.uint8, generator=g), torch.randint(0, 10, (300,), generator=g))
    save_image_set(images, tmp / "eval.safetensors")
    return tmp


def evaluate(files, arch, settings, cache, layer="layer3.0.conv2", seed=0, tag="r"):
    summary, logits = files / f"b-{tag}.json", files / f"b-{tag}.safetensors"
    if not summary.exists():
        evaluate_baseline(model_id="m", arch=arch, weights=files / "m.safetensors", eval_data=files / "eval.safetensors",
                          settings=settings, logits_out=logits, summary_out=summary, cache=cache)  # fmt: skip
    return evaluate_reset(
        model_id="m", arch=arch,
        files=ResetInputs(checkpoint=files / "m.safetensors", eval=files / "eval.safetensors", logits=logits, baseline=summary),
        layer=layer, seed=seed, mode="randomize", settings=settings, out=files / f"{tag}-{layer}-{seed}.json", cache=cache,
    )  # fmt: skip


def test_every_gpu_is_leased_to_one_job_at_a_time():
    from layercrit.evaluation.devices import pool_for

    pool = pool_for("cuda")
    assert pool.devices == tuple(f"cuda:{i}" for i in range(torch.cuda.device_count()))
    held, clashes, lock = set(), [], threading.Lock()

    def job():
        with pool.lease() as device:
            with lock:
                clashes.append(device in held)
                held.add(device)
            torch.ones(1000, device=device).sum().item()  # the device works
            with lock:
                held.discard(device)

    threads = [threading.Thread(target=job) for _ in range(4 * len(pool.devices))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not any(clashes)


def test_images_and_model_stay_on_the_gpu(files, demo_arch):
    cache = EvaluationCache()
    images = cache.image_set(files / "eval.safetensors", "cuda:0")
    model, _ = cache.model(demo_arch, files / "m.safetensors", "cuda:0")
    assert images.images.is_cuda and images.images.dtype == torch.uint8
    assert next(model.parameters()).is_cuda
    assert cache.image_set(files / "eval.safetensors", "cuda:0") is images  # loaded once


@pytest.mark.parametrize("precision", ["fp32", "torch_default", "tf32", "bf16"])
def test_gpu_results_are_the_cpus_within_the_precision_tolerance(files, demo_arch, precision):
    cpu = evaluate(files, demo_arch, EvalSettings("cpu", "fp32", 100), EvaluationCache(), tag="cpu")
    gpu = evaluate(files, demo_arch, EvalSettings("cuda", precision, 100), EvaluationCache(), tag=f"gpu-{precision}")
    assert gpu["device"].startswith("cuda") and gpu["n_nonfinite"] == 0
    assert math.isclose(gpu["criticality"], cpu["criticality"], abs_tol=TOLERANCE[precision]), (precision, gpu, cpu)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_activation_reuse_is_exact_on_the_gpu(files, demo_arch, precision):
    full = EvalSettings("cuda", precision, 100, activation_cache_mb=0)
    reuse = EvalSettings("cuda", precision, 100, activation_cache_mb=256)
    cache_full, cache_reuse = EvaluationCache(), EvaluationCache()
    for layer in ("layer1.0.conv1", "layer3.0.conv2", "layer4.0.downsample.0", "fc"):
        a = evaluate(files, demo_arch, full, cache_full, layer, tag=f"full-{precision}")
        b = evaluate(files, demo_arch, reuse, cache_reuse, layer, tag=f"full-{precision}")
        assert b["forward_from"] != "input", f"activations not reused on the GPU for {layer} ({precision})"
        assert {k: a[k] for k in METRICS} == {k: b[k] for k in METRICS}, layer
