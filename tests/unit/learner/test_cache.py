"""The embedding cache and embed_sources, with a fake backbone and fake sources (our own seams)."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest

from learner.cache import EmbeddingCache, embed_sources
from learner.errors import LearnerError


class FakeSource:
    """An ImageSource over a small uint8 array; counts how often it is decoded."""

    def __init__(self, seed: int, log: list[str] | None = None) -> None:
        self.array = np.random.default_rng(seed).integers(0, 256, (4, 4, 3), dtype=np.uint8)
        self.source = f"fake/{seed}"
        self.decoded = 0
        self._log = log

    @property
    def content_hash(self) -> str:
        return hashlib.sha256(self.array.tobytes()).hexdigest()

    def pixels(self, size: tuple[int, int]) -> np.ndarray:
        self.decoded += 1
        if self._log is not None:
            self._log.append("decode")
        reps = (size[0] // 4, size[1] // 4, 1)
        return np.tile(self.array.astype(np.float32) / 255.0, reps)


class FakeBackbone:
    """A deterministic 'backbone': per-image channel means and a few moments; counts its calls."""

    def __init__(self, batch_size: int = 4, backbone_id: str = "fake:v1", log: list[str] | None = None) -> None:
        self.id = backbone_id
        self.input_size = (8, 8)
        self.dim = 6
        self.batch_size = batch_size
        self.calls = 0
        self.images = 0
        self._log = log

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        assert pixels.shape[1:] == (8, 8, 3) and pixels.dtype == np.float32
        assert pixels.shape[0] <= self.batch_size
        self.calls += 1
        self.images += pixels.shape[0]
        if self._log is not None:
            self._log.append(f"embed{pixels.shape[0]}")
        means = pixels.mean(axis=(1, 2))
        return np.concatenate([means, pixels.std(axis=(1, 2))], axis=1).astype(np.float32)


def expected(sources: list[FakeSource], backbone: FakeBackbone) -> np.ndarray:
    pixels = np.stack([s.pixels(backbone.input_size) for s in sources])
    return FakeBackbone.embed(FakeBackbone(batch_size=len(sources)), pixels)


def test_first_run_embeds_every_image_in_source_order(tmp_path: Path) -> None:
    sources = [FakeSource(i) for i in range(10)]
    backbone = FakeBackbone(batch_size=4)

    features = embed_sources(backbone, EmbeddingCache(tmp_path, backbone.id), sources, progress=False)

    assert features.shape == (10, 6) and features.dtype == np.float32
    np.testing.assert_allclose(features, expected(sources, backbone), rtol=1e-6)
    assert backbone.calls == 3  # 4 + 4 + 2


def test_second_run_calls_the_backbone_zero_times_even_from_a_new_instance(tmp_path: Path) -> None:
    sources = [FakeSource(i) for i in range(10)]
    first = embed_sources(FakeBackbone(), EmbeddingCache(tmp_path, "fake:v1"), sources, progress=False)
    backbone = FakeBackbone()
    fresh_sources = [FakeSource(i) for i in range(10)]

    second = embed_sources(backbone, EmbeddingCache(tmp_path, "fake:v1"), fresh_sources, progress=False)

    assert backbone.calls == 0
    assert all(source.decoded == 0 for source in fresh_sources)
    np.testing.assert_array_equal(first, second)


def test_only_missing_images_are_embedded(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path, "fake:v1")
    embed_sources(FakeBackbone(), cache, [FakeSource(i) for i in range(5)], progress=False)
    backbone = FakeBackbone()
    sources = [FakeSource(i) for i in range(8)]

    features = embed_sources(backbone, cache, sources, progress=False)

    assert backbone.images == 3
    assert [s.decoded for s in sources] == [0] * 5 + [1] * 3
    np.testing.assert_allclose(features, expected(sources, backbone), rtol=1e-6)


def test_identical_images_are_embedded_once(tmp_path: Path) -> None:
    sources = [FakeSource(1), FakeSource(2), FakeSource(1), FakeSource(1)]
    backbone = FakeBackbone()

    features = embed_sources(backbone, EmbeddingCache(tmp_path, backbone.id), sources, progress=False)

    assert backbone.images == 2
    np.testing.assert_array_equal(features[0], features[2])
    np.testing.assert_array_equal(features[0], features[3])
    assert len(EmbeddingCache(tmp_path, backbone.id)) == 2


def test_pixels_are_streamed_never_more_than_two_batches_ahead(tmp_path: Path) -> None:
    log: list[str] = []
    sources = [FakeSource(i, log) for i in range(40)]
    backbone = FakeBackbone(batch_size=4, log=log)

    embed_sources(backbone, EmbeddingCache(tmp_path, backbone.id), sources, progress=False)

    decoded = embedded = worst = 0
    for event in log:
        if event == "decode":
            decoded += 1
        else:
            embedded += int(event[len("embed"):])
        worst = max(worst, decoded - embedded)
    assert embedded == 40
    assert worst <= 2 * backbone.batch_size


def test_each_batch_is_stored_as_it_completes(tmp_path: Path) -> None:
    class Broken(FakeSource):
        def pixels(self, size: tuple[int, int]) -> np.ndarray:
            raise LearnerError("cannot decode")

    sources = [FakeSource(i) for i in range(8)] + [Broken(99)]
    with pytest.raises(LearnerError, match="cannot decode"):
        embed_sources(FakeBackbone(batch_size=4), EmbeddingCache(tmp_path, "fake:v1"), sources, progress=False)

    assert len(EmbeddingCache(tmp_path, "fake:v1")) == 8


def test_backbones_have_separate_caches(tmp_path: Path) -> None:
    sources = [FakeSource(i) for i in range(3)]
    embed_sources(FakeBackbone(backbone_id="fake:v1"), EmbeddingCache(tmp_path, "fake:v1"), sources, progress=False)
    other = FakeBackbone(backbone_id="fake:v2")

    embed_sources(other, EmbeddingCache(tmp_path, "fake:v2"), sources, progress=False)

    assert other.images == 3


def test_a_cache_for_another_backbone_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fake:v2"):
        embed_sources(FakeBackbone(backbone_id="fake:v2"), EmbeddingCache(tmp_path, "fake:v1"), [FakeSource(1)])


def test_empty_input_gives_an_empty_matrix(tmp_path: Path) -> None:
    backbone = FakeBackbone()
    features = embed_sources(backbone, EmbeddingCache(tmp_path, backbone.id), [], progress=False)
    assert features.shape == (0, 6) and backbone.calls == 0


def test_get_many_returns_exactly_the_cached_vectors(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path, "fake:v1")
    vectors = np.arange(12, dtype=np.float32).reshape(3, 4)
    cache.put_many(["a", "b", "c"], vectors)

    found = cache.get_many(["c", "x", "a"])

    assert set(found) == {"a", "c"}
    np.testing.assert_array_equal(found["c"], vectors[2])
    assert cache.missing(["a", "x", "y", "x"]) == ["x", "y"]
    assert "b" in cache and "x" not in cache and cache.dim == 4


def test_vectors_of_another_length_are_refused(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path, "fake:v1")
    cache.put_many(["a"], np.zeros((1, 4), np.float32))
    with pytest.raises(ValueError, match="4-dim"):
        cache.put_many(["b"], np.zeros((1, 5), np.float32))
    assert "b" not in cache


def test_a_file_that_is_not_a_database_gives_a_clear_error(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path, "fake:v1")
    tmp_path.mkdir(exist_ok=True)
    cache.path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(LearnerError, match="delete the file"):
        len(cache)


def test_readers_see_a_consistent_cache_while_a_writer_writes(tmp_path: Path) -> None:
    writer = EmbeddingCache(tmp_path, "fake:v1")
    writer.put_many(["seed"], np.ones((1, 8), np.float32))
    errors: list[BaseException] = []
    done = threading.Event()

    def read() -> None:
        reader = EmbeddingCache(tmp_path, "fake:v1")
        try:
            while not done.is_set():
                found = reader.get_many(["seed", *(f"h{i}" for i in range(200))])
                assert all(v.shape == (8,) for v in found.values()) and "seed" in found
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            errors.append(exc)
        finally:
            reader.close()

    threads = [threading.Thread(target=read) for _ in range(3)]
    for thread in threads:
        thread.start()
    for start in range(0, 200, 20):
        writer.put_many([f"h{i}" for i in range(start, start + 20)], np.full((20, 8), start, np.float32))
    done.set()
    for thread in threads:
        thread.join()

    assert errors == []
    assert len(EmbeddingCache(tmp_path, "fake:v1")) == 201


def test_the_index_uses_wal_so_readers_do_not_block(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path, "fake:v1")
    cache.put_many(["a"], np.zeros((1, 2), np.float32))
    with sqlite3.connect(cache.path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def _write_range(root: str, start: int, stop: int) -> None:
    cache = EmbeddingCache(Path(root), "fake:v1")
    for first in range(start, stop, 7):
        ids = range(first, min(first + 7, stop))
        cache.put_many([f"h{i}" for i in ids], np.array([[i, -i, i * 0.5] for i in ids], np.float32))
    cache.close()


def test_writers_in_two_processes_never_mix_up_vectors(tmp_path: Path) -> None:
    import multiprocessing

    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=_write_range, args=(str(tmp_path), a, b)) for a, b in ((0, 150), (100, 250))]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=60)
    assert [writer.exitcode for writer in writers] == [0, 0]

    cache = EmbeddingCache(tmp_path, "fake:v1")
    vectors, found = cache.lookup([f"h{i}" for i in range(250)])

    assert found.all() and len(cache) == 250  # the 50 shared hashes were stored once
    expected = np.array([[i, -i, i * 0.5] for i in range(250)], np.float32)
    np.testing.assert_array_equal(vectors, expected)


def test_leftovers_of_a_crashed_writer_are_overwritten(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path, "fake:v1")
    cache.put_many(["a"], np.ones((1, 2), np.float32))
    with open(cache.vectors_path, "ab") as handle:  # a writer died after writing, before committing
        handle.write(np.full((3, 2), 9, np.float32).tobytes())

    cache.put_many(["b"], np.full((1, 2), 2, np.float32))

    vectors, found = cache.lookup(["a", "b"])
    assert found.all()
    np.testing.assert_array_equal(vectors, [[1, 1], [2, 2]])


def test_a_vector_file_shorter_than_its_index_is_reported(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path, "fake:v1")
    cache.put_many(["a", "b"], np.ones((2, 4), np.float32))
    with open(cache.vectors_path, "r+b") as handle:
        handle.truncate(16)
    with pytest.raises(LearnerError, match="shorter than its index"):
        cache.get_many(["a", "b"])


def test_lookup_marks_what_is_missing(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path, "fake:v1")
    cache.put_many(["a", "b"], np.array([[1, 2], [3, 4]], np.float32))

    vectors, found = cache.lookup(["b", "zz", "a", "b"])

    assert found.tolist() == [True, False, True, True]
    np.testing.assert_array_equal(vectors, [[3, 4], [0, 0], [1, 2], [3, 4]])


def test_caches_live_under_the_data_folder() -> None:
    from learner.cache import embedding_cache_dir

    assert embedding_cache_dir(Path("/srv/juicer")) == Path("/srv/juicer/embeddings")


def test_rows_spread_thinly_over_the_file_are_read_without_mapping_it(tmp_path: Path, monkeypatch) -> None:
    cache = EmbeddingCache(tmp_path, "fake:v1")
    expected = np.arange(300 * 3, dtype=np.float32).reshape(300, 3)
    hashes = [f"h{i}" for i in range(300)]
    cache.put_many(hashes, expected)
    dense = np.random.default_rng(0).permutation(np.arange(100, 140))  # a chunk of a pool: through the memory map
    vectors, found = cache.lookup([hashes[i] for i in dense])
    assert found.all()
    np.testing.assert_array_equal(vectors, expected[dense])

    def no_map(*args, **kwargs):
        raise AssertionError("a sample spread over the file is read, not memory-mapped (the map's read-around)")

    monkeypatch.setattr(np, "memmap", no_map)
    sparse = [250, 7, 7, 8, 9, 120, 299, 0]  # any order, repeats, runs of adjacent rows
    vectors, found = cache.lookup([hashes[i] for i in sparse])
    assert found.all()
    np.testing.assert_array_equal(vectors, expected[sparse])
    matrix = cache.matrix(cache.rows([hashes[i] for i in sparse]))
    np.testing.assert_array_equal(np.asarray(matrix), expected[sparse])
    np.testing.assert_array_equal(matrix[np.array([5, 1])], expected[[120, 7]])


@pytest.mark.parametrize("share", ["a few", "most"])  # looked up hash by hash, or the index read whole
def test_rows_give_each_hash_its_row_or_minus_one(tmp_path: Path, share: str) -> None:
    cache = EmbeddingCache(tmp_path, "fake:v1")
    hashes = [f"h{i}" for i in range(40)]
    cache.put_many(hashes, np.arange(80, dtype=np.float32).reshape(40, 2))
    asked = ["h3", "nope", "h3", "h39"] if share == "a few" else hashes[::-1] + ["nope", "h0"]
    rows = cache.rows(asked)
    assert rows.dtype == np.int64
    assert rows.tolist() == [int(h[1:]) if h != "nope" else -1 for h in asked]
    assert cache.rows([]).tolist() == []


def test_a_request_sized_call_logs_at_debug_and_a_bulk_one_at_info(tmp_path: Path, caplog) -> None:
    """The prediction endpoint embeds a request's few images (no progress bar, one batch): two INFO lines per
    request flooded the service's log; a bulk embedding (more than a batch, or with progress) still says so."""
    backbone = FakeBackbone(batch_size=4)
    cache = EmbeddingCache(tmp_path, backbone.id)
    with caplog.at_level("DEBUG", logger="learner.cache"):
        embed_sources(backbone, cache, [FakeSource(0)], progress=False)
        request_levels = {record.levelname for record in caplog.records}
        caplog.clear()
        embed_sources(backbone, cache, [FakeSource(i) for i in range(1, 10)], progress=False)
        bulk_levels = {record.levelname for record in caplog.records}
    assert request_levels == {"DEBUG"}
    assert bulk_levels == {"INFO"}
