"""Embedding-cache lookups at Fashion-MNIST scale: 70,000 hashes x 1280 float32 features.

Prints a table: time to write them, to find which of 70,000 hashes are missing, to read all 70,000 vectors
(as a dict, and as one matrix the way embed_sources reads them), with a concurrent second reader process. No TensorFlow involved.

    .venv/bin/python benchmarks/embedding_cache.py [--n 70000] [--dim 1280] [--smoke]
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from learner.cache import EmbeddingCache  # noqa: E402


def _reader(root: str, hashes: list[str], queue: multiprocessing.Queue) -> None:
    started = time.perf_counter()
    found = EmbeddingCache(Path(root), "bench:v1").get_many(hashes)
    queue.put((len(found), time.perf_counter() - started))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=70_000)
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (seconds): check that the benchmark runs")
    args = parser.parse_args()
    if args.smoke:
        args.n = 2000
    hashes = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(args.n)]
    vectors = np.random.default_rng(0).random((args.n, args.dim), dtype=np.float32)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cache = EmbeddingCache(root, "bench:v1")
        started = time.perf_counter()
        for start in range(0, args.n, 32):  # as embed_sources writes: one transaction per batch of 32
            cache.put_many(hashes[start:start + 32], vectors[start:start + 32])
        rows.append(("write (batches of 32)", time.perf_counter() - started))
        cache.close()

        fresh = EmbeddingCache(root, "bench:v1")
        started = time.perf_counter()
        missing = fresh.missing(hashes + ["0" * 64])
        rows.append(("missing() over all hashes, cold", time.perf_counter() - started))
        assert missing == ["0" * 64]
        started = time.perf_counter()
        found = fresh.get_many(hashes)
        rows.append(("get_many() all vectors", time.perf_counter() - started))
        assert len(found) == args.n and np.array_equal(found[hashes[-1]], vectors[-1])
        started = time.perf_counter()
        matrix, found_mask = fresh.lookup(hashes)
        rows.append(("lookup() all vectors as one matrix", time.perf_counter() - started))
        assert found_mask.all() and matrix.shape == (args.n, args.dim)

        queue: multiprocessing.Queue = multiprocessing.Queue()
        other = multiprocessing.Process(target=_reader, args=(tmp, hashes, queue))
        other.start()
        started = time.perf_counter()
        fresh.get_many(hashes)
        rows.append(("get_many() with a second reader process", time.perf_counter() - started))
        n_found, other_s = queue.get(timeout=120)
        other.join()
        rows.append((f"  ... the other process ({n_found} found)", other_s))
        size_mb = fresh.path.stat().st_size / 1e6

    print(f"\nembedding cache, {args.n} x {args.dim} float32 ({size_mb:.0f} MB SQLite file)")
    print(f"{'operation':45s} {'seconds':>8s} {'items/s':>10s}")
    for name, seconds in rows:
        print(f"{name:45s} {seconds:8.2f} {args.n / seconds:10.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
