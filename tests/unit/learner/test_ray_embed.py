"""What a Ray actor does with one chunk (:func:`learner.ray_embed.embed_chunk`), without Ray: real PNG bytes decoded by
learner.images, a fake backbone (our own seam), hashes already done skipped, a bad image left out."""

from __future__ import annotations

import numpy as np

from learner.images import BytesImage, content_hash
from learner.ray_embed import HashSet, embed_chunk
from tests.support.images import png


class CountingBackbone:
    """Channel means and deviations of its pixels; records each batch's length."""

    id = "fake:v1"
    input_size = (8, 8)
    dim = 6
    batch_size = 2

    def __init__(self) -> None:
        self.batches: list[int] = []

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        self.batches.append(len(pixels))
        return np.concatenate([pixels.mean(axis=(1, 2)), pixels.std(axis=(1, 2))], axis=1).astype(np.float32)


def images(n: int) -> list[bytes]:
    return [png((40 * i % 255, 80, 120), seed=i) for i in range(n)]


def test_a_hash_set_answers_membership():
    blobs = images(3)
    done = HashSet(content_hash(blob) for blob in blobs[:2])

    assert len(done) == 2
    assert content_hash(blobs[0]) in done and content_hash(blobs[1]) in done
    assert content_hash(blobs[2]) not in done and "not a hash" not in done and len(HashSet([])) == 0


def test_a_chunk_is_embedded_once_per_image_skipping_done_and_undecodable_ones():
    blobs = images(5)
    names = [f"img{i}.png" for i in range(5)] + ["copy.png", "bad.png"]
    chunk = [*blobs, blobs[3], b"not an image at all"]
    backbone = CountingBackbone()

    hashes, vectors = embed_chunk(backbone, names, chunk, 10_000, HashSet([content_hash(blobs[0])]))

    assert hashes == [content_hash(blob) for blob in blobs[1:]]  # done, the copy and the bad one left out
    expected = CountingBackbone().embed(np.stack([BytesImage(b).pixels((8, 8)) for b in blobs[1:]]))
    assert np.array_equal(vectors, expected)
    assert sum(backbone.batches) == 4 and max(backbone.batches) <= 2  # the backbone's batch size


def test_nothing_to_embed_starts_no_cluster():
    import sys

    from learner.ray_embed import run_ray_embedding

    rows = []
    run = run_ray_embedding(None, [[], []], done=[], on_rows=lambda *row: rows.append(row), max_pixels=1, max_bytes=1)

    assert (run.embedded, run.per_node, rows) == (0, {}, [])
    assert "ray" not in sys.modules or sys.modules["ray"].is_initialized() is False
