"""Predictions and the review outbox to Label Studio: record, queue, deliver, retry, forget old served items."""

from __future__ import annotations

import functools
import logging
from datetime import datetime
from typing import Any, Iterable, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from app.store.base import StoreBase, chunks, insert_of, records, require_items, utcnow
from app.store.items import insert_items
from app.store.records import DueReview, NewItem, NewPrediction
from app.store.schema import REVIEW_STATUSES, items, labels, predictions, review_tasks, second_looks

logger = logging.getLogger(__name__)


class OutboxMixin(StoreBase):
    """Predictions and the review outbox to Label Studio: record, queue, deliver, retry, forget old served items."""

    def record_predictions(
        self, new_predictions: Sequence[NewPrediction], new_items: Sequence[NewItem] = (), review_only: bool = False
    ) -> None:
        """In ONE transaction: insert new items, the predictions, and queue every ``review`` one (the outbox).

        Raises :class:`StoreError` naming an unknown item (and writes nothing).

        With ``review_only`` only the predictions that go to review are stored (re-scoring a large pool).
        """
        now = utcnow()
        with self.engine.begin() as conn:
            if new_items:
                insert_items(conn, new_items)
            # The items inserted just now exist in this transaction: only the others are checked (one statement
            # less for a new image, a third of a one-image prediction's write).
            require_items(conn, {prediction.item_id for prediction in new_predictions} - {item.id for item in new_items})
            rows = [
                {**prediction.__dict__, "created_at": now}
                for prediction in new_predictions
                if not review_only or prediction.review
            ]
            if rows:
                conn.execute(predictions.insert(), rows)
            queued = [prediction for prediction in new_predictions if prediction.review]
            if queued:
                upsert_reviews(conn, queued, now)

    def queue_reviews(self, queued: Sequence[NewPrediction]) -> None:
        """Queue items for annotators (or refresh the prediction on their queued task)."""
        with self.engine.begin() as conn:
            upsert_reviews(conn, queued, utcnow())

    def due_reviews(self, limit: int, now: datetime | None = None, split: str | None = None) -> list[DueReview]:
        """Pending review tasks whose next attempt is due, oldest first, with their image path (only the items of
        ``split`` when given)."""
        now = now or utcnow()
        query = (
            sa.select(review_tasks, items.c.image_path, items.c.source, items.c.split)
            .select_from(review_tasks.join(items, items.c.id == review_tasks.c.item_id))
            .where(review_tasks.c.status == "pending", review_tasks.c.next_attempt_at <= now)
            .where(items.c.split == split if split is not None else sa.true())
            .order_by(review_tasks.c.next_attempt_at, review_tasks.c.item_id)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return records(DueReview, conn.execute(query))

    def mark_delivered(self, delivered: dict[str, int], versions: dict[str, str]) -> int:
        """Mark review tasks sent with their Label Studio task ids; a row re-queued meanwhile stays pending."""
        now = utcnow()
        count = 0
        with self.engine.begin() as conn:
            for item_id, task_id in delivered.items():
                result = conn.execute(
                    review_tasks.update()
                    .where(
                        review_tasks.c.item_id == item_id,
                        review_tasks.c.status == "pending",
                        review_tasks.c.model_version == versions[item_id],
                    )
                    .values(status="sent", ls_task_id=task_id, last_error=None, updated_at=now)
                )
                if result.rowcount == 0:
                    # Re-queued with a newer prediction while we sent: keep it pending, remember the task id.
                    conn.execute(
                        review_tasks.update().where(review_tasks.c.item_id == item_id).values(ls_task_id=task_id)
                    )
                count += result.rowcount
        return count

    def mark_delivery_failed(self, item_ids: Sequence[str], error: str, retry_at: datetime | None) -> None:
        """Count a failed attempt; ``retry_at`` None gives up (status ``failed``), else retry then."""
        now = utcnow()
        with self.engine.begin() as conn:
            values: dict[str, Any] = {"attempts": review_tasks.c.attempts + 1, "last_error": error[:2000], "updated_at": now}
            if retry_at is None:
                values["status"] = "failed"
            else:
                values["next_attempt_at"] = retry_at
            conn.execute(
                review_tasks.update().where(review_tasks.c.item_id.in_(list(item_ids)), review_tasks.c.status == "pending").values(**values)
            )

    def retry_failed_reviews(self) -> int:
        """Put every ``failed`` review task back to ``pending`` with a fresh attempt count; returns how many."""
        now = utcnow()
        with self.engine.begin() as conn:
            result = conn.execute(
                review_tasks.update()
                .where(review_tasks.c.status == "failed")
                .values(status="pending", attempts=0, next_attempt_at=now, updated_at=now)
            )
        return int(result.rowcount)

    def review_item_of_task(self, ls_task_id: int) -> str | None:
        """The item juicer delivered as Label Studio task ``ls_task_id`` of its own project (a review task or a second
        look; None: not one of ours)."""
        return self.review_items_of_tasks([ls_task_id]).get(int(ls_task_id))

    def review_items_of_tasks(self, ls_task_ids: Sequence[int]) -> dict[int, str]:
        """Label Studio task id -> the item juicer delivered as that task of its own project (tasks not ours are absent)."""
        found: dict[int, str] = {}
        with self.engine.connect() as conn:
            for chunk in chunks(sorted({int(t) for t in ls_task_ids}), 500):
                for table in (review_tasks, second_looks):  # a second look is a task of its own for its item
                    query = sa.select(table.c.ls_task_id, table.c.item_id).where(table.c.ls_task_id.in_(list(chunk)))
                    found.update({int(task_id): item_id for task_id, item_id in conn.execute(query)})
        return found

    def review_counts(self) -> dict[str, int]:
        """Review tasks per status (every status present, zero when none)."""
        counts = {status: 0 for status in REVIEW_STATUSES}
        with self.engine.connect() as conn:
            for status, count in conn.execute(sa.select(review_tasks.c.status, sa.func.count()).group_by(review_tasks.c.status)):
                counts[status] = count
        return counts

    def forget_served(self, before: datetime) -> list[str]:
        """Delete served items created ``before`` that no label names and no open review task holds, with their
        predictions and finished review rows; also every item's predictions older than ``before`` except its
        newest. Returns the image paths no remaining item uses (for the caller to delete)."""
        open_reviews = sa.select(review_tasks.c.item_id).where(review_tasks.c.status.in_(["pending", "sent"]))
        with self.engine.begin() as conn:
            doomed = list(
                conn.execute(
                    sa.select(items.c.id).where(
                        items.c.split == "served", items.c.created_at < before,
                        items.c.id.not_in(sa.select(labels.c.item_id)), items.c.id.not_in(open_reviews),
                    )
                ).scalars()
            )  # fmt: skip
            paths: set[str] = set()
            for chunk in chunks(doomed, 500):
                ids = list(chunk)
                paths.update(p for p in conn.execute(sa.select(items.c.image_path).where(items.c.id.in_(ids))).scalars() if p)
                conn.execute(predictions.delete().where(predictions.c.item_id.in_(ids)))
                conn.execute(review_tasks.delete().where(review_tasks.c.item_id.in_(ids)))
                conn.execute(items.delete().where(items.c.id.in_(ids)))
            newest = sa.select(sa.func.max(predictions.c.id)).group_by(predictions.c.item_id)
            conn.execute(predictions.delete().where(predictions.c.created_at < before, predictions.c.id.not_in(newest)))
            still_used = set(conn.execute(sa.select(items.c.image_path).where(items.c.image_path.in_(sorted(paths)))).scalars()) if paths else set()
        return sorted(paths - still_used)

    def prediction_counts(self) -> dict[str, int]:
        """Predictions recorded per decision."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(predictions.c.decision, sa.func.count()).group_by(predictions.c.decision))
            return {decision: count for decision, count in rows}



@functools.cache
def _upsert_review_statement(dialect: str) -> Any:
    """The outbox upsert of one dialect, built once: building its ``excluded`` columns cost about half a millisecond
    on every call (a third of a one-image prediction's write); the statement is immutable, so it is shared."""
    statement = insert_of(dialect, review_tasks)
    excluded = statement.excluded
    return statement.on_conflict_do_update(
        index_elements=["item_id"],
        set_={
            "status": "pending",
            "label": excluded.label,
            "score": excluded.score,
            "model_version": excluded.model_version,
            "attempts": 0,
            "next_attempt_at": excluded.next_attempt_at,
            "updated_at": excluded.updated_at,
        },
        where=review_tasks.c.status != "labelled",
    )


def upsert_reviews(conn: Connection, queued: Sequence[NewPrediction], now: datetime) -> None:
    """Upsert outbox rows: new -> pending; already queued and not labelled -> pending with the new prediction."""
    # One row per item (the last prediction wins): PostgreSQL refuses an upsert that touches a row twice.
    latest = list({prediction.item_id: prediction for prediction in queued}.values())
    # The rows go as parameters, not as a VALUES list in the statement: its compiled form is then cached (a
    # multi-row VALUES statement is compiled again on every call, most of the cost of /v1/predict's one-row write).
    statement = _upsert_review_statement(conn.dialect.name)
    for chunk in chunks(latest, 500):
        conn.execute(
            statement,
            [
                {
                    "item_id": prediction.item_id,
                    "status": "pending",
                    "label": prediction.label,
                    "score": float(prediction.score),
                    "model_version": prediction.model_version,
                    "attempts": 0,
                    "next_attempt_at": now,
                    "created_at": now,
                    "updated_at": now,
                }
                for prediction in chunk
            ],
        )


def mark_reviews_labelled(conn: Connection, item_ids: Iterable[str]) -> None:
    """Mark the review tasks of ``item_ids`` labelled (a label arrived, whatever its source)."""
    ids = list(item_ids)
    for chunk in chunks(ids, 500):
        conn.execute(
            review_tasks.update().where(review_tasks.c.item_id.in_(list(chunk))).values(status="labelled", updated_at=utcnow())
        )
