"""Issue 21: a hand-edited, foreign or stale number stops the tables with its path and the fix.

Each test names the probe finding it covers (D1–D5, D16)."""

import json
import math

import pytest
import torch
from safetensors.torch import save_file

from layercrit.data import ImageSet, check_labels, save_image_set
from layercrit.io import DamagedFileError, file_sha256, write_json
from layercrit.evaluation.metrics import clean_accuracy
from layercrit.analysis.readback import check_against_baselines, check_baseline_files, read_baselines, read_reset_result
from layercrit.study import reset_result_path
from test_aggregation import HASHES, result


def write_result(tmp_path, **changes):
    path = tmp_path / reset_result_path("randomize", "m", "fc", 0)
    content = {**result(layer="fc"), **changes}
    write_json(path, {k: v for k, v in content.items() if v is not ...})
    return path


@pytest.mark.parametrize(
    "changes, problem",
    [
        ({"criticality": 500.0}, r"'criticality': 500.0 is greater than the maximum"),  # D3
        ({"cosine": 0.5}, r"criticality 1.0 is not 100 × \(1 − its cosine 0.5\)"),  # D3
        ({"original_top1": 140.0}, r"'original_top1': 140.0 is greater than the maximum of 100"),  # D3
        ({"criticality": ...}, r"'criticality' is a required property"),  # D4
        ({"criticality": "high"}, r"'criticality': 'high' is not of type 'number'"),  # D5
        ({"n_images": 64.0}, r"'n_images': 64.0 is not of type 'integer'"),
        ({"n_nonfinite": 65}, r"contradicts itself: n_nonfinite 65 of 64 images"),
    ],
)
def test_a_result_with_impossible_or_missing_values_is_refused_with_its_path(tmp_path, changes, problem):
    path = write_result(tmp_path, **changes)
    with pytest.raises(DamagedFileError, match=problem) as error:
        read_reset_result(path)
    assert str(path) in str(error.value) and f"snakemake --forcerun {path}" in str(error.value)


def test_a_result_that_is_not_a_json_object_is_refused_with_its_path(tmp_path):  # D5
    path = write_result(tmp_path)
    path.write_text(json.dumps([result(layer="fc")]))
    with pytest.raises(DamagedFileError, match=r"holds a JSON list, not a reset result") as error:
        read_reset_result(path)
    assert str(path) in str(error.value)


def test_a_valid_result_and_a_non_finite_one_are_accepted(tmp_path):
    assert read_reset_result(write_result(tmp_path))["criticality"] == 1.0
    nan = read_reset_result(write_result(tmp_path, criticality=math.nan, cosine=math.nan, top1=math.nan, n_nonfinite=3))
    assert math.isnan(nan["criticality"])


def test_a_result_against_another_clean_accuracy_or_image_count_than_its_baseline_is_refused():  # D3
    import pandas as pd

    baselines = {"m": {"model": "m", "top1": 60.0, "n_images": 64, **HASHES}}
    for column, value in (("original_top1", 99.0), ("n_images", 1024)):
        resets = pd.DataFrame([result(seed=0), result(seed=1, **{column: value})])
        with pytest.raises(ValueError, match=rf"record {column} .* but the baseline b/m.json says .*--forcerun b/m.json"):
            check_against_baselines(resets, baselines, {"m": "b/m.json"})


@pytest.fixture
def baseline_on_disk(tmp_path):
    """A model's baseline with its three files: checkpoint, evaluation data (16 images, 10
    classes) and logits; returns (baselines, baseline_files, files)."""
    torch.manual_seed(0)
    labels = torch.arange(16) % 10
    data = tmp_path / "data/eval.safetensors"
    save_image_set(ImageSet(torch.zeros(16, 3, 4, 4, dtype=torch.uint8), labels), data)
    logits = torch.randn(16, 10)
    logits[:6] += 20 * torch.nn.functional.one_hot(labels[:6], 10)  # 6 of 16 right at least
    logits_path = tmp_path / "baselines/m.logits.safetensors"
    logits_path.parent.mkdir()
    save_file({"logits": logits}, logits_path)
    checkpoint = tmp_path / "models/m.safetensors"
    checkpoint.parent.mkdir()
    save_file({"w": torch.ones(3)}, checkpoint)
    files = {"checkpoint": str(checkpoint), "eval_data": str(data), "logits": str(logits_path)}
    summary = {
        "model": "m",
        **clean_accuracy(logits, labels),
        "n_images": 16,
        **{f"{name}_sha256": file_sha256(path) for name, path in files.items()},
    }
    summary_path = tmp_path / "baselines/m.json"
    write_json(summary_path, summary)
    baselines, baseline_files = read_baselines([summary_path])
    return baselines, baseline_files, {"m": files}


def test_a_baseline_that_matches_its_files_passes(baseline_on_disk):
    check_baseline_files(*baseline_on_disk)


def test_evaluation_data_replaced_with_its_old_mtime_stops_the_tables_naming_every_baseline(baseline_on_disk):  # D1, D2
    baselines, baseline_files, files = baseline_on_disk
    data = files["m"]["eval_data"]
    save_image_set(ImageSet(torch.ones(16, 3, 4, 4, dtype=torch.uint8), torch.arange(16) % 10), data)
    with pytest.raises(ValueError, match=r"eval.safetensors is not the eval data that the baseline\(s\) of \['m'\]") as error:
        check_baseline_files(baselines, baseline_files, files)
    assert "snakemake --forcerun baseline " in str(error.value)  # every model's, not one


def test_a_replaced_checkpoint_names_its_models_baseline(baseline_on_disk):  # D2
    baselines, baseline_files, files = baseline_on_disk
    save_file({"w": torch.zeros(3)}, files["m"]["checkpoint"])
    with pytest.raises(ValueError, match=r"m.safetensors is not the checkpoint .*--forcerun .*baselines/m.json"):
        check_baseline_files(baselines, baseline_files, files)


def test_a_baseline_whose_accuracy_is_not_its_logits_is_refused(baseline_on_disk, tmp_path):  # D3
    baselines, baseline_files, files = baseline_on_disk
    summary = json.loads((tmp_path / "baselines/m.json").read_text())
    write_json(tmp_path / "baselines/m.json", {**summary, "top1": 99.0})
    baselines, baseline_files = read_baselines([tmp_path / "baselines/m.json"])
    with pytest.raises(DamagedFileError, match=r"baselines/m.json is damaged .*records top1 99.0, but its logits .* give top1"):
        check_baseline_files(baselines, baseline_files, files)


def test_labels_outside_the_models_classes_are_refused():  # D16
    check_labels(torch.tensor([0, 9]), 10, "eval.safetensors")
    for bad in (99, -1):
        with pytest.raises(ValueError, match=rf"eval.safetensors: 1 of 2 evaluation labels are not classes .*10 outputs.*\[{bad}\]"):
            check_labels(torch.tensor([0, bad]), 10, "eval.safetensors")


# Issue 30 L1: a result that contradicts itself (each field alone within its schema's range).
NAN = math.nan
NONFINITE_MEANS = dict.fromkeys(("criticality", "cosine", "l1", "l2", "kl", "top1_agreement"), NAN)


@pytest.mark.parametrize(
    "changes, fields",
    [
        ({"top1": 99.0, "original_top1": 11.7, "recovered_acc": 0.01}, "recovered_acc 0.01 is not top1 99.0 / original_top1 11.7"),
        ({"n_images": 60, "n_nonfinite_clean": 0, "n_nonfinite_reset": 500}, "n_nonfinite_reset 500 of 60 images"),
        ({"n_nonfinite_clean": 2, "n_nonfinite_reset": 0, "n_nonfinite": 5}, "n_nonfinite 5 is not between"),
        ({"criticality": NAN, "cosine": NAN}, "criticality, cosine are NaN with n_nonfinite 0"),
        ({"n_nonfinite": 3}, "criticality, cosine are finite with n_nonfinite 3"),
        ({**NONFINITE_MEANS, "n_nonfinite": 3, "n_nonfinite_clean": 0, "n_nonfinite_reset": 3}, "top1, top5 are finite with n_nonfinite_reset 3"),
        ({"top1": NAN, "n_nonfinite_clean": 0, "n_nonfinite_reset": 0}, "top1 is NaN with n_nonfinite_reset 0"),
    ],
    ids=["recovered accuracy", "more non-finite images than images", "non-finite total", "NaN criticality without non-finite images",
         "finite criticality with non-finite images", "finite top-1 with non-finite reset outputs", "NaN top-1 without"],
)  # fmt: skip
def test_a_result_that_contradicts_itself_is_refused_naming_the_fields(tmp_path, changes, fields):
    path = write_result(tmp_path, **{"recovered_acc": 50.0 / 60.0, **changes})
    with pytest.raises(DamagedFileError, match="contradicts itself") as error:
        read_reset_result(path)
    assert fields in str(error.value) and str(path) in str(error.value)


@pytest.mark.parametrize("bad", ["none", "clean", "reset"])
def test_what_the_accumulator_writes_is_consistent(tmp_path, bad):
    """The consistency rules are the accumulator's own: a clean evaluation, one with non-finite
    clean outputs and one with non-finite reset outputs all pass as written."""
    from layercrit.evaluation.metrics import OutputChangeAccumulator

    torch.manual_seed(0)
    clean, reset, labels = torch.randn(8, 10), torch.randn(8, 10), torch.arange(8)
    if bad != "none":
        (clean if bad == "clean" else reset)[2, 3] = math.inf
    accumulator = OutputChangeAccumulator()
    accumulator.update(clean, reset, labels)
    metrics = accumulator.result(original_top1=37.5)
    path = write_result(tmp_path, **{**metrics, "original_top1": 37.5})
    assert read_reset_result(path)["n_nonfinite"] == (bad != "none")
