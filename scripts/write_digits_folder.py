"""Write scikit-learn's bundled handwritten digits (1,797 8x8 images, 10 classes) as a folder dataset.

A second, offline dataset for ``juicer curve --dataset DIR`` (the TF flowers archive needs the internet):
``DIR/<digit>/<index>.png``, each image scaled up to 32x32 grey levels.

    .venv/bin/python scripts/write_digits_folder.py data/juicer/digits
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits


def main(out: str) -> int:
    digits = load_digits()
    root = Path(out)
    for index, (image, label) in enumerate(zip(digits.images, digits.target)):
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (np.asarray(image) / 16.0 * 255).astype(np.uint8)
        Image.fromarray(pixels, "L").resize((32, 32), Image.Resampling.NEAREST).save(folder / f"{index:04d}.png")
    print(f"wrote {len(digits.images)} images in {len(set(digits.target))} class folders under {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "data/juicer/digits"))
