import math

import pytest
import torch

from layercrit.evaluation.metrics import OutputChangeAccumulator, criticality, output_change, topk_correct


def test_hand_computed_case():
    # p = softmax([0, 0]) = (1/2, 1/2); q = softmax([ln 3, 0]) = (3/4, 1/4)
    original = torch.tensor([[0.0, 0.0]])
    reset = torch.tensor([[math.log(3.0), 0.0]])
    m = {k: float(v[0]) for k, v in output_change(original, reset).items()}
    cos = (0.5 * 0.75 + 0.5 * 0.25) / (math.sqrt(0.5) * math.sqrt(0.75**2 + 0.25**2))
    assert m["cosine"] == pytest.approx(cos, abs=1e-6)
    assert m["cosine"] == pytest.approx(0.894427, abs=1e-6)
    assert m["l1"] == pytest.approx(0.5, abs=1e-6)
    assert m["l2"] == pytest.approx(math.sqrt(2 * 0.25**2), abs=1e-6)
    assert m["kl"] == pytest.approx(0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25), abs=1e-6)
    assert m["top1_agreement"] == 1.0  # both argmax 0
    assert criticality(cos) == pytest.approx(100 * (1 - cos))


def test_identical_outputs_have_zero_change_and_opposite_ones_disagree():
    logits = torch.randn(7, 5)
    m = output_change(logits, logits.clone())
    assert torch.allclose(m["cosine"], torch.ones(7, dtype=torch.float64))
    assert torch.allclose(m["l1"], torch.zeros(7, dtype=torch.float64), atol=1e-7)
    assert torch.allclose(m["kl"], torch.zeros(7, dtype=torch.float64), atol=1e-6)
    flipped = output_change(torch.tensor([[10.0, 0.0]]), torch.tensor([[0.0, 10.0]]))
    assert float(flipped["top1_agreement"][0]) == 0.0
    assert float(flipped["cosine"][0]) < 0.01


def test_topk_correct():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.15, 0.05], [0.2, 0.3, 0.5]])
    labels = torch.tensor([1, 1, 0])
    assert topk_correct(logits, labels, ks=(1, 2)) == {1: 1, 2: 2}
    assert topk_correct(logits, labels, ks=(1, 5)) == {1: 1, 5: 3}  # k capped at 3 classes


def test_batched_accumulation_equals_one_pass():
    g = torch.Generator().manual_seed(0)
    clean, reset = torch.randn(50, 10, generator=g), torch.randn(50, 10, generator=g)
    labels = torch.randint(0, 10, (50,), generator=g)
    whole = OutputChangeAccumulator()
    whole.update(clean, reset, labels)
    parts = OutputChangeAccumulator()
    for s in range(0, 50, 16):
        parts.update(clean[s : s + 16], reset[s : s + 16], labels[s : s + 16])
    a, b = whole.result(original_top1=40.0), parts.result(original_top1=40.0)
    assert a.keys() == b.keys()
    for k in a:
        assert a[k] == pytest.approx(b[k], rel=1e-9), k
    expected_top1 = 100.0 * float((reset.argmax(1) == labels).float().mean())
    assert a["top1"] == pytest.approx(expected_top1)
    assert a["recovered_acc"] == pytest.approx(expected_top1 / 40.0)
    assert a["criticality"] == pytest.approx(100 * (1 - a["cosine"]))


def test_nonfinite_outputs_are_counted_and_not_averaged_away():
    clean = torch.randn(4, 3)
    reset = clean.clone()
    reset[1, 0] = float("nan")
    reset[3, 2] = float("inf")
    acc = OutputChangeAccumulator()
    acc.update(clean, reset, torch.zeros(4, dtype=torch.long))
    r = acc.result(original_top1=50.0)
    assert r["n_nonfinite"] == 2
    assert math.isnan(r["cosine"]) and math.isnan(r["criticality"])


def test_nonfinite_clean_outputs_are_counted_too_and_void_top1_agreement():
    clean = torch.randn(5, 3)
    clean[0, 1] = float("inf")
    reset = clean.clone()
    reset[0, 1] = 0.0  # finite after the reset
    reset[2, 0] = float("nan")
    acc = OutputChangeAccumulator()
    acc.update(clean, reset, torch.zeros(5, dtype=torch.long))
    r = acc.result(original_top1=float("nan"))
    assert (r["n_nonfinite"], r["n_nonfinite_clean"], r["n_nonfinite_reset"]) == (2, 1, 1)
    assert math.isnan(r["top1_agreement"]) and math.isnan(r["criticality"])
    assert math.isnan(r["top1"]) and math.isnan(r["recovered_acc"])


def test_the_standard_error_over_images_is_that_of_the_per_image_criticalities_computed_by_hand():
    """Three images whose reset outputs give cosines 1, 0.6 and cos(p, q) of a third pair: the
    result's SE must be the sample std of 100·(1 − cosine) over the images / sqrt(3)."""
    clean = torch.tensor([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [1.0, 1.0, -1.0]])
    reset = torch.tensor([[2.0, 0.0, 0.0], [3.0, 0.0, 0.0], [0.0, 0.0, 2.0]])
    acc = OutputChangeAccumulator()
    acc.update(clean[:2], reset[:2], torch.tensor([0, 1]))  # in two batches: the sums must add up
    acc.update(clean[2:], reset[2:], torch.tensor([2]))
    p, q = clean.double().softmax(1), reset.double().softmax(1)
    per_image = [100 * (1 - float(torch.dot(a, b) / (a.norm() * b.norm()))) for a, b in zip(p, q)]
    mean = sum(per_image) / 3
    sd = math.sqrt(sum((c - mean) ** 2 for c in per_image) / 2)
    result = acc.result(100.0)
    assert per_image[0] == pytest.approx(0.0, abs=1e-12) and per_image[1] > 10  # the case is not trivial
    assert result["criticality"] == pytest.approx(mean, rel=1e-12)
    assert result["criticality_se_images"] == pytest.approx(sd / math.sqrt(3), rel=1e-9)


def test_the_standard_error_of_nearly_unchanged_outputs_does_not_cancel_away():
    """Cosines within 1e-9 of 1: Σc² − n·c̄² would lose every digit; the gap sums keep them."""
    torch.manual_seed(0)
    clean = torch.randn(1000, 10, dtype=torch.float64)
    reset = clean + 1e-5 * torch.randn(1000, 10, dtype=torch.float64)
    acc = OutputChangeAccumulator()
    acc.update(clean, reset, torch.zeros(1000, dtype=torch.long))
    gaps = 100 * (1 - output_change(clean, reset)["cosine"])
    assert float(gaps.max()) < 1e-6
    assert acc.result(100.0)["criticality_se_images"] == pytest.approx(float(gaps.std() / math.sqrt(1000)), rel=1e-6)


def test_the_standard_error_is_nan_when_it_cannot_be_known():
    acc = OutputChangeAccumulator()
    acc.update(torch.zeros(1, 3), torch.ones(1, 3), torch.zeros(1, dtype=torch.long))
    assert math.isnan(acc.result(100.0)["criticality_se_images"])  # one image: no spread
    bad = OutputChangeAccumulator()
    bad.update(torch.tensor([[math.nan, 0.0], [1.0, 0.0]]), torch.zeros(2, 2), torch.zeros(2, dtype=torch.long))
    assert math.isnan(bad.result(100.0)["criticality_se_images"])
