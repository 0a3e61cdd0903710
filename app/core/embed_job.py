"""``juicer embed --engine ray``: the embedding pass of a bulk import run as a Ray Data job, then merged.

The job (:mod:`learner.ray_embed`) streams ``(content_hash, vector)`` rows back; this module writes them as
Parquet shards under ``<data_dir>/embeddings/shards/`` (:func:`write_shard`: temporary name, fsync, rename, so a
shard is whole or absent), each recording the backbone id it was embedded with. :func:`merge_shards` is the one
writer that moves shards into the embedding cache (each hash stored once, whatever the shards repeat) and deletes
them. The items are then registered by :func:`app.core.imports.import_images`, the bulk import's own door, with an
embedder that finds every vector in the cache (:class:`CacheFirstBackbone`).

Resumable: a run first merges what a killed run left (complete shards; half-written ones are removed), then embeds
only the hashes the cache lacks. A shard from another backbone is refused with a message saying what to do.
Parquet (pyarrow) comes with the ``ray`` extra, as Ray does: this module is imported by ``juicer embed`` only.
"""

from __future__ import annotations

import io
import logging
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from app.core.files import TEMP_SUFFIX, fsync_dir, write_atomic
from app.core.imports import CHUNK_IMAGES, Candidate, is_url, walk
from learner.backbones import BackboneSpec
from learner.cache import EmbeddingCache

logger = logging.getLogger(__name__)

#: Rows per shard: what a killed driver can lose is at most one shard's worth of vectors (plus the batches in flight).
SHARD_ROWS = 1024
SHARD_SUFFIX = ".parquet"
#: Parquet schema metadata: the backbone the vectors came from.
BACKBONE_KEY = b"juicer.backbone_id"


class ShardError(Exception):
    """A shard that cannot be merged into this cache (embedded with another backbone)."""


def shards_dir(data_dir: Path) -> Path:
    """Where ``juicer embed --engine ray`` keeps its shards until they are merged."""
    return Path(data_dir) / "embeddings" / "shards"


def write_shard(folder: Path, backbone_id: str, hashes: Sequence[str], vectors: np.ndarray) -> Path:
    """Write one shard atomically (whole or absent); its name is unique, so concurrent writers never collide."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    vectors = np.ascontiguousarray(vectors, dtype="<f4")
    if vectors.ndim != 2 or len(hashes) != vectors.shape[0]:
        raise ValueError(f"a shard wants (len(hashes), dim) vectors, got {vectors.shape} for {len(hashes)} hashes")
    column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), type=pa.float32()), vectors.shape[1])
    table = pa.table({"content_hash": pa.array(list(hashes), type=pa.string()), "vector": column})
    table = table.replace_schema_metadata({BACKBONE_KEY: backbone_id.encode()})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    name = f"shard-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:12]}{SHARD_SUFFIX}"
    return write_atomic(Path(folder) / name, buffer.getvalue())


def complete_shards(folder: Path, backbone_id: str) -> list[Path]:
    """The whole shards in ``folder``, oldest first. A killed write's temporary file and a shard that cannot be read
    are removed (their rows are embedded again); a shard of another backbone raises :class:`ShardError`."""
    import pyarrow.parquet as pq

    folder = Path(folder)
    if not folder.is_dir():
        return []
    for leftover in folder.glob(f".*{TEMP_SUFFIX}"):
        logger.warning("removing %s: a shard whose write was cut short", leftover)
        leftover.unlink(missing_ok=True)
    shards = []
    for path in sorted(folder.glob(f"*{SHARD_SUFFIX}")):
        try:
            metadata = pq.read_schema(path).metadata or {}
        except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            logger.warning("removing %s: not a whole Parquet file (%s)", path, exc)
            path.unlink(missing_ok=True)
            continue
        found = metadata.get(BACKBONE_KEY, b"").decode() or "an unknown backbone"
        if found != backbone_id:
            raise ShardError(
                f"{path} holds vectors of {found}, not of {backbone_id}: merge it with that backbone "
                f"(learner.backbone) or delete it, then run juicer embed again"
            )
        shards.append(path)
    return shards


def read_shard(path: Path) -> tuple[list[str], np.ndarray]:
    """(hashes, vectors (n, dim) float32) of one shard."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    hashes = table.column("content_hash").to_pylist()
    column = table.column("vector").combine_chunks()
    dim = column.type.list_size
    vectors = column.flatten().to_numpy(zero_copy_only=False).astype("<f4", copy=False).reshape(-1, dim)
    return hashes, vectors


@dataclass
class MergeReport:
    """What a merge did: shards read, rows in them, vectors new to the cache (the rest were there already)."""

    shards: int = 0
    rows: int = 0
    stored: int = 0

    @property
    def duplicates(self) -> int:
        """Rows the cache (or an earlier shard) already held."""
        return self.rows - self.stored


def merge_shards(cache: EmbeddingCache, folder: Path, *, progress: bool = True) -> MergeReport:
    """Move every whole shard of ``folder`` into ``cache`` (each hash stored once), deleting each once it is in."""
    from tqdm import tqdm

    report = MergeReport()
    shards = complete_shards(folder, cache.backbone_id)
    with tqdm(total=len(shards), unit="shard", desc="merging shards", disable=not progress or not shards) as bar:
        for path in shards:
            hashes, vectors = read_shard(path)
            before = len(cache)
            cache.put_many(hashes, vectors)  # the cache's own writer: stored, flushed, committed
            report.stored += len(cache) - before
            report.rows += len(hashes)
            report.shards += 1
            path.unlink()
            bar.update(1)
    if shards:
        fsync_dir(folder)
    return report


@dataclass
class ShardWriter:
    """Gathers streamed rows into shards of :data:`SHARD_ROWS` and writes each whole."""

    folder: Path
    backbone_id: str
    written: int = 0
    shards: list[Path] = field(default_factory=list)
    _hashes: list[str] = field(default_factory=list)
    _vectors: list[np.ndarray] = field(default_factory=list)

    def add(self, hashes: list[str], vectors: np.ndarray) -> None:
        """Take one block of rows; write a shard once enough are held."""
        self._hashes += hashes
        self._vectors.append(np.asarray(vectors, dtype=np.float32))
        if len(self._hashes) >= SHARD_ROWS:
            self.flush()

    def flush(self) -> None:
        """Write what is held as one shard."""
        if self._hashes:
            self.shards.append(write_shard(self.folder, self.backbone_id, self._hashes, np.concatenate(self._vectors)))
            self.written += len(self._hashes)
            self._hashes, self._vectors = [], []


def file_chunks(paths: Sequence[str], max_bytes: int) -> Iterator[list[str]]:
    """The image files of ``paths`` (as :func:`app.core.imports.walk` lists them) in the import's chunks, so the
    job batches images exactly as the in-process import does. URLs are left to the registration pass."""
    chunk: list[str] = []
    for candidate in walk(paths, max_bytes=max_bytes):
        if isinstance(candidate, Candidate) and not is_url(candidate.name):
            chunk.append(candidate.name)
            if len(chunk) >= CHUNK_IMAGES:
                yield chunk
                chunk = []
    if chunk:
        yield chunk


@dataclass
class RayEmbedReport:
    """The job's figures: leftovers merged first, vectors embedded (and on which nodes), the final merge."""

    resumed: MergeReport
    embedded: int
    per_node: dict[str, int]
    merged: MergeReport
    seconds: float

    def lines(self) -> list[str]:
        """For people."""
        out = []
        if self.resumed.shards:
            out.append(f"resumed: {self.resumed.stored} vectors from {self.resumed.shards} shards of an earlier run")
        nodes = ", ".join(f"{node[:8]} {n}" for node, n in sorted(self.per_node.items())) or "none"
        out.append(f"ray: embedded {self.embedded} images in {self.seconds:.1f} s (per node: {nodes})")
        out.append(f"merged {self.merged.stored} new vectors into the cache ({self.merged.duplicates} already there)")
        return out


def embed_on_ray(
    spec: BackboneSpec, cache: EmbeddingCache, paths: Sequence[str], *, data_dir: Path, max_pixels: int, max_bytes: int,
    actors: int = 1, batch_size: int = 32, address: str | None = None, progress: bool = True,
) -> RayEmbedReport:  # fmt: skip
    """Embed the image files of ``paths`` on Ray into ``cache`` (see the module docstring); items are not touched."""
    from learner.ray_embed import run_ray_embedding

    folder = shards_dir(data_dir)
    resumed = merge_shards(cache, folder, progress=progress)
    done = cache.hashes()
    writer = ShardWriter(folder, spec.id)
    started = time.perf_counter()
    try:
        run = run_ray_embedding(
            spec, list(file_chunks(paths, max_bytes)), done=done, on_rows=writer.add, actors=actors,
            batch_size=batch_size, address=address, max_pixels=max_pixels, max_bytes=max_bytes, progress=progress,
        )  # fmt: skip
    finally:
        writer.flush()  # rows that arrived before a failure are kept for the re-run
    seconds = time.perf_counter() - started
    merged = merge_shards(cache, folder, progress=progress)
    return RayEmbedReport(resumed, run.embedded, run.per_node, merged, seconds)


class CacheFirstBackbone:
    """A backbone for :func:`learner.cache.embed_sources` that loads the real one only if the cache lacks a vector
    (after a Ray job, registration finds every vector cached and never starts TensorFlow)."""

    def __init__(self, spec: BackboneSpec, cache: EmbeddingCache, batch_size: int) -> None:
        self.spec = spec
        self.batch_size = batch_size
        self._cache = cache
        self._loaded: Any = None

    @property
    def id(self) -> str:
        """The cache key of the backbone."""
        return self.spec.id

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of its input."""
        return self.spec.input_size

    @property
    def dim(self) -> int:
        """The vectors' length: the cache's, else the loaded backbone's."""
        return self._cache.dim or self._backbone().dim

    def _backbone(self) -> Any:
        if self._loaded is None:
            from learner.backbones import load_backbone

            self._loaded = load_backbone(self.spec, self.batch_size)
        return self._loaded

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        """Run the real backbone (loaded on first use)."""
        return self._backbone().embed(pixels)
