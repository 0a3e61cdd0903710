"""How long decoding takes per image at the backbone's 224x224, and how long the dataset loaders take.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_images.py [--smoke]

The data-size curve embeds 7,000 Fashion-MNIST images at about 100 images/s, so decoding must stay far below
10 ms per image (a 28x28 array takes well under 1 ms).
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data as skdata

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from learner.datasets import load_fashion_mnist  # noqa: E402
from learner.images import ArrayImage, BytesImage  # noqa: E402

SIZE = (224, 224)
IDX_DIR = Path("/usr/share/datasets/fashion-mnist")


def per_call_ms(func, repeats: int) -> float:
    func()  # warm up
    start = time.perf_counter()
    for _ in range(repeats):
        func()
    return (time.perf_counter() - start) / repeats * 1000


def encoded(array: np.ndarray, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (seconds): check that the benchmark runs")
    args = parser.parse_args()
    scale = 0.02 if args.smoke else 1  # fewer repeats
    rng = np.random.default_rng(0)
    chelsea = skdata.chelsea()  # 451x300 photo
    big = np.asarray(Image.fromarray(chelsea).resize((4000, 3000)))  # a 12-megapixel camera photo
    cases = [
        ("Fashion-MNIST 28x28 array", ArrayImage(rng.integers(0, 256, (28, 28), dtype=np.uint8), "fm"), 2000),
        ("RGB 451x300 array", ArrayImage(chelsea, "chelsea"), 500),
        ("JPEG 451x300", BytesImage(encoded(chelsea, "JPEG", quality=90)), 300),
        ("PNG 451x300", BytesImage(encoded(chelsea, "PNG")), 200),
        ("WebP 451x300", BytesImage(encoded(chelsea, "WEBP", quality=90)), 200),
        ("JPEG 4000x3000 (draft)", BytesImage(encoded(big, "JPEG", quality=90)), 20),
    ]
    print(f"{'decode to 224x224 float RGB':<32} {'ms/image':>10} {'images/s':>10}")
    for name, source, repeats in cases:
        ms = per_call_ms(lambda: source.pixels(SIZE), max(1, int(repeats * scale)))
        print(f"{name:<32} {ms:>10.3f} {1000 / ms:>10.0f}")
    if (IDX_DIR / "train-images-idx3-ubyte.gz").exists():
        print()
        print(f"{'load_fashion_mnist':<32} {'seconds':>10}")
        for limit in (700,) if args.smoke else (None, 700):
            start = time.perf_counter()
            dataset = load_fashion_mnist(IDX_DIR, per_class_limit=limit)
            print(f"{f'per_class_limit={limit} ({len(dataset)})':<32} {time.perf_counter() - start:>10.2f}")


if __name__ == "__main__":
    main()
