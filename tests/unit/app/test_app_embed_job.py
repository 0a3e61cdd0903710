"""The shard merge of ``juicer embed --engine ray`` (:mod:`app.core.embed_job`): duplicates stored once, a half-written
shard ignored and removed, a shard of another backbone refused; and the service never importing Ray."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyarrow")

from app.core.embed_job import (
    ShardError,
    ShardWriter,
    complete_shards,
    merge_shards,
    read_shard,
    write_shard,
)
from learner.cache import EmbeddingCache

BACKBONE = "lite0:w123:224x224"
DIM = 8
REPO = Path(__file__).resolve().parents[3]


def vectors(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)


def hashes(*numbers: int) -> list[str]:
    return [f"{n:064x}" for n in numbers]


@pytest.fixture
def cache(tmp_path) -> EmbeddingCache:
    with EmbeddingCache(tmp_path / "embeddings", BACKBONE) as opened:
        yield opened


def test_a_shard_reads_back_bit_for_bit(tmp_path):
    written = vectors(0, 5)
    path = write_shard(tmp_path / "shards", BACKBONE, hashes(1, 2, 3, 4, 5), written)

    read_hashes, read_vectors = read_shard(path)

    assert read_hashes == hashes(1, 2, 3, 4, 5)
    assert read_vectors.dtype == np.float32 and np.array_equal(read_vectors, written)


def test_duplicates_across_shards_and_the_cache_are_stored_once(tmp_path, cache):
    folder = tmp_path / "shards"
    cache.put_many(hashes(1), vectors(9, 1))  # already cached before the job
    first, second = vectors(1, 3), vectors(2, 3)
    write_shard(folder, BACKBONE, hashes(1, 2, 3), first)
    write_shard(folder, BACKBONE, hashes(3, 4, 4), second)  # 3 again, and 4 twice inside one shard

    report = merge_shards(cache, folder, progress=False)

    assert (report.shards, report.rows, report.stored, report.duplicates) == (2, 6, 3, 3)
    assert len(cache) == 4
    stored = cache.get_many(hashes(1, 2, 3, 4))
    assert np.array_equal(stored[hashes(1)[0]], vectors(9, 1)[0])  # the cached vector is kept
    assert np.array_equal(stored[hashes(2)[0]], first[1])
    assert list(folder.glob("*.parquet")) == []  # merged shards are deleted
    assert merge_shards(cache, folder, progress=False).rows == 0  # a second merge has nothing to do


def test_a_half_written_shard_is_ignored_and_removed(tmp_path, cache):
    folder = tmp_path / "shards"
    whole = write_shard(folder, BACKBONE, hashes(1, 2), vectors(1, 2))
    cut = write_shard(folder, BACKBONE, hashes(3, 4), vectors(2, 2))
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])  # a copy cut short
    leftover = folder / ".shard-killed.parquet.abc123.tmp"  # a write killed before its rename
    leftover.write_bytes(b"PAR1 half")

    assert complete_shards(folder, BACKBONE) == [whole]
    assert not cut.exists() and not leftover.exists()
    report = merge_shards(cache, folder, progress=False)
    assert (report.shards, report.stored) == (1, 2)
    assert sorted(cache.hashes()) == hashes(1, 2)  # the cut shard's rows are not there: the next job embeds them


def test_a_shard_of_another_backbone_is_refused_with_what_to_do(tmp_path, cache):
    folder = tmp_path / "shards"
    write_shard(folder, BACKBONE, hashes(1), vectors(1, 1))
    foreign = write_shard(folder, "inception-v3:299x299", hashes(2), vectors(2, 1))

    with pytest.raises(ShardError) as refused:
        merge_shards(cache, folder, progress=False)

    message = str(refused.value)
    assert str(foreign) in message and "inception-v3:299x299" in message and BACKBONE in message
    assert "delete it" in message
    assert len(cache) == 0 and foreign.exists()  # nothing merged before the refusal, nothing deleted


def test_the_shard_writer_writes_whole_shards_of_the_streamed_rows(tmp_path, monkeypatch):
    import app.core.embed_job as embed_job

    monkeypatch.setattr(embed_job, "SHARD_ROWS", 4)
    writer = ShardWriter(tmp_path / "shards", BACKBONE)
    for start in range(0, 10, 3):
        count = min(3, 10 - start)
        writer.add(hashes(*range(start, start + count)), vectors(start, count))
    writer.flush()

    assert writer.written == 10 and [len(read_shard(path)[0]) for path in writer.shards] == [6, 4]
    read = [read_shard(path)[0] for path in writer.shards]
    assert [h for shard in read for h in shard] == hashes(*range(10))


def test_the_service_never_imports_ray():
    code = (
        "import sys\n"
        "import app.http, app.worker, app.services, app.cli.main\n"
        "app.cli.main.build_parser()\n"
        "print(sorted(name for name in sys.modules if name == 'ray' or name.startswith('ray.')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
