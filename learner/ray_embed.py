"""Embedding a folder of images on a Ray cluster (Ray Data): the engine behind ``juicer embed --engine ray``.

The images arrive as chunks of file paths. A Ray Data pipeline reads each chunk's bytes in a task
(:func:`read_chunk`: hashed, and the hashes already done dropped), then hands the chunk to an actor pool holding one
backbone per actor (:class:`ChunkEmbedder`, a GPU each where Ray sees GPUs). An actor embeds its chunk with
:func:`learner.cache.embed_sources`, the very function the in-process path runs on the same chunks, so images are
decoded by :mod:`learner.images` and batched exactly as there: a fresh folder gives bit-identical vectors (the CPU
kernels are not batch-invariant, so other batches would differ in the last bits). Rows ``(content_hash, vector,
node)`` stream back to the driver, which hands them to ``on_rows`` (the caller writes them as shards).

Ray is imported only inside :func:`run_ray_embedding`: nothing else in juicer needs it, and the service never
imports this module. Every path must be readable on every node (a shared folder on a real cluster).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from learner.backbones import BackboneSpec
from learner.cache import Embedder, embed_sources
from learner.errors import EmbeddingJobError, ImageError
from learner.images import BytesImage

logger = logging.getLogger(__name__)

#: The object store a local cluster gets (Ray takes 30% of the RAM unless told).
OBJECT_STORE_BYTES = 512 * 1024**2


class HashSet:
    """A sorted array of sha256 digests: membership for a million hashes in 32 MB, shipped once to every worker."""

    def __init__(self, hashes: Iterable[str]) -> None:
        digests = sorted({bytes.fromhex(h) for h in hashes})
        self._digests = np.array(digests, dtype="S32") if digests else np.zeros(0, dtype="S32")

    def __len__(self) -> int:
        return len(self._digests)

    def __contains__(self, content_hash: object) -> bool:
        if not isinstance(content_hash, str) or len(content_hash) != 64 or not len(self._digests):
            return False
        try:
            key = np.array(bytes.fromhex(content_hash), dtype="S32")
        except ValueError:  # not hex: not a sha256 digest
            return False
        at = int(np.searchsorted(self._digests, key))
        return at < len(self._digests) and self._digests[at] == key


class VectorSink:
    """What :func:`learner.cache.embed_sources` writes to in an actor: the chunk's new vectors, in memory.

    Hashes in ``done`` (a shard or the cache holds them) count as present, so they are never embedded again.
    """

    def __init__(self, backbone_id: str, dim: int, done: HashSet) -> None:
        self.backbone_id = backbone_id
        self.dim = dim
        self.path = Path("<ray actor memory>")
        self._done = done
        self.hashes: list[str] = []
        self.vectors: list[np.ndarray] = []
        self._have: set[str] = set()

    def lookup(self, hashes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(zero vectors, found): found for hashes done before or embedded into this sink already."""
        found = np.array([h in self._have or h in self._done for h in hashes], dtype=bool)
        return np.zeros((len(hashes), self.dim), dtype=np.float32), found

    def put_many(self, hashes: Sequence[str], vectors: np.ndarray) -> None:
        """Keep one batch's vectors."""
        for content_hash_, vector in zip(hashes, np.asarray(vectors, dtype=np.float32)):
            if content_hash_ not in self._have:
                self._have.add(content_hash_)
                self.hashes.append(content_hash_)
                self.vectors.append(vector)


def read_chunk(batch: dict, *, max_bytes: int) -> dict:
    """Ray Data task: a chunk row's paths -> their names and bytes (a file that cannot be read is left out)."""
    names, blobs = [], []
    for paths in batch["paths"]:
        chunk_names, chunk_blobs = [], []
        for path in paths:
            try:
                with open(path, "rb") as handle:
                    data = handle.read(max_bytes + 1)
            except OSError as exc:
                logger.warning("cannot read %s: %s", path, exc.strerror or exc)
                continue
            if len(data) <= max_bytes:
                chunk_names.append(str(path))
                chunk_blobs.append(data)
        names.append(chunk_names)
        blobs.append(chunk_blobs)
    return {"names": names, "data": blobs}


class ChunkEmbedder:
    """Ray Data actor: one backbone, loaded once; each chunk embedded through :func:`learner.cache.embed_sources`."""

    def __init__(self, spec: BackboneSpec, batch_size: int, max_pixels: int, done: object) -> None:
        import ray

        from learner.backbones import load_backbone

        self.backbone = load_backbone(spec, batch_size)
        self.max_pixels = max_pixels
        self.done = ray.get(done) if isinstance(done, ray.ObjectRef) else done

    def __call__(self, batch: Any) -> dict:
        """One block of chunk rows (a pyarrow Table: the bytes come out exactly as read) -> rows of vectors."""
        import ray

        hashes: list[str] = []
        vectors = []
        for names, blobs in zip(batch.column("names").to_pylist(), batch.column("data").to_pylist()):
            chunk_hashes, chunk_vectors = embed_chunk(self.backbone, names, blobs, self.max_pixels, self.done)
            hashes += chunk_hashes
            vectors.append(chunk_vectors)
        node = ray.get_runtime_context().get_node_id()
        return {
            "content_hash": np.array(hashes, dtype=object),
            "vector": np.concatenate(vectors) if vectors else np.zeros((0, self.backbone.dim), dtype=np.float32),
            "node": np.array([node] * len(hashes), dtype=object),
        }


def embed_chunk(
    backbone: Embedder, names: Sequence[str], blobs: Sequence[bytes], max_pixels: int, done: HashSet
) -> tuple[list[str], np.ndarray]:
    """(hashes, vectors) of one chunk's images not in ``done``, each distinct image once, batched as
    :func:`learner.cache.embed_sources` batches the in-process import's chunk; an image that cannot be decoded is
    left out (the registration pass reports it with its reason)."""
    sink = VectorSink(backbone.id, backbone.dim, done)
    sources = [BytesImage(bytes(data), source=str(name), max_pixels=max_pixels) for name, data in zip(names, blobs)]
    while sources:
        try:
            embed_sources(backbone, sink, sources, progress=False)
            break
        except ImageError as exc:
            # The batches before it are in the sink: the retry embeds only what is left after it.
            logger.warning("skipping %s: %s", exc.source, exc.reason)
            sources = [source for source in sources if source.source != exc.source]
    vectors = np.stack(sink.vectors) if sink.vectors else np.zeros((0, backbone.dim), dtype=np.float32)
    return sink.hashes, vectors


@dataclass
class RayRun:
    """What a Ray embedding run did: vectors embedded, and how many each node embedded."""

    embedded: int = 0
    per_node: dict[str, int] = field(default_factory=dict)
    gpus_per_actor: float = 0.0


def run_ray_embedding(
    spec: BackboneSpec,
    chunks: Sequence[Sequence[str]],
    *,
    done: Iterable[str],
    on_rows: Callable[[list[str], np.ndarray], None],
    actors: int = 1,
    batch_size: int = 32,
    address: str | None = None,
    max_pixels: int,
    max_bytes: int,
    object_store_memory: int = OBJECT_STORE_BYTES,
    progress: bool = True,
) -> RayRun:
    """Embed the images of ``chunks`` (lists of file paths) whose hash is not in ``done`` on Ray; every block of
    rows is handed to ``on_rows(hashes, vectors)`` as it arrives. A local cluster unless ``address`` is given;
    ``progress``: Ray Data's own progress bars. A failed job raises :class:`EmbeddingJobError`."""
    chunks = [chunk for chunk in chunks if chunk]
    if not chunks:
        return RayRun()  # nothing to embed: no cluster started
    import ray

    own_cluster = not ray.is_initialized()
    if own_cluster:
        # Workers import juicer from where this driver does (a checkout or the installed package).
        runtime_env = {"env_vars": {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}}
        if address:
            ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
        else:
            ray.init(include_dashboard=False, object_store_memory=object_store_memory, runtime_env=runtime_env,
                     log_to_driver=False)  # fmt: skip
    run = RayRun()
    try:
        ray.data.DataContext.get_current().enable_progress_bars = progress
        gpus = float(ray.cluster_resources().get("GPU", 0.0))
        run.gpus_per_actor = 1.0 if gpus >= actors else 0.0
        done_set = ray.put(HashSet(done))
        dataset = ray.data.from_items([{"paths": [str(path) for path in chunk]} for chunk in chunks])
        dataset = dataset.map_batches(read_chunk, batch_size=1, fn_kwargs={"max_bytes": max_bytes})
        dataset = dataset.map_batches(
            ChunkEmbedder, batch_size=1, batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=actors),
            num_gpus=run.gpus_per_actor or None,
            fn_constructor_kwargs={"spec": spec, "batch_size": batch_size, "max_pixels": max_pixels, "done": done_set},
        )  # fmt: skip
        try:
            for block in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                hashes = [str(h) for h in block["content_hash"]]
                if not hashes:
                    continue
                on_rows(hashes, np.asarray(block["vector"], dtype=np.float32))
                run.embedded += len(hashes)
                for node in block["node"]:
                    run.per_node[str(node)] = run.per_node.get(str(node), 0) + 1
        except ray.exceptions.RayError as exc:
            raise EmbeddingJobError(
                f"the Ray job failed after {run.embedded} images ({exc}); what it embedded is kept: run again to resume"
            ) from exc
    finally:
        if own_cluster:
            ray.shutdown()
    return run

