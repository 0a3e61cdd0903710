"""The label checks' state: each version's suspected label errors and consensus labels, and the second looks.

:meth:`ChecksMixin.record_label_checks` replaces what one version's checks found (a re-run writes the same rows);
readers ask for the last checked version's (recorded apart, so a check that found nothing counts). A consensus label (CROWDLAB over several answers) holds only while
the item's newest answer is the one the checks saw (``newest_label_id``): a later answer waits for the next check.
Second looks are an outbox of their own beside ``review_tasks`` (one item, one review task there; a second look is
another Label Studio task for the same item, with no guess), delivered and retried as review tasks are.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa

from app.store.base import StoreBase, chunks, insert_ignore, records, upsert, utcnow
from app.store.records import Answer, DueSecondLook, LabelCheck
from app.store.schema import (
    REVIEW_STATUSES,
    items,
    label_checks,
    labels,
    meta,
    second_looks,
)

#: The meta key naming the model version whose labels were checked last.
CHECKED_VERSION_KEY = "label_checks_version"


class ChecksMixin(StoreBase):
    """Suspected label errors and consensus labels per version; the second looks' outbox."""

    def answers(self, holdout: bool = False) -> list[Answer]:
        """Every active answer on training items (or, with ``holdout``, holdout items), oldest first.

        An answer with no annotator (an API or seed label) counts as its source's (``api``, ``seed``, ...).
        """
        split = items.c.split == "holdout" if holdout else items.c.split != "holdout"
        query = (
            sa.select(labels.c.item_id, sa.func.coalesce(labels.c.annotator, labels.c.source), labels.c.label, labels.c.id)
            .select_from(labels.join(items, items.c.id == labels.c.item_id))
            .where(labels.c.withdrawn_at.is_(None), items.c.quarantined.is_(None), split)
            .order_by(labels.c.id)
        )
        with self.engine.connect() as conn:
            return [Answer(item_id, str(annotator or ""), label, int(label_id)) for item_id, annotator, label, label_id in conn.execute(query)]

    def record_label_checks(self, version: str, checks: Sequence[LabelCheck]) -> None:
        """Store what ``version``'s checks found, replacing any earlier run for that version."""
        now = utcnow()
        rows = [{**check.__dict__, "model_version": version, "created_at": now} for check in checks]
        with self.engine.begin() as conn:
            conn.execute(label_checks.delete().where(label_checks.c.model_version == version))
            for chunk in chunks(rows, 500):
                conn.execute(label_checks.insert(), list(chunk))
            # Recorded even when the check found nothing: a version with no suspects is checked all the same.
            upsert(conn, meta, {"key": CHECKED_VERSION_KEY, "value": version}, ["key"], ["value"])

    def checked_version(self) -> str | None:
        """The model version whose labels were checked last (None before the first check)."""
        return self.get_meta(CHECKED_VERSION_KEY)

    def label_checks(
        self, version: str | None = None, split: str | None = None, suspect: bool | None = None, limit: int = 10**9, offset: int = 0
    ) -> list[LabelCheck]:
        """A version's checks (the newest checked one by default), most suspect first; filtered by split and suspicion."""
        version = version or self.checked_version()
        if version is None:
            return []
        query = sa.select(label_checks).where(label_checks.c.model_version == version)
        if split is not None:
            query = query.where(label_checks.c.split == split)
        if suspect is not None:
            query = query.where(label_checks.c.suspect == suspect)
        query = query.order_by(label_checks.c.suspect.desc(), sa.func.coalesce(label_checks.c.score, 1.0), label_checks.c.item_id)
        with self.engine.connect() as conn:
            return records(LabelCheck, conn.execute(query.limit(limit).offset(offset)))

    def consensus_labels(self) -> dict[str, tuple[str, int]]:
        """item id -> (consensus label, the newest answer id it was computed with), from the newest checked version."""
        return {
            check.item_id: (check.consensus, check.newest_label_id)
            for check in self.label_checks(split="training")
            if check.consensus is not None
        }

    def second_looked(self, item_ids: Sequence[str]) -> set[str]:
        """The ids among ``item_ids`` that had a second look queued already (an item gets one, ever)."""
        seen: set[str] = set()
        with self.engine.connect() as conn:
            for chunk in chunks(sorted(set(item_ids)), 500):
                seen.update(conn.execute(sa.select(second_looks.c.item_id).where(second_looks.c.item_id.in_(list(chunk)))).scalars())
        return seen

    def queue_second_looks(self, version: str, not_for: dict[str, list[str]], limit: int | None = None) -> int:
        """Queue a second look for the first ``limit`` items (in the order given) never looked at twice (an item gets
        one, ever); ``not_for``: who answered each already. Returns how many were queued."""
        now = utcnow()
        seen = self.second_looked(list(not_for))
        fresh = [item_id for item_id in not_for if item_id not in seen][: limit if limit is not None else None]
        rows = [
            {"item_id": item_id, "model_version": version, "status": "pending", "not_for": sorted(who), "attempts": 0,
             "next_attempt_at": now, "created_at": now, "updated_at": now}
            for item_id, who in ((item_id, not_for[item_id]) for item_id in fresh)
        ]  # fmt: skip
        if not rows:
            return 0
        with self.engine.begin() as conn:
            return insert_ignore(conn, second_looks, rows, ["item_id"])

    def due_second_looks(self, limit: int, now: datetime | None = None) -> list[DueSecondLook]:
        """Pending second looks whose next attempt is due, oldest first, with their image path."""
        now = now or utcnow()
        query = (
            sa.select(second_looks.c.item_id, second_looks.c.model_version, second_looks.c.attempts, second_looks.c.not_for,
                      items.c.image_path)
            .select_from(second_looks.join(items, items.c.id == second_looks.c.item_id))
            .where(second_looks.c.status == "pending", second_looks.c.next_attempt_at <= now)
            .order_by(second_looks.c.next_attempt_at, second_looks.c.item_id)
            .limit(limit)
        )  # fmt: skip
        with self.engine.connect() as conn:
            return records(DueSecondLook, conn.execute(query))

    def mark_second_looks_delivered(self, delivered: dict[str, int]) -> int:
        """Mark second looks sent with their Label Studio task ids; returns how many."""
        now = utcnow()
        count = 0
        with self.engine.begin() as conn:
            for item_id, task_id in delivered.items():
                result = conn.execute(
                    second_looks.update()
                    .where(second_looks.c.item_id == item_id, second_looks.c.status == "pending")
                    .values(status="sent", ls_task_id=int(task_id), last_error=None, updated_at=now)
                )
                count += int(result.rowcount)
        return count

    def mark_second_look_failed(self, item_ids: Sequence[str], error: str, retry_at: datetime | None) -> None:
        """Count a failed delivery; ``retry_at`` None marks them ``failed`` (the retry limit was reached)."""
        values: dict = {"attempts": second_looks.c.attempts + 1, "last_error": error[:2000], "updated_at": utcnow()}
        values.update({"next_attempt_at": retry_at} if retry_at is not None else {"status": "failed"})
        with self.engine.begin() as conn:
            conn.execute(second_looks.update().where(second_looks.c.item_id.in_(list(item_ids)), second_looks.c.status == "pending").values(**values))

    def second_look_counts(self) -> dict[str, int]:
        """Second looks per status (every status present, zero when none)."""
        counts = {status: 0 for status in REVIEW_STATUSES}
        with self.engine.connect() as conn:
            for status, count in conn.execute(sa.select(second_looks.c.status, sa.func.count()).group_by(second_looks.c.status)):
                counts[status] = int(count)
        return counts
