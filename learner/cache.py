"""The embedding cache: each image is embedded once per backbone, then read back from disk.

``EmbeddingCache(root, backbone_id)`` keeps two files per backbone under ``root``:

- ``<name>.sqlite``: the index, ``content hash -> row`` (SQLite, WAL journal: any number of readers, in
  threads or processes, read while one writer writes; writers queue on SQLite's write lock);
- ``<name>.f32``: the vectors, row after row of little-endian float32, read through a memory map.

A writer holds SQLite's write lock while it writes new rows into the vector file, flushes them to disk, and
only then commits their index entries, so a reader never finds a hash whose vector is not there yet. Looking
up 70,000 hashes reads the small index, not the vectors (see ``benchmarks/embedding_cache.py``).

``embed_sources(backbone, cache, sources)`` returns the features of every source, running the backbone only
on the hashes the cache lacks: it streams them in fixed-size batches (the next batch is decoded on a thread
while TensorFlow runs the current one), writes each batch to the cache as soon as it is done (an interrupted
run keeps what it did), and embeds each distinct hash once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sqlite3
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Protocol, Sequence

import numpy as np
from tqdm.auto import tqdm

from learner.errors import LearnerError

if TYPE_CHECKING:
    from learner.images import ImageSource

logger = logging.getLogger(__name__)

_QUERY_CHUNK = 500  # hashes per SELECT ... IN (...), well under SQLite's variable limit
_FULL_SCAN_RATIO = 0.25  # asking for more than this share of the index: read it whole instead
_SPARSE_RATIO = 4  # rows covering a span over this many times their number: read, not memory-mapped
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rows (hash TEXT PRIMARY KEY, row INTEGER NOT NULL) WITHOUT ROWID;
"""


class Embedder(Protocol):
    """What :func:`embed_sources` needs of a backbone (:class:`learner.backbones.Backbone` is one)."""

    @property
    def id(self) -> str: ...

    @property
    def input_size(self) -> tuple[int, int]: ...

    dim: int
    batch_size: int

    def embed(self, pixels: np.ndarray) -> np.ndarray: ...


def embedding_cache_dir(data_dir: Path) -> Path:
    """Where juicer keeps embedding caches under its data folder (one pair of files per backbone)."""
    return Path(data_dir) / "embeddings"


class EmbeddingCache:
    """Persistent ``content hash -> float32 vector`` store for one backbone (see the module docstring)."""

    def __init__(self, root: Path, backbone_id: str) -> None:
        self.root = Path(root)
        self.backbone_id = backbone_id
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", backbone_id)[:60].strip("_") or "backbone"
        stem = f"{slug}-{hashlib.sha256(backbone_id.encode()).hexdigest()[:12]}"
        self.path = self.root / f"{stem}.sqlite"
        self.vectors_path = self.root / f"{stem}.f32"
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None

    # -- connection ---------------------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self._connection is not None:
            return self._connection
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self.path, timeout=60.0, check_same_thread=False, isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.executescript(_SCHEMA)
            row = connection.execute("SELECT value FROM meta WHERE key = 'backbone_id'").fetchone()
            if row is None:
                connection.execute("INSERT OR IGNORE INTO meta VALUES ('backbone_id', ?)", (self.backbone_id,))
            elif row[0] != self.backbone_id:
                raise LearnerError(
                    f"embedding cache {self.path} belongs to backbone {row[0]!r}, not {self.backbone_id!r}; "
                    "delete the file"
                )
        except sqlite3.Error as exc:
            raise LearnerError(
                f"cannot open the embedding cache {self.path}: {exc}; delete the file to start afresh"
            ) from exc
        self._connection = connection
        return connection

    def close(self) -> None:
        """Close the database connection (it reopens on next use)."""
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    def __enter__(self) -> "EmbeddingCache":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- reads --------------------------------------------------------------------------------------------

    def _meta_int(self, connection: sqlite3.Connection, key: str) -> int | None:
        row = connection.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else None

    @property
    def dim(self) -> int | None:
        """Length of the stored vectors, or None while the cache is empty."""
        with self._lock:
            return self._meta_int(self._connect(), "dim")

    def __len__(self) -> int:
        with self._lock:
            return self._meta_int(self._connect(), "rows") or 0

    def __contains__(self, content_hash: object) -> bool:
        with self._lock:
            row = self._connect().execute("SELECT 1 FROM rows WHERE hash = ?", (content_hash,)).fetchone()
            return row is not None

    def _rows_of(self, connection: sqlite3.Connection, wanted: list[str]) -> dict[str, int]:
        """``hash -> row`` for the cached ones among ``wanted`` (distinct hashes)."""
        total = self._meta_int(connection, "rows") or 0
        if not total or not wanted:
            return {}
        if len(wanted) > _FULL_SCAN_RATIO * total:
            every = dict(connection.execute("SELECT hash, row FROM rows"))
            return {h: every[h] for h in wanted if h in every}
        found: dict[str, int] = {}
        for start in range(0, len(wanted), _QUERY_CHUNK):
            chunk = wanted[start:start + _QUERY_CHUNK]
            marks = ",".join("?" * len(chunk))
            found.update(connection.execute(f"SELECT hash, row FROM rows WHERE hash IN ({marks})", chunk))
        return found

    def lookup(self, hashes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(vectors (len(hashes), dim) float32, found (len(hashes),) bool); rows not found are zero."""
        with self._lock:
            connection = self._connect()
            try:
                connection.execute("BEGIN")  # one snapshot for the index and the dimension
                try:
                    rows_of = self._rows_of(connection, list(dict.fromkeys(hashes)))
                    dim = self._meta_int(connection, "dim") or 0
                finally:
                    connection.execute("COMMIT")
            except sqlite3.Error as exc:
                raise LearnerError(f"cannot read the embedding cache {self.path}: {exc}") from exc
        rows = np.array([rows_of.get(h, -1) for h in hashes], dtype=np.int64)
        found = rows >= 0
        if found.all() and len(hashes):
            return self._read_rows(rows, dim), found  # the common case: one gather, no extra copy
        vectors = np.zeros((len(hashes), dim), dtype=np.float32)
        if found.any():
            hits = np.flatnonzero(found)
            vectors[hits] = self._read_rows(rows[hits], dim)
        return vectors, found

    def _read_rows(self, rows: np.ndarray, dim: int) -> np.ndarray:
        """The vectors at ``rows`` (any order, repeats allowed), float32.

        Rows spread thinly over the file (a sample of a large pool) are read with one ``pread`` per run of
        adjacent rows; denser ones through a memory map. A memory map maps whole pages, and the kernel's
        read-around maps megabytes around each touched row (8 MB of read-ahead here): 5,000 rows sampled
        from a million mapped 2.5 to 3 GB into the process (``benchmarks/pool_rig.py``), where a read costs their 25 MB.
        """
        if not len(rows):
            return np.zeros((0, dim), dtype=np.float32)
        try:
            with open(self.vectors_path, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                if size < (int(rows.max()) + 1) * dim * 4:
                    raise LearnerError(
                        f"{self.vectors_path} is shorter than its index {self.path} says; delete both to start afresh"
                    )
                if len(rows) * _SPARSE_RATIO < int(rows.max()) - int(rows.min()) + 1:
                    return _pread_rows(handle.fileno(), rows, dim)
                stored = np.memmap(handle, dtype="<f4", mode="r", shape=(size // (4 * dim), dim))
                return np.asarray(stored[rows], dtype=np.float32)
        except (OSError, ValueError) as exc:
            raise LearnerError(
                f"cannot read the embedding vectors {self.vectors_path}: {exc}; delete it and {self.path} to start afresh"
            ) from exc

    def rows(self, hashes: Sequence[str]) -> np.ndarray:
        """Each hash's row in the vector file (int64, -1 where not cached): the index only, no vector is read."""
        with self._lock:
            connection = self._connect()
            try:
                total = self._meta_int(connection, "rows") or 0
                if total and len(hashes) > _FULL_SCAN_RATIO * total:
                    # A pool's worth: the index read whole and looked up as it is (no deduplicated copy of a
                    # million hashes, no filtered second dict: 1.7 s instead of 2.8-3.1 at a million).
                    rows_of = dict(connection.execute("SELECT hash, row FROM rows"))
                else:
                    rows_of = self._rows_of(connection, list(dict.fromkeys(hashes)))
            except sqlite3.Error as exc:
                raise LearnerError(f"cannot read the embedding cache {self.path}: {exc}") from exc
        get = rows_of.get
        return np.fromiter((get(h, -1) for h in hashes), dtype=np.int64, count=len(hashes))

    def matrix(self, rows: np.ndarray) -> "CachedRows":
        """The vectors at ``rows`` (from :meth:`rows`, all cached) as a lazy matrix read through a memory map."""
        return CachedRows(self, np.asarray(rows, dtype=np.int64))

    def get_many(self, hashes: Iterable[str]) -> dict[str, np.ndarray]:
        """The stored vectors of those ``hashes`` that are cached (missing ones are simply absent)."""
        wanted = list(dict.fromkeys(hashes))
        vectors, found = self.lookup(wanted)
        return {h: vectors[i] for i, h in enumerate(wanted) if found[i]}

    def hashes(self) -> list[str]:
        """Every cached hash (a resumed bulk job skips them)."""
        with self._lock:
            return [row[0] for row in self._connect().execute("SELECT hash FROM rows")]

    def missing(self, hashes: Iterable[str]) -> list[str]:
        """The distinct ``hashes`` not cached yet, in first-seen order."""
        wanted = list(dict.fromkeys(hashes))
        with self._lock:
            present = self._rows_of(self._connect(), wanted)
        return [h for h in wanted if h not in present]

    # -- writes -------------------------------------------------------------------------------------------

    def put_many(self, hashes: Sequence[str], vectors: np.ndarray) -> None:
        """Store ``vectors[i]`` under ``hashes[i]`` (hashes already cached keep their vector)."""
        vectors = np.asarray(vectors, dtype="<f4")
        if vectors.ndim != 2 or vectors.shape[0] != len(hashes):
            raise ValueError(f"put_many wants (len(hashes), dim) vectors, got {vectors.shape} for {len(hashes)} hashes")
        if not len(hashes):
            return
        dim = vectors.shape[1]
        with self._lock:
            connection = self._connect()
            try:
                connection.execute("BEGIN IMMEDIATE")  # the write lock also guards the vector file
                try:
                    self._append(connection, list(hashes), vectors, dim)
                except BaseException:
                    connection.execute("ROLLBACK")
                    raise
                connection.execute("COMMIT")
            except sqlite3.Error as exc:
                raise LearnerError(f"cannot write to the embedding cache {self.path}: {exc}") from exc

    def _append(self, connection: sqlite3.Connection, hashes: list[str], vectors: np.ndarray, dim: int) -> None:
        stored_dim = self._meta_int(connection, "dim")
        if stored_dim is not None and stored_dim != dim:
            raise ValueError(f"cache {self.path} holds {stored_dim}-dim vectors; refusing {dim}-dim ones")
        present = self._rows_of(connection, list(dict.fromkeys(hashes)))
        new: dict[str, int] = {}
        for index, content_hash in enumerate(hashes):
            if content_hash not in present and content_hash not in new:
                new[content_hash] = index
        if not new:
            return
        first_row = self._meta_int(connection, "rows") or 0
        block = np.ascontiguousarray(vectors[list(new.values())])
        # Rows past the committed count may hold a crashed writer's leftovers: overwrite them in place.
        descriptor = os.open(self.vectors_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.pwrite(descriptor, block.tobytes(), first_row * dim * 4)
            os.fdatasync(descriptor)  # the vectors reach the disk before the index that points at them
        finally:
            os.close(descriptor)
        connection.executemany(
            "INSERT INTO rows (hash, row) VALUES (?, ?)",
            ((content_hash, first_row + offset) for offset, content_hash in enumerate(new)),
        )
        connection.execute("INSERT OR REPLACE INTO meta VALUES ('rows', ?)", (str(first_row + len(new)),))
        connection.execute("INSERT OR REPLACE INTO meta VALUES ('dim', ?)", (str(dim),))


def _pread_rows(descriptor: int, rows: np.ndarray, dim: int) -> np.ndarray:
    """The vectors at ``rows`` read from the open vector file, one ``pread`` per run of adjacent rows."""
    order = np.argsort(rows, kind="stable")
    ordered = rows[order]
    out = np.empty((len(rows), dim), dtype="<f4")
    starts = np.concatenate([[0], np.flatnonzero(np.diff(ordered) != 1) + 1])
    stops = np.concatenate([starts[1:], [len(rows)]])
    for start, stop in zip(starts.tolist(), stops.tolist()):
        view = memoryview(out[start:stop]).cast("B")
        if os.preadv(descriptor, [view], int(ordered[start]) * dim * 4) != len(view):
            raise OSError("short read")
    if not np.any(np.diff(order) < 0):  # asked in file order (CachedRows sorts before reading): no copy
        return out.astype(np.float32, copy=False)
    result = np.empty_like(out, dtype=np.float32)
    result[order] = out
    return result


class CachedRows:
    """A read-only (n, dim) float32 matrix of cached vectors that reads its rows only when indexed.

    A pool of a million 1280-d vectors is 5 GB; held this way it costs its row numbers (8 MB). Indexing
    (``m[start:stop]``, ``m[int_array]``) gathers those rows through a memory map opened for the read and
    closed after it, so a pass over the pool in chunks never holds more than a chunk; :meth:`take` narrows
    it without reading; ``np.asarray(m)`` reads it whole (for small pools and for code that wants an array).
    """

    def __init__(self, cache: EmbeddingCache, rows: np.ndarray) -> None:
        if len(rows) and int(rows.min()) < 0:
            raise ValueError("CachedRows wants the rows of cached vectors only (no -1)")
        self.cache = cache
        self.rows = rows
        self.dim = int(cache.dim or 0)

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.rows), self.dim)

    @property
    def ndim(self) -> int:
        return 2

    dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return len(self.rows)

    def take(self, index: np.ndarray) -> "CachedRows":
        """The rows ``index`` of this matrix, still unread."""
        return CachedRows(self.cache, self.rows[np.asarray(index)])

    def __getitem__(self, key: object) -> np.ndarray:
        if isinstance(key, tuple):
            raise TypeError("CachedRows takes row indexes only (a slice or an integer array)")
        rows = self.rows[key]  # type: ignore[index]
        if np.ndim(rows) == 0:
            return self._gather(np.array([int(rows)]))[0]
        return self._gather(np.asarray(rows, dtype=np.int64))

    def _gather(self, rows: np.ndarray) -> np.ndarray:
        if not len(rows):
            return np.zeros((0, self.dim), dtype=np.float32)
        order = np.argsort(rows, kind="stable")  # read the file forwards; put the rows back in the asked order
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        out[order] = self.cache._read_rows(rows[order], self.dim)
        return out

    def __array__(self, dtype: object = None, copy: object = None) -> np.ndarray:
        whole = self[:]
        return whole if dtype is None else whole.astype(dtype, copy=False)


def _load_batch(sources: Sequence["ImageSource"], size: tuple[int, int]) -> np.ndarray:
    return np.stack([np.asarray(source.pixels(size), dtype=np.float32) for source in sources])


def _embed_batch(
    backbone: Embedder,
    cache: EmbeddingCache,
    batch: list[tuple[str, "ImageSource"]],
    pixels: np.ndarray,
    out: np.ndarray,
    positions: dict[str, list[int]],
) -> None:
    """Run one decoded batch through the backbone, store it in the cache, and fill its rows of ``out``."""
    features = np.asarray(backbone.embed(pixels), dtype=np.float32)
    if features.shape != (len(batch), backbone.dim):
        raise LearnerError(f"{backbone.id} returned {features.shape} for {len(batch)} images, not (n, {backbone.dim})")
    batch_hashes = [content_hash for content_hash, _ in batch]
    cache.put_many(batch_hashes, features)
    for content_hash, vector in zip(batch_hashes, features):
        out[positions[content_hash]] = vector


def embed_sources(
    backbone: Embedder,
    cache: EmbeddingCache,
    sources: Sequence["ImageSource"],
    *,
    progress: bool = True,
    batch_size: int | None = None,
) -> np.ndarray:
    """Features (len(sources), dim) float32 of ``sources``, embedding only the hashes ``cache`` lacks.

    Rows follow ``sources``; identical images (same content hash) are embedded once. An ``ImageError`` from a
    source propagates, naming it; the batches embedded before it stay cached, so a rerun resumes there.
    """
    if cache.backbone_id != backbone.id:
        raise ValueError(f"cache is for backbone {cache.backbone_id!r} but the backbone is {backbone.id!r}")
    batch_size = batch_size or backbone.batch_size
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    started = time.perf_counter()
    hashes = [source.content_hash for source in sources]
    dim = backbone.dim
    out, found = cache.lookup(hashes)
    if found.any() and out.shape[1] != dim:
        raise LearnerError(
            f"cached vectors are {out.shape[1]}-dim but {backbone.id} gives {dim}; delete {cache.path}"
        )
    if out.shape[1] != dim:
        out = np.zeros((len(sources), dim), dtype=np.float32)
    first_source: dict[str, "ImageSource"] = {}
    positions: dict[str, list[int]] = {}
    for position, (content_hash, source, hit) in enumerate(zip(hashes, sources, found)):
        if not hit:
            first_source.setdefault(content_hash, source)
            positions.setdefault(content_hash, []).append(position)
    todo = list(first_source.items())
    # A request's few images are logged at DEBUG: at INFO the prediction endpoint wrote two lines per request.
    level = logging.INFO if progress or len(sources) > batch_size else logging.DEBUG
    logger.log(
        level, "embedding %d images with %s: %d cached, %d distinct to embed",
        len(sources), backbone.id, int(found.sum()), len(todo),
    )  # fmt: skip
    if not todo:
        return out
    batches = [todo[start:start + batch_size] for start in range(0, len(todo), batch_size)]
    size = tuple(backbone.input_size)
    if len(batches) == 1 and not progress:
        # One batch (the prediction endpoint's case): nothing to overlap, so no decode thread to start.
        _embed_batch(backbone, cache, batches[0], _load_batch([source for _, source in batches[0]], size), out,
                     positions)
    else:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="juicer-decode") as pool, tqdm(
            total=len(todo), unit="img", desc=f"embedding ({backbone.id.split(':')[0]})", disable=not progress
        ) as bar:
            # Decode batch i+1 while the backbone runs batch i: at most two batches of pixels exist at once.
            pending: Future = pool.submit(_load_batch, [source for _, source in batches[0]], size)
            for index, batch in enumerate(batches):
                pixels = pending.result()
                if index + 1 < len(batches):
                    pending = pool.submit(_load_batch, [source for _, source in batches[index + 1]], size)
                _embed_batch(backbone, cache, batch, pixels, out, positions)
                del pixels
                bar.update(len(batch))
    elapsed = time.perf_counter() - started
    logger.log(level, "embedded %d images in %.1f s (%.1f images/s)", len(todo), elapsed, len(todo) / max(elapsed, 1e-9))
    return out
