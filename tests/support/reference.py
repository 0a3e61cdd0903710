"""The inputs of tests/fixtures/efficientnet_lite_torch_reference.npz, built once for the script and the test.

``scripts/make_torch_reference.py`` fed them to the PyTorch original; ``test_backbone_reference`` feeds them to
juicer's conversion and checks their sha256 against the fixture's. Only numpy, Pillow and scikit-image: the
script runs in a throwaway venv with torch and no juicer dependencies.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from skimage import data as skimage_data

NOISE_SEED = 20261128


def reference_inputs(size: int) -> np.ndarray:
    """(3, size, size, 3) float32 RGB in [0, 1]: scikit-image's chelsea and coffee resized bilinear (Pillow) to
    ``size``, and one seeded noise image."""
    images = []
    for name in ("chelsea", "coffee"):
        image = Image.fromarray(getattr(skimage_data, name)()).resize((size, size), Image.BILINEAR)
        images.append(np.asarray(image, dtype=np.float32) / 255.0)
    noise = np.random.default_rng(NOISE_SEED).integers(0, 256, (size, size, 3), dtype=np.uint8)
    images.append(noise.astype(np.float32) / 255.0)
    return np.stack(images)
