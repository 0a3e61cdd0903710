"""Label Studio's side: webhook events kept for the processing job, and the tasks the ML backend served.

Events are bounded: the doors refuse new ones while :meth:`EventsMixin.pending_event_count` is at the cap, the job
takes the oldest first, and :meth:`EventsMixin.forget_events` deletes processed ones after the retention period.
Events dropped because they came from a project juicer does not serve are counted in ``meta`` (kept through
retention), for ``/metrics``.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import sqlalchemy as sa

from datetime import datetime

from app.store.base import StoreBase, chunks, dialect_insert, records, upsert, utcnow
from app.store.records import WebhookEvent
from app.store.schema import meta, served_tasks, webhook_events

logger = logging.getLogger(__name__)

DROPPED_KEY = "webhook-events-dropped"  # meta: how many events came from projects juicer does not serve


class EventsMixin(StoreBase):
    """Label Studio's side: webhook events kept for the processing job, and the tasks the ML backend served."""

    def record_event(self, payload: Any) -> int:
        """Keep a webhook payload for the processing job; returns its id. One short insert."""
        with self.engine.begin() as conn:
            result = conn.execute(webhook_events.insert().values(received_at=utcnow(), payload=payload))
            return int(result.inserted_primary_key[0])

    def pending_events(self, limit: int = 500) -> list[WebhookEvent]:
        """Webhook events not processed yet, oldest first."""
        query = sa.select(webhook_events).where(webhook_events.c.processed_at.is_(None)).order_by(webhook_events.c.id).limit(limit)
        with self.engine.connect() as conn:
            return records(WebhookEvent, conn.execute(query))

    def pending_event_count(self) -> int:
        """How many webhook events wait for the processing job."""
        query = sa.select(sa.func.count()).select_from(webhook_events).where(webhook_events.c.processed_at.is_(None))
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def event_counts(self) -> dict[str, int]:
        """Webhook events by state: ``pending``, ``failed`` (kept until retention), ``dropped`` (ever, not served)."""
        query = sa.select(
            sa.func.count().filter(webhook_events.c.processed_at.is_(None)),
            sa.func.count().filter(webhook_events.c.error.is_not(None)),
        ).select_from(webhook_events)
        with self.engine.connect() as conn:
            pending, failed = conn.execute(query).one()
        return {"pending": int(pending), "failed": int(failed), "dropped": int(self.get_meta(DROPPED_KEY, 0))}

    def forget_events(self, before: datetime) -> int:
        """Delete webhook events processed before ``before`` (used or failed); returns how many."""
        with self.engine.begin() as conn:
            result = conn.execute(
                webhook_events.delete().where(webhook_events.c.processed_at.is_not(None), webhook_events.c.processed_at < before)
            )
            return int(result.rowcount or 0)

    def failed_events(self, limit: int = 500) -> list[WebhookEvent]:
        """Webhook events that could not be used, newest first, with their error."""
        query = (
            sa.select(webhook_events).where(webhook_events.c.error.is_not(None)).order_by(webhook_events.c.id.desc()).limit(limit)
        )
        with self.engine.connect() as conn:
            return records(WebhookEvent, conn.execute(query))

    def mark_event(self, event_id: int, error: str | None = None, dropped: bool = False) -> None:
        """Mark a webhook event processed (with the error that made it unusable, if any; ``dropped`` counts it as
        an event from a project juicer does not serve)."""
        with self._serialised() as conn:
            conn.execute(
                webhook_events.update().where(webhook_events.c.id == event_id).values(processed_at=utcnow(), error=error)
            )
            if dropped:
                count = conn.execute(sa.select(meta.c.value).where(meta.c.key == DROPPED_KEY)).scalar_one_or_none()
                upsert(conn, meta, {"key": DROPPED_KEY, "value": int(count or 0) + 1}, ["key"], ["value"])

    def link_served_tasks(self, project: str, task_items: dict[int, str]) -> None:
        """Remember which item each Label Studio task of ``project`` shows (the ML backend's tasks; re-linking updates)."""
        if not task_items:
            return
        now = utcnow()
        with self.engine.begin() as conn:
            for chunk in chunks(list(task_items.items()), 500):
                statement = dialect_insert(conn, served_tasks).values(
                    [{"project": str(project), "task_id": int(t), "item_id": i, "created_at": now} for t, i in chunk]
                )
                conn.execute(
                    statement.on_conflict_do_update(
                        index_elements=["project", "task_id"], set_={"item_id": statement.excluded.item_id}
                    )
                )

    def served_task_items(self, project: str, task_ids: Sequence[int]) -> dict[int, str]:
        """task id -> item id for the tasks of ``project`` the ML backend has linked."""
        found: dict[int, str] = {}
        with self.engine.connect() as conn:
            for chunk in chunks([int(t) for t in task_ids], 500):
                query = sa.select(served_tasks.c.task_id, served_tasks.c.item_id).where(
                    served_tasks.c.project == str(project), served_tasks.c.task_id.in_(list(chunk))
                )
                found.update({int(task_id): item_id for task_id, item_id in conn.execute(query)})
        return found

