"""Retraining and the review queue: labels -> cached embeddings -> a head fitted aside -> holdout -> swap.

:meth:`Trainer.retrain` never touches the serving model until the new one is complete: it fits a copy of
the current head (warm start), evaluates it on the holdout, pickles it, records the version and only then
swaps it in. An exception anywhere before the swap leaves the last good model serving (and the store
without a row for the failed version). :meth:`Trainer.refresh_review_queue` then re-scores the unlabelled
pool under the new version and queues what the query strategy says teaches the model most.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from annotation.models import version_name
from app.core.checks import holdout_labels, trained_labels
from app.core.datadir import image_file
from app.core.holdout import queue_holdout_tasks, reserve_holdout
from app.core.imports import import_running, mark_queue_refreshed
from app.core.serving import (
    Embeddings,
    ModelHolder,
    ModelLoadError,
    ServingModel,
    is_newer,
    load_head,
    model_from_row,
    prediction_record,
    save_head,
)
from app.store import NewModelVersion, NewPrediction, Store, utcnow
from config.settings import PoolSampleSettings, ServiceSettings, invalid_setting
from learner.images import FileImage

if TYPE_CHECKING:
    from learner.query import Strategy

logger = logging.getLogger(__name__)

#: The model version recorded on review tasks queued before the first model (they carry no prediction).
COLD_START_VERSION = "none"


def query_strategy(service: ServiceSettings) -> Strategy:
    """The configured query strategy from :data:`learner.query.STRATEGIES`; :class:`config.ConfigError` naming
    ``service.query_strategy`` and the valid names when it is not registered."""
    from learner.query import get_strategy

    try:
        return get_strategy(service.query_strategy)
    except ValueError as exc:
        raise invalid_setting(("service", "query_strategy"), str(exc)) from exc


def decision_params(service: ServiceSettings, model: ServingModel | None = None) -> dict[str, Any]:
    """The keyword arguments :func:`learner.rules.decide` takes for the configured rule.

    The ``precision`` rule's threshold belongs to the model version (chosen on the holdout when it was
    trained); a version without one (trained before the rule existed, or without a holdout) reviews everything.
    """
    from learner.rules import rule_params

    if service.decision_rule == "precision":
        promise = (model.precision_rule if model is not None else None) or {}
        return {"threshold": promise.get("threshold"), "temperature": promise.get("temperature", 1.0),
                "target_precision": promise.get("target_precision", service.target_precision)}
    return rule_params(service.decision_rule, service.decision_threshold)


def default_head_factory(
    previous: Any | None, warm_start_max_iter: int | None = None, max_unlabelled: int | None = None
) -> Any:
    """A copy of ``previous`` set to warm-start (at most ``warm_start_max_iter`` steps), or a fresh seeded head;
    a semi-supervised head learns from at most ``max_unlabelled`` pool rows (``learner.pool_sample.semi_head``).

    A warm start begins next to the previous optimum, so far fewer full-batch steps reach the same holdout
    accuracy (measured in benchmarks/retrain.py); capping them keeps a retrain on thousands of labels short.
    """
    sample = {} if max_unlabelled is None else {"max_unlabelled": int(max_unlabelled)}
    if previous is not None:
        head = copy.deepcopy(previous)
        head.set_params(warm_start=True)
        if warm_start_max_iter is not None:
            head.set_params(max_iter=warm_start_max_iter)
        if sample and "max_unlabelled" in head.get_params():  # a version saved under another setting follows this one
            head.set_params(**sample)
        return head
    from learner.semi import SemiSupervisedHead

    return SemiSupervisedHead(random_state=0, warm_start=True, **sample)


def takes_unlabelled(head: Any, n_labelled: int, n_classes: int) -> int | None:
    """How many unlabelled rows (``-1`` in ``y``) ``head.fit`` would use at most on these labels; None for a
    supervised head, or a semi-supervised one that has handed over to its labels (no say left for the pool)."""
    limit = getattr(head, "max_unlabelled", None)
    weight = getattr(head, "unlabelled_weight", None)
    if limit is None or (weight is not None and weight(n_labelled, n_classes) == 0):
        return None
    return int(limit)


@dataclass(frozen=True)
class HoldoutData:
    """The labelled holdout as a measure: cached embeddings, true labels, and the key naming it."""

    X: np.ndarray
    y_true: list[str]
    key: str


def holdout_key(labelled: Sequence[tuple[str, str]]) -> str:
    """A short name of a labelled holdout (its items and their labels): equal keys, the same measure."""
    digest = hashlib.sha256(json.dumps(sorted(labelled)).encode()).hexdigest()[:16]
    return f"{len(labelled)}:{digest}"


@dataclass
class RetrainResult:
    """What a retrain did: a new version, or why it was skipped."""

    version: str | None
    n_labels: int = 0
    labels_per_class: dict[str, int] = field(default_factory=dict)
    holdout_accuracy: float | None = None
    seconds: float = 0.0
    skipped: str | None = None
    queued_for_review: int = 0
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return dict(self.__dict__)


class Trainer:
    """Retrains the head from the store's labels and keeps the review queue fed; one retrain at a time."""

    def __init__(
        self,
        store: Store,
        embeddings: Embeddings,
        models: ModelHolder,
        service: ServiceSettings,
        data_dir: Path,
        classes: Sequence[str],
        max_image_pixels: int,
        head_factory: Callable[[Any | None], Any] | None = None,
        pool_sample: PoolSampleSettings | None = None,
    ) -> None:
        self.store = store
        self.embeddings = embeddings
        self.models = models
        self.service = service
        self.data_dir = Path(data_dir)
        self.start_classes = tuple(classes)
        self.max_image_pixels = max_image_pixels
        query_strategy(service)  # an unknown name stops start-up here, not at the first refresh
        # How many pool rows a round and a retrain look at, at most (learner.pool_sample: the strategies' samples and
        # the semi-supervised head's).
        self.pool_sample = pool_sample or PoolSampleSettings()
        self.head_factory = head_factory or functools.partial(
            default_head_factory, warm_start_max_iter=service.warm_start_max_iter,
            max_unlabelled=self.pool_sample.semi_head,
        )
        self._lock = threading.RLock()  # remeasure takes it too, also from inside retrain

    @property
    def classes(self) -> tuple[str, ...]:
        """The class list now: the store's (a class added at run time is in it), else the one given at start."""
        return self.store.stored_classes() or self.start_classes

    # -- sources ------------------------------------------------------------------------------------
    def source_for(self, item_id: str, content_hash: str, source: str, image_path: str | None) -> FileImage:
        """The stored file of an item as an image source keyed by its recorded hash."""
        if image_path is None:
            raise ValueError(f"item {item_id} has no stored image")
        return FileImage(image_file(self.data_dir, image_path), self.max_image_pixels, content_hash=content_hash, source=source)

    def embed_items(self, rows: Sequence[tuple[str, str, str, str | None]], progress: bool = False) -> tuple[np.ndarray, list[int]]:
        """Embeddings of items given as (item id, content hash, source, image path); (X, indices of ``rows`` kept).

        An item whose image file is gone (and whose embedding is not cached) or cannot be decoded is quarantined
        (:meth:`app.store.Store.quarantine`: kept, listed by ``GET /v1/items?quarantined=true``, out of training)
        and left out, instead of failing the start-up or every retrain.
        """
        from learner.errors import ImageError

        kept = list(range(len(rows)))
        absent = [i for i in kept if rows[i][3] is None or not image_file(self.data_dir, str(rows[i][3])).is_file()]
        if absent:
            uncached = set(self.embeddings.cache.missing([rows[i][1] for i in absent])) - set(self.embeddings.memo_hashes())
            for i in absent:
                if rows[i][1] in uncached:
                    self.store.quarantine(rows[i][0], f"image file missing: {rows[i][3]} (and no cached embedding)")
            kept = [i for i in kept if not (i in absent and rows[i][1] in uncached)]
        for _ in range(len(kept) + 1):
            sources = [self.source_for(*rows[i]) for i in kept]
            try:
                return self.embeddings.embed(sources, progress=progress), kept
            except ImageError as exc:
                bad = [i for i in kept if rows[i][2] == exc.source or str(image_file(self.data_dir, str(rows[i][3]))) == exc.source]
                if not bad:
                    raise
                for i in bad:
                    self.store.quarantine(rows[i][0], f"image unreadable: {exc.reason}")
                kept = [i for i in kept if i not in bad]
        raise RuntimeError("unreachable: every pass quarantines at least one item")

    # -- retrain ------------------------------------------------------------------------------------
    def serving_model(self) -> ServingModel | None:
        """The serving model, first brought up to the store's newest version (another process may have trained
        it: :meth:`app.core.serving.ModelHolder.follow`); what every job that scores or counts against it reads."""
        return self.models.follow(self.store, self.data_dir, self.embeddings.backbone_id)

    def new_labels(self) -> int:
        """Training labels recorded since the serving model was fitted (all of them before the first model)."""
        current = self.serving_model()
        if current is None:
            return self.store.count_new_labels(0)
        # Withdrawals are changes too: those after the labels were read (a fit takes seconds; one withdrawn while
        # it ran is not in the model). Versions recorded before labels_read_at existed fall back to created_at.
        return self.store.count_new_labels(current.max_label_id, current.labels_read_at or current.created_at)

    def retrain(self, reason: str = "manual", force: bool = False, refresh_queue: bool = True, progress: bool = False) -> RetrainResult:
        """Fit a new version aside, evaluate, record and swap it in; skip when nothing changed unless ``force``."""
        with self._lock:
            started = time.perf_counter()
            current = self.serving_model()  # warm-started from, and counted against, the newest version
            labels_read_at = utcnow()  # before the reads: a change from here on is not in this fit
            max_label_id = self.store.max_label_id()
            if current is not None and not force and self.new_labels() == 0:
                return RetrainResult(None, skipped="no new labels since the serving model")
            classes = self.classes  # read once: a class added during the fit joins the next one
            # Several answers on an item: the consensus the label checks found trains, not the newest answer.
            labelled = [row for row in trained_labels(self.store, self.store.current_labels()) if row.label in classes]
            timings = {"labels": time.perf_counter() - started}
            X, kept = self.embed_items([(r.item_id, r.content_hash, r.source, r.image_path) for r in labelled], progress)
            labelled = [labelled[i] for i in kept]
            y = np.array([row.label for row in labelled], dtype=object)
            distinct = sorted(set(y.tolist()))
            if len(distinct) < 2:
                return RetrainResult(
                    None, n_labels=len(labelled), skipped=f"need labels of at least two classes, have {len(distinct)}"
                )
            head = self.head_factory(current.head if current is not None else None)
            y_fit = y.astype(str).astype(object)
            limit = takes_unlabelled(head, len(y), len(distinct))
            if limit:
                # The pool's and the served items' embeddings are the unlabelled rows (never the holdout): a
                # seeded sample of at most ``limit`` of them, drawn before embedding so the cost stays bounded.
                unlabelled = self.unlabelled_sample(limit, seed=max_label_id, progress=progress)
                if len(unlabelled):
                    X = np.concatenate([X, unlabelled])
                    y_fit = np.concatenate([y_fit, np.full(len(unlabelled), -1, dtype=object)])
            timings["embeddings"] = time.perf_counter() - started - sum(timings.values())
            head.fit(X, y_fit)
            timings["fit"] = time.perf_counter() - started - sum(timings.values())
            labels_per_class = {name: 0 for name in classes}
            labels_per_class.update(Counter(y.tolist()))
            seq = self.store.next_model_seq()
            version = version_name(seq)
            candidate = ServingModel(
                version=version,
                classes=classes,
                head=head,
                backbone_id=self.embeddings.backbone_id,
                n_labels=len(labelled),
                max_label_id=max_label_id,
            )
            metrics = self.evaluate(candidate, progress=progress)
            timings["holdout"] = time.perf_counter() - started - sum(timings.values())
            path = save_head(self.data_dir, version, head)
            train_seconds = time.perf_counter() - started
            row = self.store.record_model(
                NewModelVersion(
                    version=version,
                    seq=seq,
                    backbone_id=candidate.backbone_id,
                    classes=list(classes),
                    n_labels=len(labelled),
                    labels_per_class=labels_per_class,
                    max_label_id=max_label_id,
                    metrics=metrics,
                    head_path=str(path.relative_to(self.data_dir)),
                    train_seconds=train_seconds,
                    labels_read_at=labels_read_at,
                )
            )
            accuracy = metrics.get("accuracy") if metrics else None
            serving = dataclasses.replace(candidate, created_at=row.created_at, labels_read_at=labels_read_at,
                                          holdout_accuracy=accuracy,
                                          precision_rule=(metrics or {}).get("precision_rule"))
            self.models.swap(serving)
            seconds = time.perf_counter() - started
            timings["record_and_swap"] = seconds - sum(timings.values())
            logger.info(
                "retrained (%s): %s on %d labels, holdout accuracy %s, %.2f s",
                reason, version, len(labelled), "n/a" if accuracy is None else f"{accuracy:.3f}", seconds,
            )
            result = RetrainResult(version, len(labelled), labels_per_class, accuracy, seconds, timings=timings)
            self.remeasure(progress=progress)  # older versions measured on a smaller holdout: like with like
        if refresh_queue:
            result.queued_for_review = self.refresh_review_queue(progress=progress)
        return result

    def unlabelled_sample(self, limit: int, seed: int, progress: bool = False) -> np.ndarray:
        """Embeddings of at most ``limit`` unlabelled pool and served items (a seeded sample above it).

        The population is the pool's unlabelled items then the served ones (quarantined served ones included),
        each in id order; above ``limit`` a seeded uniform draw of row numbers over it, and the database returns
        only those rows (:meth:`app.store.Store.unlabelled_at`): a million-item pool costs two counts and the
        sample, not a million ids in Python. Only the sampled vectors are read. An item labelled or added between
        the count and the read shifts the numbering by one: the draw stays uniform (at worst a row short)."""
        n_pool = self.store.count_unlabelled("pool")
        n_served = self.store.count_unlabelled("served", include_quarantined=True)
        if n_pool + n_served <= limit:
            pool = self.store.unlabelled_columns("pool")
            served = self.store.unlabelled_columns("served", include_quarantined=True)
            ids, hashes = pool.ids + served.ids, pool.content_hashes + served.content_hashes
        else:
            keep = np.sort(np.random.default_rng(seed).choice(n_pool + n_served, size=limit, replace=False))
            ids, hashes = self.store.unlabelled_at("pool", keep[keep < n_pool].tolist())
            served_ids, served_hashes = self.store.unlabelled_at(
                "served", (keep[keep >= n_pool] - n_pool).tolist(), include_quarantined=True
            )
            ids, hashes = ids + served_ids, hashes + served_hashes
        X, _ = self.pool_vectors(ids, hashes, progress)
        return np.asarray(X, dtype=np.float32)

    def pool_vectors(self, ids: Sequence[str], hashes: Sequence[str], progress: bool = False) -> tuple[Any, np.ndarray]:
        """The cached embeddings of these items as a lazy matrix (:class:`learner.cache.CachedRows`, read through a
        memory map in chunks) and the positions of ``ids`` it holds.

        Items whose vector the cache lacks are embedded first (:meth:`embed_items`: a missing or unreadable image
        is quarantined and left out); a cached item costs its row number, with no file check and no decode.
        """
        cache = self.embeddings.cache
        rows = cache.rows(hashes)
        missing = np.flatnonzero(rows < 0)
        if len(missing):
            stored = self.store.items_by_id([ids[i] for i in missing])
            todo = [i for i in missing.tolist() if ids[i] in stored]
            X, kept = self.embed_items(
                [(ids[i], hashes[i], stored[ids[i]].source, stored[ids[i]].image_path) for i in todo], progress
            )
            done = [todo[k] for k in kept]
            cache.put_many([hashes[i] for i in done], X)  # a vector held only in the memo joins the cache
            rows[done] = cache.rows([hashes[i] for i in done])
        kept = np.flatnonzero(rows >= 0)
        return cache.matrix(rows[kept]), kept

    def holdout_data(self, progress: bool = False) -> HoldoutData | None:
        """The labelled holdout's cached embeddings, true labels and key; None without one."""
        holdout = [row for row in holdout_labels(self.store) if row.label in self.classes]  # majority of its answers
        if not holdout:
            return None
        X, kept = self.embed_items([(r.item_id, r.content_hash, r.source, r.image_path) for r in holdout], progress)
        if not kept:
            return None
        rows = [holdout[i] for i in kept]
        return HoldoutData(X, [row.label for row in rows], holdout_key([(row.item_id, row.label) for row in rows]))

    def evaluate(self, model: ServingModel, progress: bool = False, holdout: HoldoutData | None = None,
                 seed: int | None = None) -> dict[str, Any] | None:
        """Holdout figures of ``model`` (:func:`learner.metrics.evaluate`), None without a labelled holdout.

        ``holdout_key`` names the holdout they were measured on (:func:`holdout_key`); ``n`` is its size.
        """
        from learner.metrics import evaluate

        holdout = holdout or self.holdout_data(progress)
        if holdout is None:
            return None
        classes = list(model.classes)  # a class added while the model fitted is not among its outputs
        known = np.array([label in classes for label in holdout.y_true])
        X, y_true = holdout.X[known], [label for label, ok in zip(holdout.y_true, known) if ok]
        if not y_true:
            return None
        proba = model.proba(X)
        figures = evaluate(y_true, proba, classes, self.service.report_thresholds).to_dict()
        seed = self.store.next_model_seq() if seed is None else seed
        figures["precision_rule"] = self.precision_promise(proba, y_true, seed=seed, classes=classes)
        figures["holdout_key"] = holdout.key
        return figures

    def remeasure(self, progress: bool = False) -> list[str]:
        """Re-measure every stored version on the current holdout when it changed; returns the versions updated.

        A holdout that grows makes figures measured on different holdouts incomparable, so the report's curve
        and the forecast would mix them. Each stored head is applied to the holdout's cached embeddings (no
        backbone run for items already embedded). The serving model keeps the figures it was swapped in with
        until the next retrain or restart; the report reads the store.
        """
        with self._lock:  # one writer of the versions' figures: a retrain's own re-measure or the check job's
            return self._remeasure(progress)

    def _remeasure(self, progress: bool) -> list[str]:
        rows = self.store.list_models()
        if not rows:
            return []
        holdout = self.holdout_data(progress)
        key = holdout.key if holdout is not None else None
        stale = [row for row in rows if (row.metrics or {}).get("holdout_key") != key and (row.metrics or key)]
        if holdout is None or not stale:
            return []
        updated = []
        for row in stale:
            if row.backbone_id != self.embeddings.backbone_id:
                continue  # another backbone's head cannot read these embeddings
            try:
                model = dataclasses.replace(model_from_row(row, load_head(self.data_dir / row.head_path)), classes=self.classes)
            except ModelLoadError as exc:
                logger.warning("re-measuring %s skipped: %s", row.version, exc)
                continue
            self.store.update_model_metrics(row.version, self.evaluate(model, holdout=holdout, seed=row.seq))
            updated.append(row.version)
        if updated:
            logger.info("holdout changed (%d labels): re-measured %s", len(holdout.y_true), ", ".join(updated))
        return updated

    def precision_promise(
        self, proba: np.ndarray, y_true: Sequence[str], seed: int = 0, classes: Sequence[str] | None = None
    ) -> dict[str, Any]:
        """The ``precision`` rule's threshold for this version, chosen on the holdout (recorded for every version);
        ``proba``'s columns are in ``classes`` order (the model's; the current list by default)."""
        from learner.selective import calibrate_precision_rule

        index = {name: j for j, name in enumerate(self.classes if classes is None else classes)}
        promise = calibrate_precision_rule(
            proba, np.array([index[label] for label in y_true]), self.service.target_precision,
            self.service.risk_confidence, self.service.temperature_scaling, random_state=seed,
        )
        return promise.to_dict()

    # -- the review queue ---------------------------------------------------------------------------
    def refresh_review_queue(self, progress: bool = False) -> int:
        """Re-score the unlabelled pool and queue the next batch for annotators; returns how many were queued.

        Items already queued get the new version's prediction (their Label Studio task is updated, so the
        project's uncertainty ordering follows the newest model); ``review_batch_size`` more are chosen
        among the rest with the configured query strategy.
        """
        from learner.query import query

        if import_running(self.store):  # the holdout and the picks are drawn over the whole folder, not its first chunks
            logger.info("review queue: an import is under way; the holdout and the picks wait until it has finished")
            return 0
        mark_queue_refreshed(self.store)
        # The holdout first: reserved before any active pick sees the pool, its blind tasks queued ahead of them.
        reserved = set(reserve_holdout(self.store, self.service.holdout, len(self.classes)))
        if reserved:  # embedded now, as the pool would have been: measuring a version later runs no backbone
            rows = [r for r in self.store.items_of_split("holdout") if r.id in reserved and r.image_path]
            self.embed_items([(r.id, r.content_hash, r.source, r.image_path) for r in rows], progress)
        queue_holdout_tasks(self.store, self.service.holdout, self.service.review_batch_size)
        model = self.serving_model()  # never re-score the queue with a version older than the store's newest
        strategy = self.service.query_strategy
        if model is None and query_strategy(self.service).needs_model:
            return 0
        pool = self.store.unlabelled_columns("pool")
        if not pool.ids:
            return 0
        X, kept = self.pool_vectors(pool.ids, pool.content_hashes, progress)
        if not len(kept):
            return 0
        ids = [pool.ids[i] for i in kept.tolist()]
        queued = np.fromiter((pool.statuses[i] in ("pending", "sent", "failed") for i in kept.tolist()), dtype=bool,
                             count=len(kept))
        fresh = np.flatnonzero(~queued)
        classes = self.classes
        labelled = [row for row in self.store.current_labels() if row.label in classes and row.image_path]
        X_labelled = self.embed_items([(r.item_id, r.content_hash, r.source, r.image_path) for r in labelled])[0] if labelled else None
        if model is None:
            return self._queue_cold_start(ids, X, queued, fresh, X_labelled, strategy)
        # One budget: second looks still open with annotators (app.core.checks) take their share of the batch.
        looks = self.store.second_look_counts()
        n_new = max(0, self.service.review_batch_size - looks["pending"] - looks["sent"])
        # The strategy scores the pool (in chunks, once); the model then predicts only the rows queued below.
        chosen = fresh[
            query(model.head, X.take(fresh), n_new, strategy, random_state=model.n_labels,
                  X_labelled=X_labelled, n_classes=len(classes), **self._samples()).indices
        ] if len(fresh) and n_new else np.zeros(0, dtype=np.int64)
        rows = np.concatenate([np.flatnonzero(queued), chosen]).astype(np.int64)
        proba = model.proba(X[rows])
        predictions = [
            prediction_record(
                model, ids[index], proba[position], decision="review", rule=f"query:{strategy}",
                reason=f"chosen for annotation by {strategy} sampling",
            )
            for position, index in enumerate(rows.tolist())
        ]
        if is_newer(self.models.current or model, model):  # a newer version came in meanwhile; its retrain re-scores
            logger.info("review queue: %s was replaced while it scored; its predictions are dropped", model.version)
            return 0
        self.store.record_predictions(predictions)
        logger.info("review queue: %d new pool items chosen by %s, %d queued ones re-scored", len(chosen), strategy, int(queued.sum()))
        return len(chosen)

    def _samples(self) -> dict[str, int]:
        """The strategies' pool samples (:func:`learner.query.query`'s ``margin_sample``, ``cluster_sample``)."""
        return {"margin_sample": self.pool_sample.margin, "cluster_sample": self.pool_sample.cluster}

    def _queue_cold_start(
        self, ids: list[str], X: Any, queued: np.ndarray, fresh: np.ndarray,
        X_labelled: np.ndarray | None, strategy: str,
    ) -> int:
        """No model yet: queue the pool items the strategy picks from the embeddings alone (no prediction)."""
        from learner.query import query

        if queued.any() or not len(fresh):
            return 0  # the first picks are still with the annotators; a model will choose the next ones
        chosen = fresh[query(None, X.take(fresh), self.service.review_batch_size, strategy, random_state=0,
                             X_labelled=X_labelled, n_classes=len(self.classes), **self._samples()).indices]
        self.store.queue_reviews([
            NewPrediction(item_id=ids[index], model_version=COLD_START_VERSION, label="", score=0.0,
                          probabilities={}, decision="review", rule=f"query:{strategy}",
                          reason=f"chosen with no model yet by {strategy} picks")
            for index in chosen.tolist()
        ])
        logger.info("review queue: no model yet; %d pool items chosen by %s", len(chosen), strategy)
        return len(chosen)
