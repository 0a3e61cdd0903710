"""The review outbox: review tasks the store queued, sent to Label Studio in batches, retried with backoff.

Label Studio down (a retryable error) backs off the whole batch; a refusal is narrowed down by sending the
batch's items one at a time, so only the refused item backs off. An item that failed
``delivery_max_attempts`` times is marked ``failed`` (``POST /v1/reviews/retry`` puts it back).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from annotation.errors import AnnotationError
from app.store import DueReview, Store, utcnow
from config.settings import ServiceSettings

if TYPE_CHECKING:  # the desk pulls in the SDK
    from annotation.desk import LabelStudioDesk
    from annotation.models import Project

logger = logging.getLogger(__name__)


def retry_delay(service: ServiceSettings, attempts: int, retryable: bool) -> float:
    """Seconds before the next delivery attempt: doubling from ``retry_backoff_s``, capped (exponent too)."""
    if not retryable:
        return service.retry_backoff_max_s  # a refusal needs a person; keep it, retry rarely
    return min(service.retry_backoff_s * 2 ** min(attempts, 32), service.retry_backoff_max_s)


def _delivery_failed(store: Store, service: ServiceSettings, rows: list[DueReview], exc: Exception) -> None:
    """Count one failed attempt per row; a row at ``delivery_max_attempts`` becomes ``failed``."""
    retryable = bool(getattr(exc, "retryable", False))
    for row in rows:
        attempts = int(row.attempts) + 1
        retry_at = None
        if attempts < service.delivery_max_attempts:
            retry_at = utcnow() + timedelta(seconds=retry_delay(service, attempts - 1, retryable))
        store.mark_delivery_failed([row.item_id], str(exc), retry_at)
        if retry_at is None:
            logger.error("review task %s failed %d times, marked failed: %s", row.item_id, attempts, exc)


def deliver_outbox(store: Store, desk: LabelStudioDesk | None, project: Project | None, service: ServiceSettings) -> int:
    """Send due review tasks to Label Studio in batches of ``deliver_batch_size``; returns how many were delivered."""
    from annotation.models import ReviewRequest

    if desk is None or project is None:
        return 0
    delivered = 0
    while True:
        due = store.due_reviews(service.deliver_batch_size)
        if not due:
            return delivered
        requests = [
            ReviewRequest(
                item_id=row.item_id,
                image=str(PurePosixPath(row.image_path).relative_to("images")),
                label=row.label or None,  # "" before the first model: no prediction to show
                score=float(row.score),
                model_version=row.model_version,
                blind=row.split == "holdout",  # the outbox's own record: a holdout item never shows a guess
            )
            for row in due
        ]
        versions = {row.item_id: row.model_version for row in due}
        try:
            tasks = desk.send_for_review(project, requests)
        except AnnotationError as exc:
            if exc.retryable or len(due) == 1:
                _delivery_failed(store, service, due, exc)
                logger.warning("delivering %d review tasks failed (%s); retrying later", len(due), exc)
                return delivered
            tasks = []
            for request, row in zip(requests, due):
                try:
                    tasks.extend(desk.send_for_review(project, [request]))
                except AnnotationError as one:
                    _delivery_failed(store, service, [row], one)
                    logger.warning("review task %s refused: %s", row.item_id, one)
            return delivered + store.mark_delivered({task.item_id: task.task_id for task in tasks}, versions)
        marked = store.mark_delivered({task.item_id: task.task_id for task in tasks}, versions)
        delivered += marked
        logger.info("delivered %d review tasks to Label Studio", len(tasks))
        if len(due) < service.deliver_batch_size or marked == 0:
            return delivered


def deliver_second_looks(store: Store, desk: LabelStudioDesk | None, project: Project | None, service: ServiceSettings) -> int:
    """Send due second looks (:mod:`app.core.checks`) to Label Studio: a task of their own per item, with no guess,
    noting who answered already; retried with the review tasks' backoff. Returns how many were delivered."""
    from annotation.models import ReviewRequest

    if desk is None or project is None:
        return 0
    due = store.due_second_looks(service.deliver_batch_size)
    if not due:
        return 0
    requests = [
        ReviewRequest(item_id=row.item_id, image=str(PurePosixPath(row.image_path or "").relative_to("images")), label=None,
                      score=0.0, model_version=row.model_version, blind=True, second_look=True, not_for=tuple(row.not_for),
                      look=int(row.look))
        for row in due
    ]  # fmt: skip
    try:
        tasks = desk.send_for_review(project, requests)
    except AnnotationError as exc:
        for row in due:
            attempts = int(row.attempts) + 1
            retry_at = None
            if attempts < service.delivery_max_attempts:
                retry_at = utcnow() + timedelta(seconds=retry_delay(service, attempts - 1, bool(exc.retryable)))
            store.mark_second_look_failed([row.id], str(exc), retry_at)
        logger.warning("delivering %d second looks failed (%s); retrying later", len(due), exc)
        return 0
    look_of = {row.item_id: row.id for row in due}  # an item has one open second look at a time
    delivered = store.mark_second_looks_delivered({look_of[task.item_id]: task.task_id for task in tasks})
    logger.info("delivered %d second looks to Label Studio (no guess shown)", delivered)
    return delivered


def prune_predictions(desk: LabelStudioDesk | None, project: Project | None) -> list[str]:
    """Prune superseded prediction versions in Label Studio, off the delivery path (deleting is slow there)."""
    if desk is None or project is None:
        return []
    return desk.prune_predictions(project)
