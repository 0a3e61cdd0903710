"""The label checks' state: each version's suspected label errors and consensus labels, and the second looks.

:meth:`ChecksMixin.record_label_checks` replaces what one version's checks found (a re-run writes the same rows);
readers ask for the last checked version's (recorded apart, so a check that found nothing counts). A consensus label (CROWDLAB over several answers) holds only while
the item's newest answer is the one the checks saw (``newest_label_id``): a later answer waits for the next check.
Second looks are an outbox of their own beside ``review_tasks`` (one item, one review task there; a second look is
another Label Studio task for the same item, with no guess), delivered and retried as review tasks are. An item may
get several, one open at a time, each a row that stays (who had answered, which version asked, the label in doubt).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa

from app.store.base import StoreBase, chunks, insert_ignore, records, upsert, utcnow
from app.store.records import Answer, DueSecondLook, LabelCheck, SecondLook
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
        """The ids among ``item_ids`` that had a second look queued already (any kind, any status)."""
        return set(self.second_look_state(item_ids))

    def second_look_state(self, item_ids: Sequence[str]) -> dict[str, tuple[int, int]]:
        """item id -> (second looks queued, of them still open: pending or sent) for those of ``item_ids`` with any."""
        state: dict[str, tuple[int, int]] = {}
        is_open = sa.case((second_looks.c.status.in_(("pending", "sent")), 1), else_=0)
        with self.engine.connect() as conn:
            for chunk in chunks(sorted(set(item_ids)), 500):
                query = (
                    sa.select(second_looks.c.item_id, sa.func.count(), sa.func.sum(is_open))
                    .where(second_looks.c.item_id.in_(list(chunk)))
                    .group_by(second_looks.c.item_id)
                )
                state.update({item_id: (int(n), int(n_open or 0)) for item_id, n, n_open in conn.execute(query)})
        return state

    def may_look_again(self, max_looks: dict[str, int]) -> dict[str, int]:
        """The one eligibility rule for a second look: item id -> the number its next look would have, for the items
        of ``max_looks`` (item id -> looks allowed) with fewer looks queued than allowed and none still open.

        The checks' split counts with it, the checks filter their asks with it and :meth:`queue_second_looks`
        inserts by it, so what the split counts is what gets queued."""
        state = self.second_look_state(list(max_looks))
        return {
            item_id: looks + 1
            for item_id, allowed in max_looks.items()
            for looks, n_open in [state.get(item_id, (0, 0))]
            if looks < allowed and not n_open
        }

    def queue_second_looks(
        self, version: str, not_for: dict[str, list[str]], limit: int | None = None, *, split: str = "training",
        reason: str = "suspect", labels: dict[str, str] | None = None, max_looks: int = 1,
    ) -> int:
        """Queue one more second look for the first ``limit`` items (in the order given) that :meth:`may_look_again`
        with ``max_looks`` (a suspect: 1, one ever; a tie: up to the setting). ``not_for``: who answered each
        already; ``labels``: the label in doubt. Returns how many were queued."""
        now = utcnow()
        next_look = self.may_look_again(dict.fromkeys(not_for, max_looks))
        fresh = [item_id for item_id in not_for if item_id in next_look][: limit if limit is not None else None]
        rows = [
            {"item_id": item_id, "look": next_look[item_id], "split": split, "reason": reason,
             "label": (labels or {}).get(item_id), "model_version": version, "status": "pending",
             "not_for": sorted(not_for[item_id]), "attempts": 0, "next_attempt_at": now, "created_at": now, "updated_at": now}
            for item_id in fresh
        ]  # fmt: skip
        if not rows:
            return 0
        with self.engine.begin() as conn:  # two checks at once: the (item, look) key lets one of them in
            return insert_ignore(conn, second_looks, rows, ["item_id", "look"])

    def second_looks_of(self, split: str | None = None) -> list[SecondLook]:
        """Every second look asked (of one split), oldest first: the history."""
        query = sa.select(*(second_looks.c[name] for name in SecondLook.__dataclass_fields__)).order_by(second_looks.c.id)
        if split is not None:
            query = query.where(second_looks.c.split == split)
        with self.engine.connect() as conn:
            return records(SecondLook, conn.execute(query))

    def due_second_looks(self, limit: int, now: datetime | None = None) -> list[DueSecondLook]:
        """Pending second looks whose next attempt is due, oldest first, with their image path."""
        now = now or utcnow()
        query = (
            sa.select(second_looks.c.id, second_looks.c.look, second_looks.c.item_id, second_looks.c.model_version,
                      second_looks.c.attempts, second_looks.c.not_for, items.c.image_path)
            .select_from(second_looks.join(items, items.c.id == second_looks.c.item_id))
            .where(second_looks.c.status == "pending", second_looks.c.next_attempt_at <= now)
            .order_by(second_looks.c.next_attempt_at, second_looks.c.id)
            .limit(limit)
        )  # fmt: skip
        with self.engine.connect() as conn:
            return records(DueSecondLook, conn.execute(query))

    def mark_second_looks_delivered(self, delivered: dict[int, int]) -> int:
        """Mark second looks (by row id) sent with their Label Studio task ids; returns how many."""
        now = utcnow()
        count = 0
        with self.engine.begin() as conn:
            for look_id, task_id in delivered.items():
                result = conn.execute(
                    second_looks.update()
                    .where(second_looks.c.id == int(look_id), second_looks.c.status == "pending")
                    .values(status="sent", ls_task_id=int(task_id), last_error=None, updated_at=now)
                )
                count += int(result.rowcount)
        return count

    def mark_second_look_failed(self, look_ids: Sequence[int], error: str, retry_at: datetime | None) -> None:
        """Count a failed delivery (rows by id); ``retry_at`` None marks them ``failed`` (the retry limit was reached)."""
        values: dict = {"attempts": second_looks.c.attempts + 1, "last_error": error[:2000], "updated_at": utcnow()}
        values.update({"next_attempt_at": retry_at} if retry_at is not None else {"status": "failed"})
        with self.engine.begin() as conn:
            conn.execute(second_looks.update().where(second_looks.c.id.in_([int(i) for i in look_ids]), second_looks.c.status == "pending").values(**values))

    def second_look_counts(self) -> dict[str, int]:
        """Second looks per status (every status present, zero when none)."""
        counts = {status: 0 for status in REVIEW_STATUSES}
        with self.engine.connect() as conn:
            for status, count in conn.execute(sa.select(second_looks.c.status, sa.func.count()).group_by(second_looks.c.status)):
                counts[status] = int(count)
        return counts
