"""Write a small folder-per-class dataset of real photos: augmented crops of scikit-image's sample photos.

    PYTHONPATH=$PWD .venv/bin/python scripts/make_photo_folder.py OUT_DIR [--per-class 60] [--classes 10] [--seed 0]

Each class is ONE photograph (astronaut, camera, cat, coffee, hubble, immunohistochemistry, rocket, retina,
coins, moon; ``--classes N`` keeps the first N); its images are random crops (20-70% of the side), flips, small rotations and brightness /
contrast changes of that photo, saved as JPEG. It is small and artificial (instance recognition, not
categories): a check that juicer's choices are not tuned to Fashion-MNIST alone, nothing more, for a machine
with no photo dataset at hand.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

PHOTOS = ("astronaut", "camera", "cat", "coffee", "hubble_deep_field", "immunohistochemistry", "rocket", "retina",
          "coins", "moon")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--per-class", type=int, default=60)
    parser.add_argument("--classes", type=int, default=len(PHOTOS), choices=range(2, len(PHOTOS) + 1), metavar="N",
                        help=f"how many of the {len(PHOTOS)} photos become classes (the first N; default all)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import skimage.data

    rng = np.random.default_rng(args.seed)
    photos = PHOTOS[: args.classes]
    for name in photos:
        photo = Image.fromarray(np.asarray(getattr(skimage.data, name)())).convert("RGB")
        folder = args.out / name
        folder.mkdir(parents=True, exist_ok=True)
        width, height = photo.size
        for i in range(args.per_class):
            side = int(min(width, height) * rng.uniform(0.2, 0.7))
            left, top = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
            image = photo.crop((left, top, left + side, top + side)).rotate(float(rng.uniform(-15, 15)))
            if rng.random() < 0.5:
                image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            image = ImageEnhance.Brightness(image).enhance(float(rng.uniform(0.7, 1.3)))
            image = ImageEnhance.Contrast(image).enhance(float(rng.uniform(0.7, 1.3)))
            image.resize((160, 160)).save(folder / f"{name}-{i:03d}.jpg", quality=90)
    print(f"wrote {len(photos)} classes x {args.per_class} images under {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
