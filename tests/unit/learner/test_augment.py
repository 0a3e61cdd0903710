"""Augmentation: deterministic copies with their own exact cache keys, and pixels that match their parameters."""

from __future__ import annotations

import numpy as np
import pytest

from learner.augment import AugmentedImage, AugmentParams, augment
from learner.images import ArrayImage, ImageSource


@pytest.fixture
def gradient():
    """A 20x30 RGB image whose red channel rises left to right and green channel top to bottom."""
    rows, cols = np.mgrid[0:20, 0:30]
    array = np.dstack([cols * 255 // 29, rows * 255 // 19, np.full_like(rows, 128)]).astype(np.uint8)
    return ArrayImage(array, "gradient")


def test_same_seed_same_copies_different_seed_different_copies(gradient):
    first = augment(gradient, 4, seed=3)
    again = augment(gradient, 4, seed=3)
    other = augment(gradient, 4, seed=4)
    assert [c.content_hash for c in first] == [c.content_hash for c in again]
    assert [c.params for c in first] == [c.params for c in again]
    np.testing.assert_array_equal(first[0].pixels((16, 16)), again[0].pixels((16, 16)))
    assert {c.content_hash for c in first}.isdisjoint(c.content_hash for c in other)


def test_copies_have_distinct_hashes_unlike_the_original(gradient):
    copies = augment(gradient, 8, seed=0)
    hashes = {c.content_hash for c in copies}
    assert len(hashes) == 8 and gradient.content_hash not in hashes
    assert all(isinstance(c, ImageSource) for c in copies)
    assert all("gradient" in c.source for c in copies)


def test_different_images_get_different_draws_for_one_seed(gradient):
    flipped = ArrayImage(np.ascontiguousarray(gradient.array[:, ::-1]), "flipped")
    assert [c.params for c in augment(gradient, 3, 0)] != [c.params for c in augment(flipped, 3, 0)]


def test_hash_is_base_hash_plus_params(gradient):
    params = AugmentParams(crop_top=0.1, crop_left=0.05, crop_height=0.8, crop_width=0.9, flip=True, brightness=1.1)
    same = AugmentedImage(ArrayImage(gradient.array.copy(), "renamed"), AugmentParams(0.1, 0.05, 0.8, 0.9, True, 1.1))
    assert AugmentedImage(gradient, params).content_hash == same.content_hash
    assert AugmentedImage(gradient, params).content_hash != AugmentedImage(gradient, AugmentParams(flip=True)).content_hash


def test_pixels_follow_the_parameters(gradient):
    plain = gradient.pixels((20, 30))
    identity = AugmentedImage(gradient, AugmentParams()).pixels((20, 30))
    np.testing.assert_allclose(identity, plain, atol=1e-6)
    flipped = AugmentedImage(gradient, AugmentParams(flip=True)).pixels((20, 30))
    np.testing.assert_allclose(flipped, plain[:, ::-1], atol=1e-6)
    darker = AugmentedImage(gradient, AugmentParams(brightness=0.5)).pixels((20, 30))
    np.testing.assert_allclose(darker, plain * 0.5, atol=1e-6)
    # The right half only: red (left-to-right ramp) starts near the middle of its range.
    right_half = AugmentedImage(gradient, AugmentParams(crop_left=0.5, crop_width=0.5)).pixels((20, 30))
    assert right_half.shape == (20, 30, 3)
    assert right_half[:, 0, 0].mean() == pytest.approx(0.5, abs=0.06)
    assert right_half[:, -1, 0].mean() == pytest.approx(1.0, abs=0.03)
    assert 0.0 <= right_half.min() and right_half.max() <= 1.0


def test_brightness_is_clipped(gradient):
    bright = AugmentedImage(gradient, AugmentParams(brightness=3.0)).pixels((8, 8))
    assert bright.max() == 1.0 and bright.dtype == np.float32


def test_invalid_parameters_are_refused(gradient):
    with pytest.raises(ValueError):
        AugmentParams(crop_top=0.5, crop_height=0.8)
    with pytest.raises(ValueError):
        AugmentParams(brightness=0)
    with pytest.raises(ValueError):
        augment(gradient, -1, 0)
    assert augment(gradient, 0, 0) == []
