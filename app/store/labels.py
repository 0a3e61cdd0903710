"""Labels: record them (from the API, seeds, Label Studio's events), read each item's current one, find conflicts."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Iterable, Sequence

import sqlalchemy as sa

from app.store.base import StoreBase, aware, chunks, lock_items, records, require_items, utcnow
from app.store.holdout import HOLDOUT_VERSION
from app.store.outbox import mark_reviews_labelled
from app.store.records import Conflict, Item, Label, LabelledItem, NewLabel, PoolItem
from app.store.schema import items, labels, review_tasks, second_looks

if TYPE_CHECKING:  # the events the store applies are annotation's own records
    from annotation.models import LabelEvent

logger = logging.getLogger(__name__)


class LabelsMixin(StoreBase):
    """Labels: record them (API, seeds, Label Studio's events), read each item's current one, find conflicts."""

    def add_labels(self, new_labels: Sequence[NewLabel]) -> list[int]:
        """Record labels for existing items; raises :class:`StoreError` naming an unknown item.

        A label equal to the item's newest active one from the same annotator is not recorded again: its id
        is returned, so posting the same answer ten times counts as one new label.
        """
        now = utcnow()
        ids: list[int] = []
        with self._serialised() as conn:
            wanted = {label.item_id for label in new_labels}
            require_items(conn, wanted, lock=True)
            for label in new_labels:
                same = conn.execute(
                    sa.select(labels.c.id, labels.c.label, labels.c.annotator)
                    .where(labels.c.item_id == label.item_id, labels.c.withdrawn_at.is_(None))
                    .order_by(labels.c.id.desc())
                    .limit(1)
                ).first()
                if same is not None and same.label == label.label and same.annotator == label.annotator:
                    ids.append(int(same.id))  # the same answer again is the same label, counted once
                    continue
                result = conn.execute(
                    labels.insert().values(
                        item_id=label.item_id,
                        label=label.label,
                        source=label.source,
                        annotator=label.annotator,
                        external_id=label.external_id,
                        created_at=label.created_at or now,
                    )
                )
                ids.append(int(result.inserted_primary_key[0]))
            mark_reviews_labelled(conn, wanted)
        return ids

    def apply_label_events(self, changes: Sequence[LabelEvent]) -> int:
        """Apply Label Studio annotation events idempotently; returns how many labels changed.

        The label's ``external_id`` is the event's ``annotation_id`` as text.

        A ``set`` for an annotation already recorded with the same label changes nothing; with another label
        the old row is withdrawn and a new one added (so "new labels since" counts it); ``withdrawn`` marks
        the annotation's rows withdrawn. Events for items juicer does not know, and for holdout items juicer
        did not deliver as blind holdout tasks (a given holdout takes no new labels), are skipped with a warning; an event older than what the store already holds for
        its annotation (a replayed webhook) is ignored.
        """
        changed = 0
        now = utcnow()
        with self._serialised() as conn:
            named = {change.item_id for change in changes if change.item_id is not None}
            unnamed = [str(change.annotation_id) for change in changes if change.item_id is None]
            for chunk in chunks(unnamed, 500):
                named.update(
                    conn.execute(
                        sa.select(labels.c.item_id).where(labels.c.source == "label-studio", labels.c.external_id.in_(list(chunk)))
                    ).scalars()
                )
            lock_items(conn, named)  # the items these events touch, so two appliers take turns per item
            for change in changes:
                if change.item_id is None and change.action != "withdrawn":
                    continue
                if change.item_id is not None:
                    split = conn.execute(sa.select(items.c.split).where(items.c.id == change.item_id)).scalar_one_or_none()
                    if split is None:
                        logger.warning("label event for unknown item %r (annotation %s) skipped", change.item_id, change.annotation_id)
                        continue
                    if split == "holdout" and not delivered_blind(conn, change.item_id, change.task_id):
                        logger.warning("label event for holdout item %r (annotation %s) refused", change.item_id, change.annotation_id)
                        continue
                rows = conn.execute(
                    sa.select(labels.c.id, labels.c.label, labels.c.created_at, labels.c.withdrawn_at).where(
                        labels.c.source == "label-studio", labels.c.external_id == str(change.annotation_id)
                    )
                ).all()
                if change.at is not None and rows:
                    newest = max(aware(t) for row in rows for t in (row.created_at, row.withdrawn_at) if t is not None)
                    if aware(change.at) < newest:
                        logger.info("stale event for annotation %s (%s, newest %s) ignored", change.annotation_id, change.at, newest)
                        continue
                active = [row for row in rows if row.withdrawn_at is None]
                if change.action == "withdrawn":
                    if active:
                        conn.execute(
                            labels.update().where(labels.c.id.in_([row.id for row in active])).values(withdrawn_at=now)
                        )
                        changed += 1
                    continue
                if change.label is None:
                    continue
                if len(active) == 1 and active[0].label == change.label:
                    continue
                if active:
                    conn.execute(labels.update().where(labels.c.id.in_([row.id for row in active])).values(withdrawn_at=now))
                conn.execute(
                    labels.insert().values(
                        item_id=change.item_id,
                        label=change.label,
                        source="label-studio",
                        annotator=change.annotator,
                        external_id=str(change.annotation_id),
                        created_at=change.at or now,
                    )
                )
                mark_reviews_labelled(conn, {change.item_id})
                if change.task_id is not None:
                    conn.execute(
                        second_looks.update().where(second_looks.c.ls_task_id == int(change.task_id)).values(status="labelled", updated_at=now)
                    )
                changed += 1
        return changed

    def current_labels(self, holdout: bool = False) -> list[LabelledItem]:
        """Every item's newest active label: training items (not holdout) or, with ``holdout``, the holdout."""
        newest = (
            sa.select(labels.c.item_id, sa.func.max(labels.c.id).label("label_id"))
            .where(labels.c.withdrawn_at.is_(None))
            .group_by(labels.c.item_id)
            .subquery()
        )
        query = (
            sa.select(
                items.c.id, labels.c.label, items.c.content_hash, items.c.source, items.c.image_path, labels.c.id, items.c.split
            )
            .select_from(newest.join(labels, labels.c.id == newest.c.label_id).join(items, items.c.id == newest.c.item_id))
            .order_by(labels.c.id)
        )
        query = query.where(items.c.split == "holdout") if holdout else query.where(items.c.split != "holdout")
        query = query.where(items.c.quarantined.is_(None))
        with self.engine.connect() as conn:
            return [LabelledItem(*row) for row in conn.execute(query)]

    def label_counts_by_source(self) -> dict[str, int]:
        """Active labels per source (seed, api, label-studio, dataset)."""
        query = sa.select(labels.c.source, sa.func.count()).where(labels.c.withdrawn_at.is_(None)).group_by(labels.c.source)
        with self.engine.connect() as conn:
            return {source: count for source, count in conn.execute(query)}

    def max_label_id(self) -> int:
        """The id of the newest label row (0 when there is none)."""
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(labels.c.id), 0))).scalar_one())

    def count_new_labels(self, since_label_id: int, since: datetime | None = None) -> int:
        """Label changes for training items after ``since_label_id``: active labels recorded since, plus (with
        ``since``, when that model was made) labels it used that were withdrawn afterwards without a
        replacement (a replaced label is counted once, by its replacement)."""
        training = items.c.split != "holdout"
        added = (
            sa.select(sa.func.count())
            .select_from(labels.join(items, items.c.id == labels.c.item_id))
            .where(labels.c.id > since_label_id, labels.c.withdrawn_at.is_(None), training)
        )
        with self.engine.connect() as conn:
            count = int(conn.execute(added).scalar_one())
            if since is not None:
                replaced = sa.select(labels.c.item_id).where(labels.c.id > since_label_id, labels.c.withdrawn_at.is_(None))
                withdrawn = (
                    sa.select(sa.func.count())
                    .select_from(labels.join(items, items.c.id == labels.c.item_id))
                    .where(
                        labels.c.id <= since_label_id, labels.c.withdrawn_at > since, training,
                        labels.c.item_id.not_in(replaced),
                    )
                )  # fmt: skip
                count += int(conn.execute(withdrawn).scalar_one())
        return count

    def item_splits(self, item_ids: Iterable[str]) -> dict[str, str]:
        """item id -> split, for the ids that exist."""
        found: dict[str, str] = {}
        with self.engine.connect() as conn:
            for chunk in chunks(sorted(set(item_ids)), 500):
                found.update(conn.execute(sa.select(items.c.id, items.c.split).where(items.c.id.in_(list(chunk)))).all())
        return found

    def conflicts(self, limit: int = 100, offset: int = 0) -> list[Conflict]:
        """Items whose active labels disagree (two annotators, two answers), each with every active label.

        The merge rule: all answers are kept; the newest active one is the item's label for training until a
        person withdraws (or changes) the others.
        """
        disagreeing = (
            sa.select(labels.c.item_id)
            .where(labels.c.withdrawn_at.is_(None))
            .group_by(labels.c.item_id)
            .having(sa.func.count(sa.distinct(labels.c.label)) > 1)
            .order_by(labels.c.item_id)
            .limit(limit)
            .offset(offset)
        )
        with self.engine.connect() as conn:
            ids = list(conn.execute(disagreeing).scalars())
            if not ids:
                return []
            found = {item.id: item for item in records(Item, conn.execute(sa.select(items).where(items.c.id.in_(ids))))}
            active: dict[str, list[Label]] = {item_id: [] for item_id in ids}
            query = (
                sa.select(labels.c.item_id, labels.c.label, labels.c.source, labels.c.annotator, labels.c.created_at)
                .where(labels.c.item_id.in_(ids), labels.c.withdrawn_at.is_(None))
                .order_by(labels.c.id)
            )
            for row in conn.execute(query):
                active[row.item_id].append(Label(row.label, row.source, row.annotator, aware(row.created_at)))
        return [Conflict(**vars(found[item_id]), labels=tuple(active[item_id])) for item_id in ids]

    def unlabelled_pool(self) -> list[PoolItem]:
        """Pool items with no active label, with their review status (None when never queued)."""
        labelled = sa.select(labels.c.item_id).where(labels.c.withdrawn_at.is_(None))
        query = (
            sa.select(items.c.id, items.c.content_hash, items.c.source, items.c.image_path, review_tasks.c.status)
            .select_from(items.outerjoin(review_tasks, review_tasks.c.item_id == items.c.id))
            .where(items.c.split == "pool", items.c.id.not_in(labelled), items.c.quarantined.is_(None))
            .order_by(items.c.id)
        )
        with self.engine.connect() as conn:
            return records(PoolItem, conn.execute(query))



def delivered_blind(conn: sa.Connection, item_id: str, task_id: int | None = None) -> bool:
    """Whether juicer delivered ``item_id`` to Label Studio as a holdout task (so its annotators' label counts); with
    ``task_id``, as that very task (another task showing the same image, e.g. one a member of a connected project
    imported, showed juicer's guess: its answer is not blind)."""
    query = sa.select(review_tasks.c.item_id).where(
        review_tasks.c.item_id == item_id, review_tasks.c.model_version == HOLDOUT_VERSION, review_tasks.c.ls_task_id.is_not(None)
    )
    if task_id is not None:
        query = query.where(review_tasks.c.ls_task_id == int(task_id))
        # A suspected holdout label's second look is a blind task juicer made for it too (app.core.checks).
        look = sa.select(second_looks.c.item_id).where(second_looks.c.item_id == item_id, second_looks.c.ls_task_id == int(task_id))
        if conn.execute(look).first() is not None:
            return True
    return conn.execute(query).first() is not None
