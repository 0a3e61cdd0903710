"""juicer's state: SQLAlchemy Core over SQLite (``<data_dir>/juicer.db``, WAL, the default) or PostgreSQL.

The package: :mod:`~app.store.schema` (the tables), :mod:`~app.store.migrate` (Alembic, ``migrations/``),
:mod:`~app.store.records` (the frozen records every method takes and returns), and one module per section of
:class:`Store` (:mod:`~app.store.items`, :mod:`~app.store.labels`, :mod:`~app.store.outbox`,
:mod:`~app.store.models`, :mod:`~app.store.holdout`, :mod:`~app.store.events`, :mod:`~app.store.retrain_jobs`, :mod:`~app.store.classes`, :mod:`~app.store.checks`), each a mixin over
:class:`~app.store.base.StoreBase` (the connection), composed here into the one :class:`Store` callers hold.
Import the tables from :mod:`app.store.schema` (three section modules have their tables' names).

Only portable SQL is used (``JSON`` columns, timezone-aware timestamps, ON CONFLICT upserts that both
SQLite and PostgreSQL dialects provide): ``store.url`` is the only thing to change.

Concurrency: every operation keeps its meaning when several processes (gunicorn workers, replicas on other
machines) write at once. Single statements are atomic on both databases (upserts with ON CONFLICT, conditional
updates such as "pending and still this model version", ``attempts + 1``). The read-then-write label rules
(the same answer twice is one label, a stale event is ignored, a changed answer withdraws the old row) run in
:meth:`~app.store.base.StoreBase._serialised` transactions: ``BEGIN IMMEDIATE`` on SQLite (the one writer lock,
taken before the reads), and on PostgreSQL ``SELECT ... FOR UPDATE`` on the items the labels belong to, in id order (so two
writers of different items do not wait for each other, and no two wait for each other in a cycle).
"""

from app.store.base import StoreBase, StoreError, utcnow
from app.store.checks import ChecksMixin
from app.store.classes import ClassesMixin, ClassInUseError
from app.store.events import EventsMixin
from app.store.holdout import HOLDOUT_VERSION, HoldoutMixin
from app.store.items import ItemsMixin
from app.store.retrain_jobs import RetrainJobsMixin
from app.store.labels import LabelsMixin
from app.store.models import ModelsMixin
from app.store.outbox import OutboxMixin
from app.store.records import (
    Answer,
    DueSecondLook,
    LabelCheck,
    Conflict,
    DueReview,
    HoldoutCounts,
    Item,
    ItemDetail,
    Label,
    LabelledItem,
    ModelVersion,
    NewItem,
    NewLabel,
    NewModelVersion,
    NewPrediction,
    PoolColumns,
    PoolItem,
    Prediction,
    RetrainJob,
    ReviewTask,
    SecondLook,
    WebhookEvent,
)
from app.store.schema import REVIEW_STATUSES, SPLITS

__all__ = [
    "HOLDOUT_VERSION", "REVIEW_STATUSES", "SPLITS", "Answer", "DueSecondLook", "LabelCheck", "ClassInUseError", "Conflict", "DueReview", "HoldoutCounts", "Item", "ItemDetail", "Label", "LabelledItem",
    "ModelVersion", "NewItem", "NewLabel", "NewModelVersion", "NewPrediction", "PoolColumns", "PoolItem", "Prediction", "RetrainJob",
    "ReviewTask", "SecondLook", "Store", "StoreError", "WebhookEvent", "utcnow",
]  # fmt: skip


class Store(ItemsMixin, LabelsMixin, HoldoutMixin, OutboxMixin, ModelsMixin, EventsMixin, RetrainJobsMixin, ClassesMixin, ChecksMixin, StoreBase):
    """All reads and writes of juicer's state; safe for threads and processes (short transactions, see above)."""
