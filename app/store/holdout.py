"""The reserved holdout: pool items moved to split ``holdout`` by a seeded uniform draw, queued for blind labels.

Each pool item gets a key, ``sha256(seed:item id)``; the reservation takes the unlabelled, unqueued pool items
with the smallest keys. That is a uniform random sample of them, fixed by the seed, and stable as the pool
grows: a top-up takes the next smallest keys, so running the reservation again with the same inputs moves
nothing (idempotent). The seed and every id reserved are recorded in the meta value :data:`RESERVATION_KEY`.
Items already labelled or queued for annotators (an active pick) are never moved: the first reservation runs
before the first pick, so only top-ups see a pool thinned by the query strategy.
"""

from __future__ import annotations

import hashlib
from typing import Any

import sqlalchemy as sa

from app.store.base import StoreBase, chunks, insert_ignore, upsert, utcnow
from app.store.records import HoldoutCounts
from app.store.schema import items, labels, meta, review_tasks

#: The meta key holding ``{"seed": int, "item_ids": [...]}``, the reservation so far.
RESERVATION_KEY = "holdout_reservation"
#: The model version recorded on a holdout review task: it carries no prediction.
HOLDOUT_VERSION = "holdout"


def reservation_key(seed: int, item_id: str) -> str:
    """The item's place in the seeded uniform order (smallest first)."""
    return hashlib.sha256(f"{seed}:{item_id}".encode()).hexdigest()


class HoldoutMixin(StoreBase):
    """The reserved holdout: reserve (and top up) from the pool, count, queue its items for blind labels."""

    def reserve_holdout(self, size: int, seed: int, max_pool_share: float = 1.0) -> list[str]:
        """Move pool items to the holdout until it holds ``size`` items (given or reserved); returns the ids moved.

        At most ``max_pool_share`` of the pool (reserved items included) is ever reserved, so a small pool keeps
        most of its items for training and the reservation tops up as the pool grows. Quarantined, labelled and
        queued pool items are not candidates.
        """
        with self._serialised() as conn:
            n_holdout = int(conn.execute(sa.select(sa.func.count()).where(items.c.split == "holdout")).scalar_one())
            state: dict[str, Any] = conn.execute(sa.select(meta.c.value).where(meta.c.key == RESERVATION_KEY)).scalar_one_or_none() or {}
            reserved = list(state.get("item_ids", []))
            n_pool = int(conn.execute(sa.select(sa.func.count()).where(items.c.split == "pool")).scalar_one())
            allowed = int((n_pool + len(reserved)) * max_pool_share) - len(reserved)
            wanted = min(size - n_holdout, allowed)
            if wanted <= 0:
                return []
            taken = sa.union(sa.select(labels.c.item_id).where(labels.c.withdrawn_at.is_(None)), sa.select(review_tasks.c.item_id))
            candidates = list(
                conn.execute(
                    sa.select(items.c.id).where(
                        items.c.split == "pool", items.c.quarantined.is_(None), items.c.id.not_in(sa.select(taken.subquery()))
                    )
                ).scalars()
            )
            chosen = sorted(candidates, key=lambda item_id: reservation_key(seed, item_id))[:wanted]
            for chunk in chunks(chosen, 500):
                conn.execute(items.update().where(items.c.id.in_(list(chunk)), items.c.split == "pool").values(split="holdout"))
            if chosen:
                upsert(conn, meta, {"key": RESERVATION_KEY, "value": {"seed": seed, "item_ids": reserved + chosen}}, ["key"], ["value"])
        return chosen

    def reserved_holdout(self) -> list[str]:
        """The ids reserved so far, in the order they were drawn."""
        return list((self.get_meta(RESERVATION_KEY) or {}).get("item_ids", []))

    def holdout_counts(self) -> HoldoutCounts:
        """How many holdout items there are, how many are labelled, and how many wait with annotators."""
        labelled = sa.select(labels.c.item_id).where(labels.c.withdrawn_at.is_(None))
        holdout = items.c.split == "holdout"
        with self.engine.connect() as conn:
            total = int(conn.execute(sa.select(sa.func.count()).where(holdout)).scalar_one())
            n_labelled = int(conn.execute(sa.select(sa.func.count()).where(holdout, items.c.id.in_(labelled))).scalar_one())
            n_open = int(
                conn.execute(
                    sa.select(sa.func.count())
                    .select_from(review_tasks.join(items, items.c.id == review_tasks.c.item_id))
                    .where(holdout, review_tasks.c.status.in_(["pending", "sent", "failed"]))
                ).scalar_one()
            )
        return HoldoutCounts(total, n_labelled, n_open)

    def unqueued_holdout(self, limit: int) -> list[str]:
        """Up to ``limit`` unlabelled holdout items never queued for annotators, reserved ones in draw order first."""
        labelled = sa.select(labels.c.item_id).where(labels.c.withdrawn_at.is_(None))
        with self.engine.connect() as conn:
            free = set(
                conn.execute(
                    sa.select(items.c.id).where(
                        items.c.split == "holdout", items.c.quarantined.is_(None), items.c.id.not_in(labelled),
                        items.c.id.not_in(sa.select(review_tasks.c.item_id)),
                    )
                ).scalars()
            )  # fmt: skip
        order = [item_id for item_id in self.reserved_holdout() if item_id in free]
        order += sorted(free - set(order))
        return order[: max(limit, 0)]

    def queue_holdout_reviews(self, item_ids: list[str]) -> int:
        """Queue holdout items for annotators with no prediction (model version :data:`HOLDOUT_VERSION`)."""
        now = utcnow()
        rows = [
            {"item_id": item_id, "status": "pending", "label": "", "score": 0.0, "model_version": HOLDOUT_VERSION,
             "attempts": 0, "next_attempt_at": now, "created_at": now, "updated_at": now}
            for item_id in item_ids
        ]  # fmt: skip
        if not rows:
            return 0
        with self.engine.begin() as conn:
            return insert_ignore(conn, review_tasks, rows, ["item_id"])
