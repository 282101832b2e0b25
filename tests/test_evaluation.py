import json
import math

import pytest
import torch

from layercrit.data import ImageSet, save_image_set
from layercrit.evaluation import EvaluationCache, ResetInputs, evaluate_baseline, evaluate_reset
from layercrit.evaluation.forward import EvalSettings
from layercrit.models.zoo import build_architecture, save_checkpoint

NORM = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}


@pytest.fixture
def setup(tmp_path, demo_arch):
    return _setup_with(tmp_path, demo_arch, EvalSettings(device="cpu", batch_size=16))


def _setup_with(tmp_path, demo_arch, settings):
    g = torch.Generator().manual_seed(0)
    images = ImageSet(torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8, generator=g), torch.randint(0, 10, (40,), generator=g))
    save_image_set(images, tmp_path / "eval.safetensors")
    model = build_architecture(demo_arch, seed=3)
    with torch.no_grad():  # stand-in for training: an untrained ResNet zeroes its last BN of each block
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))
    save_checkpoint(tmp_path / "m.safetensors", model.state_dict(), NORM, {"model": "m"})
    init = build_architecture(demo_arch, seed=4).state_dict()
    cache = EvaluationCache()
    evaluate_baseline(
        model_id="m", arch=demo_arch, weights=tmp_path / "m.safetensors", eval_data=tmp_path / "eval.safetensors",
        settings=settings, logits_out=tmp_path / "b.safetensors", summary_out=tmp_path / "b.json", reported_top1=95.0, cache=cache,
    )  # fmt: skip
    return tmp_path, demo_arch, settings, cache, init


def run_reset(setup, layer="layer2.0.conv2", seed=0, mode="randomize", out="r.json", init_path=None):
    tmp, arch, settings, cache, _ = setup
    return evaluate_reset(
        model_id="m", arch=arch,
        files=ResetInputs(checkpoint=tmp / "m.safetensors", eval=tmp / "eval.safetensors", logits=tmp / "b.safetensors", baseline=tmp / "b.json", init=init_path),
        layer=layer, seed=seed, mode=mode, settings=settings, out=tmp / out, cache=cache,
    )  # fmt: skip


def test_baseline_summary_flags_a_gap_to_the_reported_accuracy(setup):
    tmp = setup[0]
    summary = json.loads((tmp / "b.json").read_text())
    assert summary["n_images"] == 40 and 0 <= summary["top1"] <= 100
    assert summary["suspect_loading"] is True  # random weights are far below the 95 % "reported"
    assert summary["top1_gap"] == pytest.approx(95.0 - summary["top1"])


def test_reset_result_records_metrics_and_provenance(setup):
    r = run_reset(setup)
    on_disk = json.loads((setup[0] / "r.json").read_text())
    assert on_disk["criticality"] == pytest.approx(r["criticality"])
    for key in ("model", "layer", "seed", "mode", "n_images", "precision", "device", "versions", "wall_s", "forward_s",
                "cosine", "l1", "l2", "kl", "top1_agreement", "top1", "top5", "recovered_acc", "n_nonfinite"):  # fmt: skip
        assert key in on_disk, key
    assert on_disk["n_images"] == 40 and on_disk["device"].startswith("cpu")
    assert "torch" in on_disk["versions"]
    assert 0 < r["criticality"] <= 100
    assert r["criticality"] == pytest.approx(100 * (1 - r["cosine"]))


def test_reset_is_reproducible_and_independent_of_job_order(setup):
    first = run_reset(setup, "layer3.0.conv1", 1, out="a.json")
    run_reset(setup, "fc", 2, out="f.json")
    run_reset(setup, "conv1", 0, out="c.json")
    again = run_reset(setup, "layer3.0.conv1", 1, out="d.json")
    assert again["cosine"] == first["cosine"] and again["top1"] == first["top1"]
    other_seed = run_reset(setup, "layer3.0.conv1", 2, out="e.json")
    assert other_seed["cosine"] != first["cosine"]


def test_model_in_cache_is_restored_after_each_reset(setup):
    tmp, arch, settings, cache, _ = setup
    model, _ = cache.model(arch, tmp / "m.safetensors", "cpu")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    run_reset(setup, "conv1", 0, mode="zero")
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_failed_reset_leaves_no_output(setup):
    with pytest.raises(KeyError):
        run_reset(setup, layer="layer7.0.conv1", out="bad.json")
    assert not (setup[0] / "bad.json").exists()
    assert not list(setup[0].glob("*.tmp"))


def test_nonfinite_outputs_are_reported(setup):
    tmp, arch, settings, cache, init = setup
    init = dict(init)
    init["layer4.0.conv3.weight"] = torch.full_like(init["layer4.0.conv3.weight"], float("nan"))
    save_checkpoint(tmp / "init.safetensors", init, NORM)
    r = run_reset(setup, "layer4.0.conv3", mode="reinit", out="nan.json", init_path=tmp / "init.safetensors")
    assert r["n_nonfinite"] == 40
    assert math.isnan(r["criticality"])
    assert json.loads((tmp / "nan.json").read_text())["n_nonfinite"] == 40


def test_reinit_needs_initial_weights(setup):
    with pytest.raises(ValueError, match="initial weights"):
        run_reset(setup, mode="reinit", out="x.json")


def test_baseline_records_the_files_it_evaluated(setup):
    from layercrit.io import file_sha256

    tmp = setup[0]
    summary = json.loads((tmp / "b.json").read_text())
    assert summary["checkpoint_sha256"] == file_sha256(tmp / "m.safetensors")
    assert summary["eval_data_sha256"] == file_sha256(tmp / "eval.safetensors")
    assert summary["logits_sha256"] == file_sha256(tmp / "b.safetensors")
    r = run_reset(setup)
    assert {k: r[k] for k in ("checkpoint_sha256", "eval_data_sha256", "logits_sha256")} == {
        k: summary[k] for k in ("checkpoint_sha256", "eval_data_sha256", "logits_sha256")
    }


@pytest.mark.parametrize("activation_cache_mb", [0, 64])
def test_a_checkpoint_replaced_after_its_baseline_fails_the_reset_job(setup, demo_arch, activation_cache_mb):
    import os

    from layercrit.evaluation import StaleBaselineError

    tmp, arch, _, cache, _ = setup
    run_reset(setup, out="before.json")  # the cache now holds the original model
    path = tmp / "m.safetensors"
    stat = path.stat()
    other = build_architecture(demo_arch, seed=11).state_dict()
    save_checkpoint(path, other, NORM, {"model": "m"})
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns - 10**9))  # older than its baseline
    settings = EvalSettings(device="cpu", batch_size=16, activation_cache_mb=activation_cache_mb)
    with pytest.raises(StaleBaselineError) as error:
        evaluate_reset(
            model_id="m", arch=arch,
            files=ResetInputs(checkpoint=path, eval=tmp / "eval.safetensors", logits=tmp / "b.safetensors", baseline=tmp / "b.json"),
            layer="fc", seed=0, mode="randomize", settings=settings, out=tmp / "after.json", cache=cache,
        )  # fmt: skip
    message = str(error.value)
    assert str(path) in message and "has changed since the baseline" in message
    assert f"snakemake --forcerun {tmp / 'b.json'}" in message
    assert not (tmp / "after.json").exists()


def test_a_baseline_that_records_no_inputs_is_refused(setup):
    from layercrit.evaluation import StaleBaselineError

    tmp = setup[0]
    summary = json.loads((tmp / "b.json").read_text())
    del summary["eval_data_sha256"]
    (tmp / "b.json").write_text(json.dumps(summary))
    with pytest.raises(StaleBaselineError, match="does not record which eval_data it evaluated"):
        run_reset(setup, out="x.json")


@pytest.mark.parametrize("edit", [{"top1": 99.0}, {"n_images": 60}])
def test_a_baseline_summary_edited_by_hand_is_refused_before_a_reset_copies_it(setup, edit):  # issue 30 L5
    from layercrit.evaluation import StaleBaselineError

    tmp = setup[0]
    baseline = json.loads((tmp / "b.json").read_text())
    (tmp / "b.json").write_text(json.dumps({**baseline, **edit}))
    with pytest.raises(StaleBaselineError, match=r"b\.json says top-1 .* but the clean logits it records give top-1 .*snakemake --forcerun .*b\.json"):
        run_reset(setup)
    assert not (tmp / "r.json").exists()


def test_clean_outputs_that_are_not_finite_make_every_derived_number_nan(tmp_path, demo_arch, caplog):
    g = torch.Generator().manual_seed(0)
    images = ImageSet(torch.randint(0, 256, (20, 3, 32, 32), dtype=torch.uint8, generator=g), torch.randint(0, 10, (20,), generator=g))
    save_image_set(images, tmp_path / "eval.safetensors")
    state = build_architecture(demo_arch, seed=3).state_dict()
    state["fc.weight"] = torch.full_like(state["fc.weight"], float("inf"))
    save_checkpoint(tmp_path / "m.safetensors", state, NORM)
    settings, cache = EvalSettings(device="cpu", batch_size=8), EvaluationCache()
    with caplog.at_level("WARNING", logger="layercrit"):
        summary = evaluate_baseline(
            model_id="m", arch=demo_arch, weights=tmp_path / "m.safetensors", eval_data=tmp_path / "eval.safetensors",
            settings=settings, logits_out=tmp_path / "b.safetensors", summary_out=tmp_path / "b.json", cache=cache,
        )  # fmt: skip
    assert summary["n_nonfinite"] == 20 and summary["nonfinite_outputs"] is True and summary["suspect_loading"] is True
    assert math.isnan(summary["top1"]) and math.isnan(summary["top5"])
    assert "non-finite clean outputs" in caplog.text
    on_disk = json.loads((tmp_path / "b.json").read_text())
    assert math.isnan(on_disk["top1"]) and on_disk["nonfinite_outputs"] is True

    def reset(layer, mode):
        return evaluate_reset(
            model_id="m", arch=demo_arch,
            files=ResetInputs(checkpoint=tmp_path / "m.safetensors", eval=tmp_path / "eval.safetensors", logits=tmp_path / "b.safetensors", baseline=tmp_path / "b.json"),
            layer=layer, seed=0, mode=mode, settings=settings, out=tmp_path / f"{layer}.json", cache=cache,
        )  # fmt: skip

    # Resetting fc makes the reset outputs finite: the non-finite ones are the clean outputs.
    r = reset("fc", "randomize")
    assert (r["n_nonfinite"], r["n_nonfinite_clean"], r["n_nonfinite_reset"]) == (20, 20, 0)
    for key in ("criticality", "cosine", "top1_agreement", "recovered_acc", "kl"):
        assert math.isnan(r[key]), key
    assert 0 <= r["top1"] <= 100  # the reset model's own accuracy is well defined
    r = reset("conv1", "zero")
    assert (r["n_nonfinite"], r["n_nonfinite_clean"], r["n_nonfinite_reset"]) == (20, 20, 20)
    assert math.isnan(r["top1"]) and math.isnan(r["top5"]) and math.isnan(r["top1_agreement"])


def test_the_batch_size_changes_criticality_only_by_rounding(tmp_path, demo_arch):
    """What config batch_size's description promises (issue 21 D13: it once said results do not
    depend on it; the outputs' last bits do, and so do their files' sha256)."""
    criticality = {}
    for batch_size in (7, 40):
        setup_dir = tmp_path / f"b{batch_size}"
        setup_dir.mkdir()
        setup = _setup_with(setup_dir, demo_arch, EvalSettings(device="cpu", batch_size=batch_size))
        criticality[batch_size] = [run_reset(setup, layer=layer)["criticality"] for layer in ("conv1", "layer2.0.conv2", "fc")]
    # float32 rounding of per-batch sums: relative 1e-7 of values near 100 (which kernel path a
    # batch takes, and so its last bits, can also depend on the process's earlier allocations)
    gaps = [abs(a - b) for a, b in zip(criticality[7], criticality[40])]
    assert max(gaps) < 1e-4, gaps
    assert min(criticality[40]) > 0.01  # the resets change the outputs: the comparison is not of zeros


def test_evaluation_labels_outside_the_models_classes_stop_the_baseline(tmp_path, demo_arch):  # issue 21 D16
    for label in (99, -1):
        images = ImageSet(torch.zeros(4, 3, 32, 32, dtype=torch.uint8), torch.tensor([0, 1, 2, label]))
        save_image_set(images, tmp_path / "eval.safetensors")
        save_checkpoint(tmp_path / "m.safetensors", build_architecture(demo_arch, seed=0).state_dict(), NORM)
        with pytest.raises(ValueError, match=rf"eval.safetensors: 1 of 4 evaluation labels are not classes .*10 outputs.*\[{label}\]"):
            evaluate_baseline(
                model_id="m", arch=demo_arch, weights=tmp_path / "m.safetensors", eval_data=tmp_path / "eval.safetensors",
                settings=EvalSettings(device="cpu"), logits_out=tmp_path / "b.safetensors", summary_out=tmp_path / "b.json",
                cache=EvaluationCache(),
            )  # fmt: skip
        assert not (tmp_path / "b.json").exists()
