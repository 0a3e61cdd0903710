"""The holdout juicer reserves and annotators label blind: when to reserve, how many holdout tasks to queue.

When the labelled holdout given (the demo's, or one imported or posted by the user) holds fewer than
``service.holdout.min_labels`` items, juicer reserves one from the unlabelled pool (a seeded uniform draw,
:meth:`app.store.Store.reserve_holdout`; the given items count towards its size, so the two are used
together). Its items go to Label Studio as tasks of their own with no prediction (a guess anchors the
annotator), interleaved with the active picks by :func:`holdout_tasks_to_queue`: until ``min_labels`` are in
they come first and as many as needed; after that a small share of each refresh (``share`` of
``review_batch_size``, about 1 task in 10) keeps the holdout growing with the pool while nine labels in ten
still go to training. Annotators' holdout labels never train: training reads the seed and pool labels only.
"""

from __future__ import annotations

import logging
import math

from app.store import Store
from config.settings import HoldoutSettings

logger = logging.getLogger(__name__)


def holdout_tasks_to_queue(n_labelled: int, n_open: int, n_available: int, min_labels: int, per_refresh: int) -> int:
    """Holdout tasks to queue now: enough open ones to reach ``min_labels`` (priority), then ``per_refresh``.

    Open tasks (queued, not answered yet) count, so tasks annotators leave alone never pile up.
    """
    wanted_open = max(min_labels - n_labelled, per_refresh)
    return max(0, min(wanted_open - n_open, n_available))


def per_refresh(holdout: HoldoutSettings, review_batch_size: int) -> int:
    """Holdout tasks a refresh adds once the minimum is in: ``share`` of the batch, at least one when on."""
    return math.ceil(holdout.share * review_batch_size) if holdout.share > 0 else 0


def reserve_holdout(store: Store, holdout: HoldoutSettings, n_classes: int) -> list[str]:
    """Reserve (or top up) the holdout from the pool when the given one is too small; returns the ids moved."""
    if not holdout.reserve:
        return []
    counts = store.holdout_counts()
    given = counts.n_items - len(store.reserved_holdout())
    if given >= holdout.min_labels:
        return []  # a labelled holdout was given (the demo, an import): it is used instead
    moved = store.reserve_holdout(holdout.target_size(n_classes), holdout.seed, holdout.max_pool_share)
    if moved:
        logger.info("holdout: %d pool items reserved (seed %d), never queried, never trained on", len(moved), holdout.seed)
    return moved


def queue_holdout_tasks(store: Store, holdout: HoldoutSettings, review_batch_size: int) -> int:
    """Queue the holdout items annotators should label next, blind; returns how many were queued."""
    counts = store.holdout_counts()
    n_available = counts.n_items - counts.n_labelled - counts.n_open
    wanted = holdout_tasks_to_queue(
        counts.n_labelled, counts.n_open, n_available, holdout.min_labels, per_refresh(holdout, review_batch_size)
    )
    queued = store.queue_holdout_reviews(store.unqueued_holdout(wanted)) if wanted else 0
    if queued:
        logger.info("review queue: %d holdout items queued blind (%d labelled, %d open)", queued, counts.n_labelled, counts.n_open)
    return queued
