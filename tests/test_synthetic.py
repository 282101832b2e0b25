"""The demo study's synthetic dataset: deterministic, balanced, and not solvable by colour."""

from __future__ import annotations

import time

import pytest
import torch

from layercrit.data import ImageSet
from layercrit.synthetic import CLASS_NAMES, make_synthetic_images


def test_class_names() -> None:
    assert len(CLASS_NAMES) == 10
    assert len(set(CLASS_NAMES)) == len(CLASS_NAMES)


def test_same_seed_is_bitwise_identical() -> None:
    a = make_synthetic_images(7, 300)
    b = make_synthetic_images(7, 300)
    assert torch.equal(a.images, b.images)
    assert torch.equal(a.labels, b.labels)


def test_different_seeds_differ() -> None:
    a = make_synthetic_images(7, 300)
    b = make_synthetic_images(8, 300)
    assert not torch.equal(a.labels, b.labels)
    # Not just a relabelling: the pixels differ almost everywhere.
    assert (a.images != b.images).float().mean() > 0.9


def test_does_not_touch_global_rng() -> None:
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    make_synthetic_images(1, 50)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize(("n_images", "n_classes", "size"), [(205, 10, 32), (40, 4, 24), (1, 10, 16)])
def test_shapes_dtypes_and_balanced_labels(n_images: int, n_classes: int, size: int) -> None:
    s = make_synthetic_images(0, n_images, n_classes=n_classes, image_size=size)
    assert isinstance(s, ImageSet)
    assert s.images.dtype == torch.uint8 and s.images.shape == (n_images, 3, size, size)
    assert s.labels.dtype == torch.int64 and s.labels.shape == (n_images,)
    assert s.images.is_contiguous()
    counts = torch.bincount(s.labels, minlength=n_classes)
    assert len(counts) == n_classes
    assert counts.max() - counts.min() <= 1
    assert counts.sum() == n_images


def test_labels_are_shuffled() -> None:
    labels = make_synthetic_images(0, 100).labels
    assert not torch.equal(labels, torch.arange(100) % 10)


def test_empty_set() -> None:
    s = make_synthetic_images(0, 0)
    assert len(s) == 0 and s.images.shape == (0, 3, 32, 32)


@pytest.mark.parametrize("n_classes", [0, 11])
def test_rejects_unsupported_class_count(n_classes: int) -> None:
    with pytest.raises(ValueError, match=r"n_classes must be between 1 and 10.*disc"):
        make_synthetic_images(0, 10, n_classes=n_classes)


def test_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match="n_images"):
        make_synthetic_images(0, -1)
    with pytest.raises(ValueError, match="image_size"):
        make_synthetic_images(0, 10, image_size=4)


def test_images_have_content() -> None:
    s = make_synthetic_images(0, 200)
    x = s.images.float()
    # Every image has a foreground on a background: no flat images, full use of the range.
    assert x.flatten(1).std(1).min() > 5
    assert x.min() == 0 and x.max() == 255


def test_mean_colour_does_not_identify_the_class() -> None:
    """A nearest-class-mean classifier on per-image mean RGB is near chance (10 %)."""
    train = make_synthetic_images(0, 2000)
    test = make_synthetic_images(1, 2000)

    def mean_rgb(s: ImageSet) -> torch.Tensor:
        return s.images.float().mean((2, 3))

    centroids = torch.stack([mean_rgb(train)[train.labels == c].mean(0) for c in range(10)])
    predicted = torch.cdist(mean_rgb(test), centroids).argmin(1)
    accuracy = (predicted == test.labels).float().mean().item()
    assert accuracy < 0.2


def test_generation_is_vectorized() -> None:
    start = time.perf_counter()
    make_synthetic_images(0, 2000)
    # ~0.2 s here; a per-image Python loop would take many seconds. Loose for busy machines.
    assert time.perf_counter() - start < 5.0
