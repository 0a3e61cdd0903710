"""Backbone throughput: images/s of ``Backbone.embed`` and of ``embed_sources`` (decode + embed + cache write).

On whatever TensorFlow sees (the device is printed). Inputs: random pixels for the bare ``embed``, and
Fashion-MNIST test images (28x28 grey, upscaled to the input size on the decoding thread) for
``embed_sources`` with an empty cache, then the same images again (all cache hits).

    .venv/bin/python benchmarks/backbone_throughput.py [--backbone efficientnet-lite0] [--batch-sizes 32]
        [--n-images 256] [--n-sources 512] [--smoke]
"""

from __future__ import annotations

import argparse
import gzip
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from config import load_settings  # noqa: E402
from learner.backbones import load_backbone, resolve_backbone  # noqa: E402
from learner.cache import EmbeddingCache, embed_sources  # noqa: E402
from learner.images import ArrayImage  # noqa: E402


def fashion_mnist(idx_dir: Path, count: int) -> list[ArrayImage]:
    """The first ``count`` Fashion-MNIST test images as ArrayImage sources (28x28 grey, upscaled when decoded)."""
    with gzip.open(idx_dir / "t10k-images-idx3-ubyte.gz", "rb") as handle:
        raw = np.frombuffer(handle.read(), dtype=np.uint8, offset=16).reshape(-1, 28, 28)
    return [ArrayImage(raw[i], f"fashion-mnist/t10k/{i:05d}") for i in range(count)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default=None, help="name, URL or folder (default: learner.backbone)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32])
    parser.add_argument("--n-images", type=int, default=256, help="random images timed per batch size")
    parser.add_argument("--n-sources", type=int, default=512, help="Fashion-MNIST images through embed_sources")
    parser.add_argument("--mixed-precision", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (seconds): check that the benchmark runs")
    args = parser.parse_args()
    if args.smoke:
        args.n_images, args.n_sources = 64, 64
    logging.basicConfig(level=logging.WARNING)
    settings = load_settings()
    spec = resolve_backbone(args.backbone or settings.learner.backbone, settings.data_dir, settings.learner.input_size)
    height, width = spec.input_size
    rows = []
    device = "?"
    for batch_size in args.batch_sizes:
        backbone = load_backbone(spec, batch_size=batch_size, mixed_precision=args.mixed_precision)
        device = backbone.device
        pixels = np.random.default_rng(0).random((args.n_images, height, width, 3), dtype=np.float32)
        backbone.embed(pixels[:batch_size])  # trace and warm up
        started = time.perf_counter()
        backbone.embed(pixels)
        seconds = time.perf_counter() - started
        rows.append((f"embed, batch {batch_size}", args.n_images, seconds))

        sources = fashion_mnist(settings.fashion_mnist_dir, args.n_sources)
        with tempfile.TemporaryDirectory() as tmp:
            cache = EmbeddingCache(Path(tmp), backbone.id)
            started = time.perf_counter()
            embed_sources(backbone, cache, sources, progress=False)
            rows.append((f"embed_sources, batch {batch_size}, cold cache", len(sources), time.perf_counter() - started))
            started = time.perf_counter()
            embed_sources(backbone, cache, sources, progress=False)
            rows.append((f"embed_sources, batch {batch_size}, all cached", len(sources), time.perf_counter() - started))

    print(f"\n{spec.name} at {height}x{width} on {device}")
    print(f"{'what':42s} {'images':>7s} {'seconds':>8s} {'images/s':>10s}")
    for name, count, seconds in rows:
        print(f"{name:42s} {count:7d} {seconds:8.2f} {count / seconds:10.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
