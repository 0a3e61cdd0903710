"""The serving model (backbone + head + classes + version), swapped atomically, and the embedding memo.

A retrain builds a new :class:`ServingModel` aside and hands it to :meth:`ModelHolder.swap`; a request
takes :attr:`ModelHolder.current` once and uses that object to the end, so it sees the old model or the
new one, never half of each. Heads are pickled to ``<data_dir>/models/<version>.pkl`` (written to a
temporary name, then renamed) before their version is recorded, so the store never names a missing file;
at start :func:`load_last_good` walks back from the newest version to the first one that loads.

There is one backbone per process: :class:`Embeddings` wraps it with the persistent
:class:`learner.cache.EmbeddingCache` (each image embedded once, ever) and an in-memory memo (a retrain over
thousands of labels reads vectors from memory, not from disk), an LRU of ``service.embedding_memo_size`` vectors.
"""

from __future__ import annotations

import logging
import pickle
import queue
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from annotation.models import version_seq
from app.core.files import write_atomic
from app.store import ModelVersion, NewPrediction, Store
from learner.cache import EmbeddingCache, Embedder, embed_sources
from learner.rules import proba_in_order

logger = logging.getLogger(__name__)


class ModelLoadError(Exception):
    """A stored head cannot be read back (missing or corrupt file, other backbone)."""


@dataclass(frozen=True)
class ServingModel:
    """One immutable model version: its head over the backbone's embeddings, and the service's classes."""

    version: str
    classes: tuple[str, ...]
    head: Any  # a fitted scikit-learn classifier over embeddings (learner.head.SoftmaxHead)
    backbone_id: str
    n_labels: int
    max_label_id: int
    created_at: datetime | None = None
    labels_read_at: datetime | None = None  # when its training labels were read (before the fit)
    holdout_accuracy: float | None = None
    precision_rule: dict[str, Any] | None = None  # the precision rule's promise (learner.selective), from metrics

    def proba(self, embeddings: np.ndarray) -> np.ndarray:
        """Probabilities (n, len(classes)) in the service's class order; classes the head never saw get 0."""
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.shape[0] == 0:
            return np.zeros((0, len(self.classes)), dtype=np.float64)
        return proba_in_order(self.head, embeddings, self.classes, self._predict_proba)

    @cached_property
    def _predict_proba(self) -> Any:
        """The head's ``predict_proba``, or its ``serving_proba`` (the same numbers without scikit-learn's per-call
        checks: a third of a millisecond a request), made once per model version (the head is never refitted)."""
        serving_proba = getattr(self.head, "serving_proba", None)
        return serving_proba() if serving_proba is not None else self.head.predict_proba


def prediction_record(
    model: ServingModel, item_id: str, proba: np.ndarray, *, decision: str, rule: str, reason: str
) -> NewPrediction:
    """The stored prediction of ``model`` for one item from its probability row (in ``model.classes`` order)."""
    best = int(np.argmax(proba))
    return NewPrediction(
        item_id=item_id,
        model_version=model.version,
        label=model.classes[best],
        score=float(proba[best]),
        probabilities={name: float(p) for name, p in zip(model.classes, proba)},
        decision=decision,
        rule=rule,
        reason=reason,
    )


def is_newer(model: ServingModel, than: ServingModel | None) -> bool:
    """Whether ``model`` was trained after ``than`` (any model is newer than none; unnumbered names never are)."""
    if than is None:
        return True
    seq, other = version_seq(model.version), version_seq(than.version)
    return seq is not None and (other is None or seq > other)


class ModelHolder:
    """The current :class:`ServingModel`; reads are lock-free snapshots, swaps are serialised.

    Every process holds one, and only the process running the scheduler trains: the others (and a process that
    takes the scheduler over) catch up with :meth:`follow`, which every job that scores or counts against the
    serving model calls first (through :meth:`app.core.training.Trainer.serving_model`), and every HTTP request
    (``app.http.server.follow_models``). A model never moves back to an older version.
    """

    def __init__(self, model: ServingModel | None = None) -> None:
        self._lock = threading.Lock()
        self._follow_lock = threading.Lock()
        self._current = model
        self._followed: str | None = None  # the newest version a follow tried to load (a broken one is not retried)

    @property
    def current(self) -> ServingModel | None:
        """The model serving now (None before the first one)."""
        return self._current

    def swap(self, model: ServingModel) -> ServingModel | None:
        """Make ``model`` the serving one in a single reference assignment; returns the one it replaced."""
        with self._lock:
            previous, self._current = self._current, model
        logger.info("model %s now serving (was %s)", model.version, previous.version if previous else "none")
        return previous

    def swap_if_newer(self, model: ServingModel) -> bool:
        """:meth:`swap` only when ``model`` is newer than the serving one (checked and swapped under the lock)."""
        with self._lock:
            previous = self._current
            if not is_newer(model, previous):
                return False
            self._current = model
        logger.info("model %s now serving (was %s)", model.version, previous.version if previous else "none")
        return True

    def follow(self, store: Store, data_dir: Path, backbone_id: str) -> ServingModel | None:
        """Bring this process's model up to the store's newest version, recorded by whichever process trained it;
        returns the model serving now.

        One narrow read of the newest version's name when nothing changed; the heads are read only when a newer
        version is recorded (:func:`load_last_good`: a newest head that does not load leaves the one before it,
        and is not tried again until a newer one comes). Never moves back to an older version.
        """
        newest = store.newest_model_version()
        current = self._current
        if newest is None or newest[1] == self._followed or (current is not None and newest[1] == current.version):
            return current
        with self._follow_lock:  # one load at a time; the others find it done
            current = self._current
            if newest[1] == self._followed or (current is not None and newest[1] == current.version):
                return current
            self._followed = newest[1]
            seq = version_seq(current.version) if current is not None else None
            if seq is not None and seq >= newest[0]:
                return current
            model = load_last_good(store.list_models(), data_dir, backbone_id)
            if model is not None and model.version != newest[1]:
                logger.warning("the newest model %s does not load here; %s is the newest that does", newest[1], model.version)
            if model is not None:
                self.swap_if_newer(model)
        return self._current


def head_path(data_dir: Path, version: str) -> Path:
    """Where a version's head is kept: ``<data_dir>/models/<version>.pkl``."""
    return Path(data_dir) / "models" / f"{version}.pkl"


def save_head(data_dir: Path, version: str, head: Any) -> Path:
    """Pickle ``head`` atomically and durably (:func:`app.core.files.write_atomic`); returns its path."""
    return write_atomic(head_path(data_dir, version), pickle.dumps(head, protocol=pickle.HIGHEST_PROTOCOL))


def load_head(path: Path) -> Any:
    """Read back a head written by :func:`save_head`; :class:`ModelLoadError` if it cannot be."""
    try:
        with open(path, "rb") as file:
            head = pickle.load(file)  # our own file under the data folder, written by save_head
    except Exception as exc:  # noqa: BLE001 - a damaged pickle can raise anything (ValueError, TypeError, ...)
        raise ModelLoadError(f"cannot load the head {path}: {type(exc).__name__}: {exc}") from exc
    if not hasattr(head, "predict_proba") or not hasattr(head, "classes_"):
        raise ModelLoadError(f"{path} does not hold a fitted classifier")
    return head


def model_from_row(row: ModelVersion, head: Any) -> ServingModel:
    """A :class:`ServingModel` from a recorded model version and its loaded head."""
    metrics = row.metrics or {}
    return ServingModel(
        version=row.version,
        classes=tuple(row.classes),
        head=head,
        backbone_id=row.backbone_id,
        n_labels=int(row.n_labels),
        max_label_id=int(row.max_label_id),
        created_at=row.created_at,
        labels_read_at=row.labels_read_at,
        holdout_accuracy=metrics.get("accuracy"),
        precision_rule=metrics.get("precision_rule"),
    )


def load_last_good(rows: Sequence[ModelVersion], data_dir: Path, backbone_id: str) -> ServingModel | None:
    """The newest recorded version (``rows`` oldest first) whose head loads and matches the backbone."""
    skipped = []
    for row in reversed(list(rows)):
        if row.backbone_id != backbone_id:
            logger.warning("model %s was trained on backbone %s, not %s: skipped", row.version, row.backbone_id, backbone_id)
            skipped.append(row.version)
            continue
        try:
            head = load_head(Path(data_dir) / row.head_path)
        except ModelLoadError as exc:
            logger.error("%s; trying the version before", exc)
            skipped.append(row.version)
            continue
        if skipped:
            logger.warning("serving %s: the newer %s did not load", row.version, ", ".join(skipped))
        return model_from_row(row, head)
    return None


class Embeddings:
    """The process's one backbone behind the persistent cache and an in-memory memo (content hash -> vector)."""

    def __init__(self, backbone: Embedder, cache: EmbeddingCache, memo_size: int = 20_000) -> None:
        self.backbone = backbone
        self.cache = cache
        self.memo_size = memo_size  # vectors held in memory, least recently used dropped first
        self._memo: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._writer: CacheWriter | None = None

    def memo_hashes(self) -> list[str]:
        """Content hashes whose vectors are held in memory, least recently used first."""
        with self._lock:
            return list(self._memo)

    @property
    def backbone_id(self) -> str:
        """The backbone's cache key."""
        return self.backbone.id

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) the backbone wants."""
        return tuple(self.backbone.input_size)

    def embed(self, sources: Sequence[Any], progress: bool = False) -> np.ndarray:
        """Embeddings (n, dim) of ``sources`` (:class:`learner.images.ImageSource`), each image embedded once ever.

        Raises :class:`learner.errors.ImageError` naming the source of an image that cannot be decoded.
        """
        return self._embed(sources, progress, self.cache)

    def decode_new(self, sources: Sequence[Any]) -> list[Any]:
        """``sources`` with those this process has no vector for decoded now (:class:`learner.images.DecodedImage`):
        an image that cannot be decoded raises its :class:`learner.errors.ImageError` here, so a request can check
        all its images before it writes anything, then write while the backbone runs (:meth:`embed_held`)."""
        from learner.images import DecodedImage

        with self._lock:
            known = {source.content_hash for source in sources if source.content_hash in self._memo}
        return [source if source.content_hash in known else DecodedImage(source, self.input_size) for source in sources]

    def embed_held(
        self, sources: Sequence[Any], before_backbone: Callable[[], Any] | None = None
    ) -> tuple[np.ndarray, "HeldVectors"]:
        """:meth:`embed` for a request: the new vectors are held for :meth:`write_behind`, not written.

        They are in the memo at once, so this process never embeds them twice; the cache is derived data, so a
        vector a crash loses before its write is embedded again when next needed (from the item's image file).

        ``before_backbone`` is called once, after the memo and the cache were looked up and before the backbone
        runs (or at the end, when nothing needed it): a request starts its writes on the I/O thread there, so
        that thread's Python work does not hold the interpreter lock while the lookup waits for it
        (``benchmarks/predict.py``: started before the lookup, a 16 us lookup took 0.9 ms on average).
        """
        held = HeldVectors(self.cache, before_backbone)
        X = self._embed(sources, False, held)
        held.looked_up()
        return X, held

    def write_behind(self, held: "HeldVectors") -> None:
        """Hand ``held`` vectors to the cache's writer thread (:class:`CacheWriter`). The prediction path calls it
        once its answer is sent: started earlier, the write competed with the request's own store write for the
        cores and the disk (``benchmarks/predict.py``: the store write took 3.2 ms beside it, 1.7 ms alone)."""
        if len(held):
            self.writer.submit(held)

    @property
    def writer(self) -> "CacheWriter":
        """The cache's one write-behind writer (made on first use, so never before a fork)."""
        with self._lock:
            if self._writer is None:
                self._writer = CacheWriter(self.cache)
            return self._writer

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every vector handed to the write-behind writer is in the cache; False on timeout."""
        with self._lock:
            writer = self._writer
        return True if writer is None else writer.flush(timeout_s)

    def _embed(self, sources: Sequence[Any], progress: bool, cache: Any) -> np.ndarray:
        hashes = [source.content_hash for source in sources]
        found: dict[str, np.ndarray] = {}
        with self._lock:
            for content_hash in hashes:
                vector = self._memo.get(content_hash)
                if vector is not None:
                    self._memo.move_to_end(content_hash)
                    found[content_hash] = vector
        missing = [source for source, content_hash in zip(sources, hashes) if content_hash not in found]
        if missing:
            vectors = embed_sources(self.backbone, cache, missing, progress=progress)
            with self._lock:
                for source, vector in zip(missing, vectors):
                    found[source.content_hash] = vector
                    self._memo[source.content_hash] = vector
                    self._memo.move_to_end(source.content_hash)
                while len(self._memo) > self.memo_size:
                    self._memo.popitem(last=False)
        if not hashes:
            return np.zeros((0, int(self.backbone.dim)), dtype=np.float32)
        return np.stack([found[content_hash] for content_hash in hashes]).astype(np.float32, copy=False)


class HeldVectors:
    """The embedding cache as :func:`learner.cache.embed_sources` sees it, with writes held until :meth:`write`.

    Lookups go to the cache; ``put_many`` only keeps the rows. The cache is derived data (a lost row is embedded
    again), so holding the write costs nothing in durability; it lets the prediction path run the write beside
    the store's commit instead of before it.
    """

    def __init__(self, cache: EmbeddingCache, after_lookup: Callable[[], Any] | None = None) -> None:
        self.cache = cache
        self.backbone_id = cache.backbone_id
        self.path = cache.path
        self._rows: list[tuple[list[str], np.ndarray]] = []
        self._after_lookup = after_lookup

    def lookup(self, hashes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """The cache's own lookup (then the ``after_lookup`` callback, once)."""
        found = self.cache.lookup(hashes)
        self.looked_up()
        return found

    def looked_up(self) -> None:
        """Call the ``after_lookup`` callback unless it was called already."""
        after, self._after_lookup = self._after_lookup, None
        if after is not None:
            after()

    def put_many(self, hashes: Sequence[str], vectors: np.ndarray) -> None:
        """Keep ``vectors`` for :meth:`write`."""
        self._rows.append((list(hashes), np.array(vectors, dtype=np.float32)))

    def __len__(self) -> int:
        return sum(len(hashes) for hashes, _ in self._rows)

    def rows(self) -> tuple[list[str], np.ndarray] | None:
        """The held (hashes, vectors), or None when nothing new was embedded."""
        if not self._rows:
            return None
        return [h for batch, _ in self._rows for h in batch], np.concatenate([vectors for _, vectors in self._rows])


class CacheWriter:
    """Writes vectors to the embedding cache behind the requests that made them, one transaction per group.

    Requests hand their new vectors over (:meth:`submit`) and answer without waiting for the cache's disk write;
    one thread writes whatever has gathered meanwhile in a single ``put_many`` (one transaction, one sync: group
    commit), so concurrent requests share the cost. A failed write is logged, never raised: the cache is derived,
    and a vector missing from it is embedded again. The thread stops when idle and starts again on demand.
    """

    IDLE_S = 5.0

    def __init__(self, cache: EmbeddingCache) -> None:
        self.cache = cache
        self._queue: queue.Queue[HeldVectors] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def submit(self, held: HeldVectors) -> None:
        """Queue ``held`` for the cache."""
        self._queue.put(held)
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="juicer-cache-writer", daemon=True)
                self._thread.start()

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until everything submitted so far is written (or has failed and been logged); False on timeout."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._queue.all_tasks_done.wait(left)
        return True

    def _run(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=self.IDLE_S)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():  # a submit after this sees no thread and starts one
                        self._thread = None
                        return
                continue
            group = [first]
            while True:
                try:
                    group.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._write(group)
            finally:
                for _ in group:
                    self._queue.task_done()

    def _write(self, group: list[HeldVectors]) -> None:
        vectors: dict[str, np.ndarray] = {}
        for held in group:
            rows = held.rows()
            if rows is not None:
                vectors.update(zip(rows[0], rows[1]))
        if not vectors:
            return
        try:
            self.cache.put_many(list(vectors), np.stack(list(vectors.values())))
        except Exception:  # noqa: BLE001 - any failure of a derived cache's write: the vectors are embedded again
            logger.warning("writing %d vectors to the embedding cache failed; those images are embedded again when "
                           "next needed", len(vectors), exc_info=True)  # fmt: skip
