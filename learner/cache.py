"""The embedding cache: each image is embedded once per backbone, then read back from disk.

``EmbeddingCache(root, backbone_id)`` is one SQLite file per backbone under ``root`` (WAL journal, so any
number of readers, in threads or processes, can read while one writes), keyed by the image's content hash.
Vectors are stored as raw little-endian float32 blobs.

``embed_sources(backbone, cache, sources)`` returns the features of every source, running the backbone only
on the hashes the cache lacks: it streams them in fixed-size batches (the next batch is decoded on a thread
while TensorFlow runs the current one), writes each batch to the cache as soon as it is done (an interrupted
run keeps what it did), and embeds each distinct hash once.
"""

from __future__ import annotations

import hashlib
import logging
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
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS embeddings (hash TEXT PRIMARY KEY, vector BLOB NOT NULL) WITHOUT ROWID;
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


class EmbeddingCache:
    """Persistent ``content hash -> float32 vector`` store for one backbone (see the module docstring)."""

    def __init__(self, root: Path, backbone_id: str) -> None:
        self.root = Path(root)
        self.backbone_id = backbone_id
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", backbone_id)[:60].strip("_") or "backbone"
        digest = hashlib.sha256(backbone_id.encode()).hexdigest()[:12]
        self.path = self.root / f"{slug}-{digest}.sqlite"
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None
        self._dim: int | None = None

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
            dim = connection.execute("SELECT value FROM meta WHERE key = 'dim'").fetchone()
            self._dim = int(dim[0]) if dim else None
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

    @property
    def dim(self) -> int | None:
        """Length of the stored vectors, or None while the cache is empty."""
        with self._lock:
            connection = self._connect()
            if self._dim is None:
                row = connection.execute("SELECT value FROM meta WHERE key = 'dim'").fetchone()
                self._dim = int(row[0]) if row else None
            return self._dim

    def __len__(self) -> int:
        with self._lock:
            return int(self._connect().execute("SELECT COUNT(*) FROM embeddings").fetchone()[0])

    def __contains__(self, content_hash: object) -> bool:
        with self._lock:
            row = self._connect().execute("SELECT 1 FROM embeddings WHERE hash = ?", (content_hash,)).fetchone()
            return row is not None

    def get_many(self, hashes: Iterable[str]) -> dict[str, np.ndarray]:
        """The stored vectors of those ``hashes`` that are cached (missing ones are simply absent)."""
        wanted = list(dict.fromkeys(hashes))
        found: dict[str, np.ndarray] = {}
        with self._lock:
            connection = self._connect()
            try:
                for start in range(0, len(wanted), _QUERY_CHUNK):
                    chunk = wanted[start:start + _QUERY_CHUNK]
                    marks = ",".join("?" * len(chunk))
                    rows = connection.execute(f"SELECT hash, vector FROM embeddings WHERE hash IN ({marks})", chunk)
                    for content_hash, blob in rows:
                        found[content_hash] = np.frombuffer(blob, dtype="<f4")
            except sqlite3.Error as exc:
                raise LearnerError(f"cannot read the embedding cache {self.path}: {exc}") from exc
        return found

    def missing(self, hashes: Iterable[str]) -> list[str]:
        """The distinct ``hashes`` not cached yet, in first-seen order."""
        wanted = list(dict.fromkeys(hashes))
        present: set[str] = set()
        with self._lock:
            connection = self._connect()
            for start in range(0, len(wanted), _QUERY_CHUNK):
                chunk = wanted[start:start + _QUERY_CHUNK]
                marks = ",".join("?" * len(chunk))
                present.update(h for (h,) in connection.execute(f"SELECT hash FROM embeddings WHERE hash IN ({marks})", chunk))
        return [h for h in wanted if h not in present]

    # -- writes -------------------------------------------------------------------------------------------

    def put_many(self, hashes: Sequence[str], vectors: np.ndarray) -> None:
        """Store ``vectors[i]`` under ``hashes[i]`` in one transaction (an existing entry is kept)."""
        vectors = np.asarray(vectors, dtype="<f4")
        if vectors.ndim != 2 or vectors.shape[0] != len(hashes):
            raise ValueError(f"put_many wants (len(hashes), dim) vectors, got {vectors.shape} for {len(hashes)} hashes")
        if not len(hashes):
            return
        dim = vectors.shape[1]
        with self._lock:
            connection = self._connect()
            try:
                connection.execute("BEGIN IMMEDIATE")
                row = connection.execute("SELECT value FROM meta WHERE key = 'dim'").fetchone()
                if row is None:
                    connection.execute("INSERT INTO meta VALUES ('dim', ?)", (str(dim),))
                elif int(row[0]) != dim:
                    connection.execute("ROLLBACK")
                    raise ValueError(f"cache {self.path} holds {row[0]}-dim vectors; refusing {dim}-dim ones")
                connection.executemany(
                    "INSERT OR IGNORE INTO embeddings (hash, vector) VALUES (?, ?)",
                    ((h, np.ascontiguousarray(v).tobytes()) for h, v in zip(hashes, vectors)),
                )
                connection.execute("COMMIT")
            except sqlite3.Error as exc:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise LearnerError(f"cannot write to the embedding cache {self.path}: {exc}") from exc
            self._dim = dim


def _load_batch(sources: Sequence["ImageSource"], size: tuple[int, int]) -> np.ndarray:
    return np.stack([np.asarray(source.pixels(size), dtype=np.float32) for source in sources])


def embed_sources(
    backbone: Embedder,
    cache: EmbeddingCache,
    sources: Sequence["ImageSource"],
    *,
    progress: bool = True,
    batch_size: int | None = None,
) -> np.ndarray:
    """Features (len(sources), dim) float32 of ``sources``, embedding only the hashes ``cache`` lacks."""
    if cache.backbone_id != backbone.id:
        raise ValueError(f"cache is for backbone {cache.backbone_id!r} but the backbone is {backbone.id!r}")
    batch_size = batch_size or backbone.batch_size
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    started = time.perf_counter()
    hashes = [source.content_hash for source in sources]
    vectors = cache.get_many(hashes)
    first_source: dict[str, "ImageSource"] = {}
    for content_hash, source in zip(hashes, sources):
        if content_hash not in vectors:
            first_source.setdefault(content_hash, source)
    todo = list(first_source.items())
    logger.info(
        "embedding %d images with %s: %d distinct, %d cached, %d to embed",
        len(sources), backbone.id, len(set(hashes)), len(vectors), len(todo),
    )
    if todo:
        batches = [todo[start:start + batch_size] for start in range(0, len(todo), batch_size)]
        size = tuple(backbone.input_size)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="juicer-decode") as pool, tqdm(
            total=len(todo), unit="img", desc=f"embedding ({backbone.id.split(':')[0]})", disable=not progress
        ) as bar:
            # Decode batch i+1 while the backbone runs batch i; at most two batches of pixels exist at once.
            pending: Future = pool.submit(_load_batch, [source for _, source in batches[0]], size)
            for index, batch in enumerate(batches):
                pixels = pending.result()
                if index + 1 < len(batches):
                    pending = pool.submit(_load_batch, [source for _, source in batches[index + 1]], size)
                features = np.asarray(backbone.embed(pixels), dtype=np.float32)
                del pixels
                batch_hashes = [content_hash for content_hash, _ in batch]
                cache.put_many(batch_hashes, features)
                vectors.update(zip(batch_hashes, features))
                bar.update(len(batch))
        elapsed = time.perf_counter() - started
        logger.info("embedded %d images in %.1f s (%.1f images/s)", len(todo), elapsed, len(todo) / max(elapsed, 1e-9))
    dim = backbone.dim
    out = np.empty((len(sources), dim), dtype=np.float32)
    for row, content_hash in enumerate(hashes):
        vector = vectors[content_hash]
        if vector.shape != (dim,):
            raise LearnerError(
                f"cached vector for {content_hash[:12]} has shape {vector.shape}, the backbone gives ({dim},); "
                f"delete {cache.path}"
            )
        out[row] = vector
    return out
