"""juicer's torch-free EfficientNet-Lite against the original PyTorch model (fixture made by
scripts/make_torch_reference.py with torch 2.13 and PyPI efficientnet-lite-pytorch)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import tf_keras

from learner.efficientnet_lite import VARIANTS, build_model
from tests.support.reference import reference_inputs

pytestmark = pytest.mark.integration

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "efficientnet_lite_torch_reference.npz"


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_features_and_logits_match_the_pytorch_original(variant: str) -> None:
    reference = np.load(FIXTURE)
    tag = variant.replace("-", "_")
    pixels = reference_inputs(VARIANTS[variant].input_size)
    assert hashlib.sha256(pixels.tobytes()).hexdigest() == str(reference[f"{tag}_inputs_sha256"]), (
        "the test inputs differ from those the fixture was made from (Pillow or scikit-image changed?): "
        "regenerate it with scripts/make_torch_reference.py"
    )
    classifier = build_model(variant, include_top=True)
    both = tf_keras.Model(classifier.input, [classifier.get_layer("avg_pool").output, classifier.output])

    features, logits = (out.numpy() for out in both(pixels, training=False))

    np.testing.assert_allclose(features, reference[f"{tag}_features"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(logits, reference[f"{tag}_logits"], rtol=0, atol=1e-4)
    assert np.array_equal(logits.argmax(1), reference[f"{tag}_logits"].argmax(1))
