"""``juicer embed`` end to end: 40 real Fashion-MNIST PNGs, the real EfficientNet-Lite0, a local Ray cluster with one
actor; the cache and the store checked, and the vectors equal to the in-process engine's bit for bit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray")

from app.core.demo import encode_png  # noqa: E402
from app.store import Store  # noqa: E402
from config import load_settings  # noqa: E402
from learner.backbones import backbone_dir, ensure_backbone, resolve_backbone  # noqa: E402
from learner.cache import EmbeddingCache, embedding_cache_dir  # noqa: E402
from learner.datasets import load_fashion_mnist  # noqa: E402
from learner.images import content_hash  # noqa: E402

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
N_IMAGES = 40


def data_dir(root: Path) -> Path:
    """A fresh data folder with the converted backbone linked in from the real one."""
    built, _ = ensure_backbone("efficientnet-lite0", load_settings().data_dir)
    link = backbone_dir("efficientnet-lite0", root)
    link.parent.mkdir(parents=True)
    link.symlink_to(built.resolve(), target_is_directory=True)
    return root


@pytest.fixture
def photos(tmp_path) -> Path:
    if not FASHION_MNIST.is_dir():
        pytest.skip("needs Debian's dataset-fashion-mnist (see docs)")
    dataset = load_fashion_mnist(FASHION_MNIST, per_class_limit=N_IMAGES // 10, seed=0)
    folder = tmp_path / "photos"
    folder.mkdir()
    for index, source in enumerate(dataset.sources):
        (folder / f"{index:03d}.png").write_bytes(encode_png(source.array))
    return folder


def juicer_embed(data: Path, *args: str) -> str:
    env = {**os.environ, "JUICER_DATA_DIR": str(data), "JUICER_LEARNER__BACKBONE": "efficientnet-lite0",
           "PYTHONPATH": str(REPO)}  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "app.cli", "embed", *args, "--no-progress"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def cached(data: Path, hashes: list[str]) -> np.ndarray:
    spec = resolve_backbone("efficientnet-lite0", data)
    with EmbeddingCache(embedding_cache_dir(data), spec.id) as cache:
        assert sorted(cache.hashes()) == sorted(hashes)
        vectors, found = cache.lookup(hashes)
    assert found.all()
    return vectors


def test_embed_on_ray_fills_the_cache_and_the_store_with_the_local_engines_vectors(tmp_path, photos):
    hashes = [content_hash(path.read_bytes()) for path in sorted(photos.iterdir())]
    on_ray, local = data_dir(tmp_path / "ray"), data_dir(tmp_path / "local")

    output = juicer_embed(on_ray, str(photos), "--engine", "ray", "--actors", "1")
    juicer_embed(local, str(photos), "--engine", "local")

    assert f"ray: embedded {N_IMAGES} images" in output
    assert f"merged {N_IMAGES} new vectors" in output and f"imported {N_IMAGES}, duplicates 0, skipped 0" in output
    assert list((on_ray / "embeddings" / "shards").glob("*.parquet")) == []  # merged, then removed
    store = Store.open(on_ray)
    try:
        assert sorted(store.item_ids_by_hash(hashes)) == sorted(set(hashes))
        assert store.count_items().get("pool") == N_IMAGES
    finally:
        store.close()
    ray_vectors, local_vectors = cached(on_ray, hashes), cached(local, hashes)
    assert ray_vectors.shape == (N_IMAGES, 1280)
    assert np.array_equal(ray_vectors, local_vectors)  # bit for bit

    again = juicer_embed(on_ray, str(photos), "--engine", "ray", "--actors", "1")
    assert "ray: embedded 0 images" in again and f"imported 0, duplicates {N_IMAGES}" in again
