"""Items: add, look up, list, count, quarantine and release."""

from __future__ import annotations

import logging
from typing import Iterable, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from app.store.base import StoreBase, StoreError, chunks, insert_ignore, record, records, utcnow
from app.store.records import Item, ItemDetail, Label, NewItem, NewLabel, PoolColumns, Prediction, ReviewTask
from app.store.schema import SPLITS, items, labels, predictions, review_tasks

logger = logging.getLogger(__name__)


class ItemsMixin(StoreBase):
    """Items: add, look up, list, count, quarantine and release."""

    def add_items(self, new_items: Iterable[NewItem]) -> int:
        """Insert items whose id is new (others are left as they are); returns how many were inserted."""
        with self.engine.begin() as conn:
            return insert_items(conn, new_items)

    def add_items_with_labels(self, new_items: Sequence[NewItem], new_labels: Sequence[NewLabel] = ()) -> list[str]:
        """Insert the items whose id is new and, in the same transaction, the labels of those items only; returns
        the ids inserted. An item is never recorded without its label (an import killed between the two would
        leave a labelled folder's image in the pool), and an item someone else inserted first keeps its labels."""
        now = utcnow()
        with self._serialised() as conn:
            wanted = [item.id for item in new_items]
            existing: set[str] = set()
            for chunk in chunks(wanted, 500):
                existing.update(conn.execute(sa.select(items.c.id).where(items.c.id.in_(list(chunk)))).scalars())
            fresh = [item for item in new_items if item.id not in existing]
            insert_items(conn, fresh)
            inserted = {item.id for item in fresh}
            rows = [
                {"item_id": label.item_id, "label": label.label, "source": label.source, "annotator": label.annotator,
                 "external_id": label.external_id, "created_at": label.created_at or now}
                for label in new_labels if label.item_id in inserted
            ]  # fmt: skip
            if rows:
                conn.execute(labels.insert(), rows)
        return [item.id for item in fresh]

    def get_item(self, item_id: str) -> ItemDetail | None:
        """One item with its current label, latest prediction and review status, or None."""
        with self.engine.connect() as conn:
            item = record(Item, conn.execute(sa.select(items).where(items.c.id == item_id)).first())
            if item is None:
                return None
            label = record(
                Label,
                conn.execute(
                    sa.select(labels.c.label, labels.c.source, labels.c.annotator, labels.c.created_at)
                    .where(labels.c.item_id == item_id, labels.c.withdrawn_at.is_(None))
                    .order_by(labels.c.id.desc())
                    .limit(1)
                ).first()
            )
            prediction = record(
                Prediction,
                conn.execute(
                    sa.select(predictions).where(predictions.c.item_id == item_id).order_by(predictions.c.id.desc()).limit(1)
                ).first()
            )
            query = sa.select(review_tasks).where(review_tasks.c.item_id == item_id)
            review = record(ReviewTask, conn.execute(query).first())
        return ItemDetail(**vars(item), label=label, prediction=prediction, review=review)

    def quarantine(self, item_id: str, reason: str) -> None:
        """Set an item aside: its image is missing or unreadable; it stays listed, out of training and queues."""
        with self.engine.begin() as conn:
            conn.execute(items.update().where(items.c.id == item_id).values(quarantined=reason[:2000]))
        logger.warning("item %s quarantined: %s", item_id, reason)

    def release(self, item_id: str) -> None:
        """Take an item out of quarantine (its image is back)."""
        with self.engine.begin() as conn:
            conn.execute(items.update().where(items.c.id == item_id).values(quarantined=None))

    def quarantined(self, limit: int = 100, offset: int = 0) -> list[Item]:
        """Quarantined items with the reason, in id order."""
        query = sa.select(items).where(items.c.quarantined.is_not(None)).order_by(items.c.id).limit(limit).offset(offset)
        with self.engine.connect() as conn:
            return records(Item, conn.execute(query))

    def item_ids_by_hash(self, hashes: Sequence[str]) -> dict[str, str]:
        """content hash -> the first item id holding it, for the hashes already stored."""
        found: dict[str, str] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(hashes), 500):
                chunk = list(hashes[start : start + 500])
                rows = conn.execute(
                    sa.select(items.c.content_hash, items.c.id).where(items.c.content_hash.in_(chunk)).order_by(items.c.id)
                )
                for content_hash, item_id in rows:
                    found.setdefault(content_hash, item_id)
        return found

    def list_items(self, split: str | None = None, limit: int = 100, offset: int = 0) -> list[Item]:
        """Items (newest first), optionally of one split."""
        query = sa.select(items).order_by(items.c.created_at.desc(), items.c.id).limit(limit).offset(offset)
        if split is not None:
            query = query.where(items.c.split == split)
        with self.engine.connect() as conn:
            return records(Item, conn.execute(query))

    def count_items(self) -> dict[str, int]:
        """Number of items per split."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(items.c.split, sa.func.count()).group_by(items.c.split))
            return {split: count for split, count in rows}

    def items_of_split(self, split: str) -> list[Item]:
        """Every item of one split, in id order."""
        with self.engine.connect() as conn:
            return records(Item, conn.execute(sa.select(items).where(items.c.split == split).order_by(items.c.id)))


    def unlabelled_columns(self, split: str = "pool", include_quarantined: bool = False) -> PoolColumns:
        """Items of ``split`` with a stored image and no active label, as id / hash / review-status columns in id
        order; quarantined ones are left out unless ``include_quarantined``. The pool's rows as
        :meth:`unlabelled_pool` lists them, read in batches without a record per row."""
        query = (
            sa.select(items.c.id, items.c.content_hash, review_tasks.c.status)
            .select_from(items.outerjoin(review_tasks, review_tasks.c.item_id == items.c.id))
            .where(*_unlabelled(split, include_quarantined))
            .order_by(items.c.id)
        )
        ids: list[str] = []
        hashes: list[str] = []
        statuses: list[str | None] = []
        with self.engine.connect() as conn:
            for batch in conn.execute(query.execution_options(yield_per=50_000)).partitions():
                for item_id, content_hash, status in batch:
                    ids.append(item_id)
                    hashes.append(content_hash)
                    statuses.append(status)
        return PoolColumns(ids, hashes, statuses)

    def count_unlabelled(self, split: str = "pool", include_quarantined: bool = False) -> int:
        """How many rows :meth:`unlabelled_columns` would list, counted in the database."""
        query = sa.select(sa.func.count()).select_from(items).where(*_unlabelled(split, include_quarantined))
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def unlabelled_at(
        self, split: str, positions: Sequence[int], include_quarantined: bool = False
    ) -> tuple[list[str], list[str]]:
        """(ids, content hashes) of the rows at ``positions`` (0-based, ascending) of what
        :meth:`unlabelled_columns` would list: a sample of a million-item pool read without reading the pool.

        The database numbers the rows in id order and returns only those asked for (positions past the end are
        left out); each batch of 50,000 positions costs one pass over the split's rows inside the database."""
        numbered = (
            sa.select(items.c.id, items.c.content_hash,
                      (sa.func.row_number().over(order_by=items.c.id) - 1).label("position"))
            .where(*_unlabelled(split, include_quarantined))
            .subquery()
        )
        ids: list[str] = []
        hashes: list[str] = []
        with self.engine.connect() as conn:
            for chunk in chunks([int(p) for p in positions], 50_000):
                # The positions are our own integers: written into the statement, past any bound-parameter limit.
                wanted = sa.bindparam("positions", list(chunk), expanding=True, literal_execute=True)
                query = sa.select(numbered.c.id, numbered.c.content_hash).where(numbered.c.position.in_(wanted))
                for item_id, content_hash in conn.execute(query.order_by(numbered.c.position)):
                    ids.append(item_id)
                    hashes.append(content_hash)
        return ids, hashes

    def items_by_id(self, item_ids: Sequence[str]) -> dict[str, Item]:
        """The stored items among ``item_ids``, by id."""
        found: dict[str, Item] = {}
        with self.engine.connect() as conn:
            for chunk in chunks(list(item_ids), 500):
                for item in records(Item, conn.execute(sa.select(items).where(items.c.id.in_(list(chunk))))):
                    found[item.id] = item
        return found


def insert_items(conn: Connection, new_items: Iterable[NewItem]) -> int:
    """Insert items whose id is new in ``conn``'s transaction; raises :class:`StoreError` for a bad split."""
    rows = []
    now = utcnow()
    for item in new_items:
        if item.split not in SPLITS:
            raise StoreError(f"item {item.id}: split must be one of {', '.join(SPLITS)}, not {item.split!r}")
        rows.append({**item.__dict__, "created_at": now})
    if not rows:
        return 0
    return insert_ignore(conn, items, rows, ["id"])


def _unlabelled(split: str, include_quarantined: bool) -> list[sa.ColumnElement[bool]]:
    """The conditions of an unlabelled item of ``split`` with a stored image (quarantined ones unless asked)."""
    labelled = sa.select(labels.c.item_id).where(labels.c.withdrawn_at.is_(None))
    conditions = [items.c.split == split, items.c.id.not_in(labelled), items.c.image_path.is_not(None),
                  items.c.image_path != ""]
    if not include_quarantined:
        conditions.append(items.c.quarantined.is_(None))
    return conditions
