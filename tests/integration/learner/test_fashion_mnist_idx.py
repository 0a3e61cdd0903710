"""Fashion-MNIST from the real idx files of Debian's dataset-fashion-mnist package."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from config import load_settings
from learner.datasets import FASHION_MNIST_CLASSES, load_fashion_mnist

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def idx_dir() -> Path:
    path = load_settings(environ={}).fashion_mnist_dir
    if not (path / "train-images-idx3-ubyte.gz").exists():
        pytest.fail(f"{path} lacks the idx files: install Debian's dataset-fashion-mnist (make setup does)")
    return path


def test_the_whole_dataset(idx_dir):
    dataset = load_fashion_mnist(idx_dir)
    assert len(dataset) == 70_000
    assert dataset.class_names == list(FASHION_MNIST_CLASSES)
    assert dataset.class_counts() == {name: 7_000 for name in FASHION_MNIST_CLASSES}
    assert dataset.item_ids[0] == "fashion-mnist/train/00000"
    assert dataset.item_ids[-1] == "fashion-mnist/t10k/09999"
    # The first training image is an ankle boot (label 9) in every copy of the dataset.
    assert dataset.labels[0] == 9
    pixels = dataset.sources[0].pixels((224, 224))
    assert pixels.shape == (224, 224, 3) and pixels.dtype == np.float32
    assert 0.0 <= pixels.min() and pixels.max() <= 1.0 and pixels.mean() > 0.05
    np.testing.assert_array_equal(pixels[..., 0], pixels[..., 2])


def test_a_reproducible_per_class_subset(idx_dir):
    subset = load_fashion_mnist(idx_dir, per_class_limit=700, seed=0)
    assert len(subset) == 7_000
    assert set(subset.class_counts().values()) == {700}
    assert subset.item_ids == load_fashion_mnist(idx_dir, per_class_limit=700, seed=0).item_ids
    assert subset.item_ids != load_fashion_mnist(idx_dir, per_class_limit=700, seed=1).item_ids
    hashes = {source.content_hash for source in subset.sources[:500]}
    assert len(hashes) > 490  # content hashes tell images apart (a few Fashion-MNIST images are duplicates)
