"""Label Studio's side: webhook events kept for the processing job, and the tasks the ML backend served."""

from __future__ import annotations

import logging
from typing import Any, Sequence

import sqlalchemy as sa

from app.store.base import StoreBase, chunks, dialect_insert, records, utcnow
from app.store.records import WebhookEvent
from app.store.schema import served_tasks, webhook_events

logger = logging.getLogger(__name__)


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

    def failed_events(self, limit: int = 500) -> list[WebhookEvent]:
        """Webhook events that could not be used, newest first, with their error."""
        query = (
            sa.select(webhook_events).where(webhook_events.c.error.is_not(None)).order_by(webhook_events.c.id.desc()).limit(limit)
        )
        with self.engine.connect() as conn:
            return records(WebhookEvent, conn.execute(query))

    def mark_event(self, event_id: int, error: str | None = None) -> None:
        """Mark a webhook event processed (with the error that made it unusable, if any)."""
        with self.engine.begin() as conn:
            conn.execute(
                webhook_events.update().where(webhook_events.c.id == event_id).values(processed_at=utcnow(), error=error)
            )

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

