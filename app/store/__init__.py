"""juicer's state: SQLAlchemy Core over SQLite (``<data_dir>/juicer.db``, WAL, the default) or PostgreSQL.

Tables (one row each): ``items`` (an image: content hash, source, split, file under ``<data_dir>/images/``),
``labels`` (who said which class, when; withdrawn rows are kept), ``predictions`` (model version,
probabilities, decision, rule), ``review_tasks`` (the outbox to Label Studio, one row per item),
``model_versions`` (created, labels used, holdout metrics), ``webhook_events`` (raw payloads awaiting a job),
``served_tasks`` (the Label Studio task each item asked about through the ML backend is, per project),
``cursors`` and ``meta`` (small named values), ``jobs`` (background work a client can poll).

Only portable SQL is used (``JSON`` columns, timezone-aware timestamps, ON CONFLICT upserts that both
SQLite and PostgreSQL dialects provide): ``store.url`` is the only thing to change.

Concurrency: every operation keeps its meaning when several processes (gunicorn workers, replicas on other
machines) write at once. Single statements are atomic on both databases (upserts with ON CONFLICT, conditional
updates such as "pending and still this model version", ``attempts + 1``). The read-then-write label rules
(the same answer twice is one label, a stale event is ignored, a changed answer withdraws the old row) run in
:meth:`Store._serialised` transactions: ``BEGIN IMMEDIATE`` on SQLite (the one writer lock, taken before the
reads), and on PostgreSQL ``SELECT ... FOR UPDATE`` on the items the labels belong to, in id order (so two
writers of different items do not wait for each other, and no two wait for each other in a cycle).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine

if TYPE_CHECKING:  # the events the store applies are annotation's own records
    from annotation.models import LabelEvent

logger = logging.getLogger(__name__)

SPLITS = ("seed", "pool", "holdout", "served")
REVIEW_STATUSES = ("pending", "sent", "failed", "labelled")

metadata = sa.MetaData()

items = sa.Table(
    "items",
    metadata,
    sa.Column("id", sa.String(200), primary_key=True),
    sa.Column("content_hash", sa.String(64), nullable=False, index=True),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("split", sa.String(16), nullable=False, index=True),
    sa.Column("image_path", sa.Text, nullable=True),  # relative to the data folder
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("quarantined", sa.Text, nullable=True),  # why its image cannot be used (missing, unreadable); migration 0002
    sa.CheckConstraint(f"split IN {SPLITS}", name="items_split"),
)

labels = sa.Table(
    "labels",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("item_id", sa.String(200), sa.ForeignKey("items.id"), nullable=False, index=True),
    sa.Column("label", sa.Text, nullable=False),
    sa.Column("source", sa.String(32), nullable=False),  # seed | api | label-studio | dataset
    sa.Column("annotator", sa.Text, nullable=True),
    sa.Column("external_id", sa.String(64), nullable=True),  # Label Studio annotation id
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("withdrawn_at", sa.DateTime(timezone=True), nullable=True),
    sa.Index("labels_external", "source", "external_id"),
)

predictions = sa.Table(
    "predictions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("item_id", sa.String(200), sa.ForeignKey("items.id"), nullable=False, index=True),
    sa.Column("model_version", sa.String(32), nullable=False),
    sa.Column("label", sa.Text, nullable=False),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("probabilities", sa.JSON, nullable=False),
    sa.Column("decision", sa.String(16), nullable=False),
    sa.Column("rule", sa.String(32), nullable=False),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

review_tasks = sa.Table(
    "review_tasks",
    metadata,
    sa.Column("item_id", sa.String(200), sa.ForeignKey("items.id"), primary_key=True),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("label", sa.Text, nullable=False),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("model_version", sa.String(32), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("ls_task_id", sa.Integer, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint(f"status IN {REVIEW_STATUSES}", name="review_tasks_status"),
)

model_versions = sa.Table(
    "model_versions",
    metadata,
    sa.Column("version", sa.String(32), primary_key=True),
    sa.Column("seq", sa.Integer, nullable=False, unique=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("backbone_id", sa.Text, nullable=False),
    sa.Column("classes", sa.JSON, nullable=False),
    sa.Column("n_labels", sa.Integer, nullable=False),
    sa.Column("labels_per_class", sa.JSON, nullable=False),
    sa.Column("max_label_id", sa.Integer, nullable=False),
    sa.Column("metrics", sa.JSON, nullable=True),  # holdout evaluation
    sa.Column("head_path", sa.Text, nullable=False),  # relative to the data folder
    sa.Column("train_seconds", sa.Float, nullable=True),
    # when the fit read its labels (a withdrawal after it is a change; created_at is later, after the fit)
    sa.Column("labels_read_at", sa.DateTime(timezone=True), nullable=True),
)

webhook_events = sa.Table(
    "webhook_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True, index=True),
    sa.Column("error", sa.Text, nullable=True),
)

served_tasks = sa.Table(
    "served_tasks",
    metadata,
    sa.Column("project", sa.String(64), primary_key=True),  # Label Studio project id
    sa.Column("task_id", sa.Integer, primary_key=True),
    sa.Column("item_id", sa.String(200), sa.ForeignKey("items.id"), nullable=False, index=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

cursors = sa.Table(
    "cursors",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

meta = sa.Table(
    "meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.JSON, nullable=False),
)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # queued | running | done | failed
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("result", sa.JSON, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
)


def utcnow() -> datetime:
    """The current time, timezone-aware UTC (what every timestamp column holds)."""
    return datetime.now(timezone.utc)


def _aware(value: Any) -> Any:
    # SQLite hands timestamps back naive; they were written as UTC.
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


def _row(row: sa.Row | None) -> dict[str, Any] | None:
    return None if row is None else {key: _aware(value) for key, value in row._mapping.items()}


@dataclass(frozen=True)
class NewItem:
    """An image to record; ``image_path`` is relative to the data folder."""

    id: str
    content_hash: str
    source: str
    split: str
    image_path: str | None = None


@dataclass(frozen=True)
class NewLabel:
    """A label to record for an existing item."""

    item_id: str
    label: str
    source: str
    annotator: str | None = None
    external_id: str | None = None
    created_at: datetime | None = None


@dataclass(frozen=True)
class NewPrediction:
    """One prediction; ``review`` queues the item for annotators in the same transaction."""

    item_id: str
    model_version: str
    label: str
    score: float
    probabilities: dict[str, float]
    decision: str
    rule: str
    reason: str | None = None

    @property
    def review(self) -> bool:
        """Whether the decision sends the item to annotators."""
        return self.decision == "review"


@dataclass
class LabelledItem:
    """An item with its current label (the newest label not withdrawn)."""

    item_id: str
    label: str
    content_hash: str
    source: str
    image_path: str | None
    label_id: int
    split: str = field(default="seed")


MIGRATIONS = Path(__file__).parent / "migrations"
BASELINE = "0001"  # the schema of main on 2026-12-01, before migrations existed


def _alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def migrate(engine: Engine) -> None:
    """Bring the store's schema to the newest revision (Alembic, SQLite in batch mode), once for many processes.

    A store made before migrations existed (tables, no ``alembic_version``) is stamped at the baseline first,
    so it is upgraded in place. Processes starting at once are serialised: a file lock beside an SQLite file,
    a transaction-scoped advisory lock on PostgreSQL; the second finds nothing left to do.
    """
    logging.getLogger("alembic").setLevel(max(logging.WARNING, logging.getLogger("alembic").getEffectiveLevel()))
    lock = None
    database = engine.url.database
    if engine.dialect.name == "sqlite" and database and database != ":memory:":
        import fcntl

        lock = open(f"{database}.migrate.lock", "a")
        fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(7263110)"))  # juicer's migration lock
            inspector = sa.inspect(conn)
            config = _alembic_config(conn)
            if not inspector.has_table("alembic_version") and inspector.has_table("items"):
                logger.info("store without a schema version: stamping it at the baseline %s before upgrading", BASELINE)
                command.stamp(config, BASELINE)
            before = MigrationContext.configure(conn).get_current_revision()
            command.upgrade(config, "head")
            after = MigrationContext.configure(conn).get_current_revision()
            if before != after:
                logger.info("store schema migrated from %s to %s", before or "nothing", after)
    finally:
        if lock is not None:
            lock.close()


class StoreError(Exception):
    """The store cannot be opened or a write broke a rule (unknown item, bad split)."""


def _enable_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


class Store:
    """All reads and writes of juicer's state; safe for threads and processes (short transactions, see above)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def open(cls, data_dir: str | Path) -> "Store":
        """Open (creating if needed) ``<data_dir>/juicer.db`` in WAL mode with every table."""
        path = Path(data_dir) / "juicer.db"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the data folder {path.parent}: {exc.strerror}") from exc
        return cls.from_url(f"sqlite:///{path}")

    @classmethod
    def from_settings(cls, settings: Any) -> "Store":
        """The store ``settings.store.url`` names, else ``<data_dir>/juicer.db``."""
        if settings.store.url:
            return cls.from_url(settings.store.url, pool_size=settings.store.pool_size)
        return cls.open(settings.data_dir)

    @classmethod
    def from_url(cls, url: str, pool_size: int = 5) -> "Store":
        """Open a store at a SQLAlchemy URL (``sqlite:///...`` or ``postgresql+psycopg://...``), migrated to the newest schema."""
        if url.startswith("sqlite"):
            engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 10})
            sa.event.listen(engine, "connect", _enable_sqlite_pragmas)
        else:
            # pre_ping: a connection the server closed (restart, failover) is replaced, not handed to a request.
            engine = sa.create_engine(url, pool_pre_ping=True, pool_size=pool_size, max_overflow=pool_size)
        shown = engine.url.render_as_string(hide_password=True)
        try:
            migrate(engine)
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"cannot open the store at {shown}: {exc}") from exc
        return cls(engine)

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    @contextmanager
    def _serialised(self) -> Iterator[Connection]:
        """A write transaction for read-then-write rules: on SQLite it holds the write lock from its first read.

        A plain SQLite transaction reads a snapshot and fails ("database is locked") when it later tries to write
        after another process wrote; ``BEGIN IMMEDIATE`` waits (busy_timeout) for the lock up front instead.
        On PostgreSQL the caller locks the rows it reads with :func:`_lock_items`.
        """
        with self.engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.rollback()
                raise
            conn.commit()

    def schema_version(self) -> str | None:
        """The Alembic revision the store is at."""
        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    @staticmethod
    def head_version() -> str:
        """The newest revision this code knows."""
        return str(ScriptDirectory.from_config(_alembic_config()).get_current_head())

    def close(self) -> None:
        """Release every connection."""
        self.engine.dispose()

    def ping(self) -> bool:
        """Whether the store answers a trivial query."""
        try:
            with self.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            return True
        except sa.exc.SQLAlchemyError:
            logger.exception("store ping failed")
            return False

    # -- small named values -------------------------------------------------------------------------
    def get_meta(self, key: str, default: Any = None) -> Any:
        """A value stored under ``key`` (JSON), or ``default``."""
        with self.engine.connect() as conn:
            value = conn.execute(sa.select(meta.c.value).where(meta.c.key == key)).scalar_one_or_none()
        return default if value is None else value

    def set_meta(self, key: str, value: Any) -> None:
        """Store ``value`` (JSON-serialisable) under ``key``."""
        with self.engine.begin() as conn:
            _upsert(conn, meta, {"key": key, "value": value}, ["key"], ["value"])

    def get_cursor(self, name: str) -> str | None:
        """The saved position of a reader (e.g. the Label Studio label pull)."""
        with self.engine.connect() as conn:
            return conn.execute(sa.select(cursors.c.value).where(cursors.c.name == name)).scalar_one_or_none()

    def set_cursor(self, name: str, value: str) -> None:
        """Save a reader's position."""
        with self.engine.begin() as conn:
            _upsert(conn, cursors, {"name": name, "value": value}, ["name"], ["value"])

    # -- items --------------------------------------------------------------------------------------
    def add_items(self, new_items: Iterable[NewItem], conn: Connection | None = None) -> int:
        """Insert items whose id is new (others are left as they are); returns how many were inserted."""
        rows = []
        now = utcnow()
        for item in new_items:
            if item.split not in SPLITS:
                raise StoreError(f"item {item.id}: split must be one of {', '.join(SPLITS)}, not {item.split!r}")
            rows.append({**item.__dict__, "created_at": now})
        if not rows:
            return 0
        if conn is None:
            with self.engine.begin() as conn:
                return _insert_ignore(conn, items, rows, ["id"])
        return _insert_ignore(conn, items, rows, ["id"])

    def get_item(self, item_id: str) -> dict[str, Any] | None:
        """One item with its current label, latest prediction and review status, or None."""
        with self.engine.connect() as conn:
            item = _row(conn.execute(sa.select(items).where(items.c.id == item_id)).first())
            if item is None:
                return None
            label = _row(
                conn.execute(
                    sa.select(labels.c.label, labels.c.source, labels.c.annotator, labels.c.created_at)
                    .where(labels.c.item_id == item_id, labels.c.withdrawn_at.is_(None))
                    .order_by(labels.c.id.desc())
                    .limit(1)
                ).first()
            )
            prediction = _row(
                conn.execute(
                    sa.select(predictions).where(predictions.c.item_id == item_id).order_by(predictions.c.id.desc()).limit(1)
                ).first()
            )
            review = _row(conn.execute(sa.select(review_tasks).where(review_tasks.c.item_id == item_id)).first())
        item["label"] = label
        item["prediction"] = prediction
        item["review"] = review
        return item

    def quarantine(self, item_id: str, reason: str) -> None:
        """Set an item aside: its image is missing or unreadable; it stays listed, out of training and queues."""
        with self.engine.begin() as conn:
            conn.execute(items.update().where(items.c.id == item_id).values(quarantined=reason[:2000]))
        logger.warning("item %s quarantined: %s", item_id, reason)

    def release(self, item_id: str) -> None:
        """Take an item out of quarantine (its image is back)."""
        with self.engine.begin() as conn:
            conn.execute(items.update().where(items.c.id == item_id).values(quarantined=None))

    def quarantined(self, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        """Quarantined items with the reason, in id order."""
        query = sa.select(items).where(items.c.quarantined.is_not(None)).order_by(items.c.id).limit(limit).offset(offset)
        with self.engine.connect() as conn:
            return [_row(row) for row in conn.execute(query)]

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

    def list_items(self, split: str | None = None, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        """Items (newest first), optionally of one split."""
        query = sa.select(items).order_by(items.c.created_at.desc(), items.c.id).limit(limit).offset(offset)
        if split is not None:
            query = query.where(items.c.split == split)
        with self.engine.connect() as conn:
            return [_row(row) for row in conn.execute(query)]

    def count_items(self) -> dict[str, int]:
        """Number of items per split."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(items.c.split, sa.func.count()).group_by(items.c.split))
            return {split: count for split, count in rows}

    def items_of_split(self, split: str) -> list[dict[str, Any]]:
        """Every item of one split, in id order."""
        with self.engine.connect() as conn:
            return [_row(row) for row in conn.execute(sa.select(items).where(items.c.split == split).order_by(items.c.id))]

    # -- labels -------------------------------------------------------------------------------------
    def add_labels(self, new_labels: Sequence[NewLabel]) -> list[int]:
        """Record labels for existing items; raises :class:`StoreError` naming an unknown item.

        A label equal to the item's newest active one from the same annotator is not recorded again: its id
        is returned, so posting the same answer ten times counts as one new label.
        """
        now = utcnow()
        ids: list[int] = []
        with self._serialised() as conn:
            wanted = {label.item_id for label in new_labels}
            _require_items(conn, wanted, lock=True)
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
            _mark_reviews_labelled(conn, wanted)
        return ids

    def apply_label_events(self, changes: Sequence[LabelEvent]) -> int:
        """Apply Label Studio annotation events idempotently; returns how many labels changed.

        The label's ``external_id`` is the event's ``annotation_id`` as text.

        A ``set`` for an annotation already recorded with the same label changes nothing; with another label
        the old row is withdrawn and a new one added (so "new labels since" counts it); ``withdrawn`` marks
        the annotation's rows withdrawn. Events for items juicer does not know, and for holdout items (which
        take no new labels), are skipped with a warning; an event older than what the store already holds for
        its annotation (a replayed webhook) is ignored.
        """
        changed = 0
        now = utcnow()
        with self._serialised() as conn:
            named = {change.item_id for change in changes if change.item_id is not None}
            unnamed = [str(change.annotation_id) for change in changes if change.item_id is None]
            for chunk in _chunks(unnamed, 500):
                named.update(
                    conn.execute(
                        sa.select(labels.c.item_id).where(labels.c.source == "label-studio", labels.c.external_id.in_(list(chunk)))
                    ).scalars()
                )
            _lock_items(conn, named)  # the items these events touch, so two appliers take turns per item
            for change in changes:
                if change.item_id is None and change.action != "withdrawn":
                    continue
                if change.item_id is not None:
                    split = conn.execute(sa.select(items.c.split).where(items.c.id == change.item_id)).scalar_one_or_none()
                    if split is None:
                        logger.warning("label event for unknown item %r (annotation %s) skipped", change.item_id, change.annotation_id)
                        continue
                    if split == "holdout":
                        logger.warning("label event for holdout item %r (annotation %s) refused", change.item_id, change.annotation_id)
                        continue
                rows = conn.execute(
                    sa.select(labels.c.id, labels.c.label, labels.c.created_at, labels.c.withdrawn_at).where(
                        labels.c.source == "label-studio", labels.c.external_id == str(change.annotation_id)
                    )
                ).all()
                if change.at is not None and rows:
                    newest = max(_aware(t) for row in rows for t in (row.created_at, row.withdrawn_at) if t is not None)
                    if _aware(change.at) < newest:
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
                _mark_reviews_labelled(conn, {change.item_id})
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
            for chunk in _chunks(sorted(set(item_ids)), 500):
                found.update(conn.execute(sa.select(items.c.id, items.c.split).where(items.c.id.in_(list(chunk)))).all())
        return found

    def conflicts(self, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
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
            found = {row["id"]: {**row, "labels": []} for row in (_row(r) for r in conn.execute(sa.select(items).where(items.c.id.in_(ids))))}
            query = (
                sa.select(labels.c.item_id, labels.c.label, labels.c.source, labels.c.annotator, labels.c.created_at)
                .where(labels.c.item_id.in_(ids), labels.c.withdrawn_at.is_(None))
                .order_by(labels.c.id)
            )
            for row in conn.execute(query):
                entry = _row(row)
                found[entry.pop("item_id")]["labels"].append(entry)
        return [found[item_id] for item_id in ids]

    def unlabelled_pool(self) -> list[dict[str, Any]]:
        """Pool items with no active label, with their review status (None when never queued)."""
        labelled = sa.select(labels.c.item_id).where(labels.c.withdrawn_at.is_(None))
        query = (
            sa.select(items.c.id, items.c.content_hash, items.c.source, items.c.image_path, review_tasks.c.status)
            .select_from(items.outerjoin(review_tasks, review_tasks.c.item_id == items.c.id))
            .where(items.c.split == "pool", items.c.id.not_in(labelled), items.c.quarantined.is_(None))
            .order_by(items.c.id)
        )
        with self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    # -- predictions and the review outbox ----------------------------------------------------------
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
                self.add_items(new_items, conn=conn)
            _require_items(conn, {prediction.item_id for prediction in new_predictions})
            rows = [
                {**prediction.__dict__, "created_at": now}
                for prediction in new_predictions
                if not review_only or prediction.review
            ]
            if rows:
                conn.execute(predictions.insert(), rows)
            queued = [prediction for prediction in new_predictions if prediction.review]
            if queued:
                _queue_reviews(conn, queued, now)

    def queue_reviews(self, queued: Sequence[NewPrediction]) -> None:
        """Queue items for annotators (or refresh the prediction on their queued task)."""
        with self.engine.begin() as conn:
            _queue_reviews(conn, queued, utcnow())

    def due_reviews(self, limit: int, now: datetime | None = None) -> list[dict[str, Any]]:
        """Pending review tasks whose next attempt is due, oldest first, with their image path."""
        now = now or utcnow()
        query = (
            sa.select(review_tasks, items.c.image_path, items.c.source)
            .select_from(review_tasks.join(items, items.c.id == review_tasks.c.item_id))
            .where(review_tasks.c.status == "pending", review_tasks.c.next_attempt_at <= now)
            .order_by(review_tasks.c.next_attempt_at, review_tasks.c.item_id)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [_row(row) for row in conn.execute(query)]

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
            for chunk in _chunks(doomed, 500):
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

    # -- model versions -----------------------------------------------------------------------------
    def next_model_seq(self) -> int:
        """The sequence number the next model version will get."""
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(model_versions.c.seq), 0))).scalar_one()) + 1

    def record_model(self, row: dict[str, Any]) -> dict[str, Any]:
        """Record a trained model version (``created_at`` filled in when missing); returns the row."""
        row = {"created_at": utcnow(), **row}
        with self.engine.begin() as conn:
            conn.execute(model_versions.insert().values(**row))
        return row

    def list_models(self) -> list[dict[str, Any]]:
        """Every model version, oldest first."""
        with self.engine.connect() as conn:
            return [_row(row) for row in conn.execute(sa.select(model_versions).order_by(model_versions.c.seq))]

    def latest_model(self) -> dict[str, Any] | None:
        """The newest recorded model version, or None."""
        with self.engine.connect() as conn:
            return _row(conn.execute(sa.select(model_versions).order_by(model_versions.c.seq.desc()).limit(1)).first())

    def get_model(self, version: str) -> dict[str, Any] | None:
        """One model version, or None."""
        with self.engine.connect() as conn:
            return _row(conn.execute(sa.select(model_versions).where(model_versions.c.version == version)).first())

    # -- webhook events -----------------------------------------------------------------------------
    def record_event(self, payload: Any) -> int:
        """Keep a webhook payload for the processing job; returns its id. One short insert."""
        with self.engine.begin() as conn:
            result = conn.execute(webhook_events.insert().values(received_at=utcnow(), payload=payload))
            return int(result.inserted_primary_key[0])

    def pending_events(self, limit: int = 500) -> list[dict[str, Any]]:
        """Webhook events not processed yet, oldest first."""
        query = sa.select(webhook_events).where(webhook_events.c.processed_at.is_(None)).order_by(webhook_events.c.id).limit(limit)
        with self.engine.connect() as conn:
            return [_row(row) for row in conn.execute(query)]

    def failed_events(self, limit: int = 500) -> list[dict[str, Any]]:
        """Webhook events that could not be used, newest first, with their error."""
        query = (
            sa.select(webhook_events).where(webhook_events.c.error.is_not(None)).order_by(webhook_events.c.id.desc()).limit(limit)
        )
        with self.engine.connect() as conn:
            return [_row(row) for row in conn.execute(query)]

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
            for chunk in _chunks(list(task_items.items()), 500):
                statement = _dialect_insert(conn, served_tasks).values(
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
            for chunk in _chunks([int(t) for t in task_ids], 500):
                query = sa.select(served_tasks.c.task_id, served_tasks.c.item_id).where(
                    served_tasks.c.project == str(project), served_tasks.c.task_id.in_(list(chunk))
                )
                found.update({int(task_id): item_id for task_id, item_id in conn.execute(query)})
        return found

    # -- jobs ---------------------------------------------------------------------------------------
    def create_job(self, kind: str) -> int:
        """A queued background job a client can poll; returns its id."""
        with self.engine.begin() as conn:
            result = conn.execute(jobs.insert().values(kind=kind, status="queued", created_at=utcnow()))
            return int(result.inserted_primary_key[0])

    def update_job(self, job_id: int, status: str, result: Any = None, error: str | None = None) -> None:
        """Move a job to ``running``, ``done`` or ``failed``."""
        values: dict[str, Any] = {"status": status}
        if status == "running":
            values["started_at"] = utcnow()
        else:
            values.update(finished_at=utcnow(), result=result, error=error)
        with self.engine.begin() as conn:
            conn.execute(jobs.update().where(jobs.c.id == job_id).values(**values))

    def fail_unfinished_jobs(self, error: str, before: datetime | None = None) -> int:
        """Mark jobs a dead process left ``running``, and ``queued`` ones created ``before`` (default: now), as
        failed (their work is gone); returns how many."""
        before = before or utcnow()
        unfinished = sa.or_(jobs.c.status == "running", sa.and_(jobs.c.status == "queued", jobs.c.created_at < before))
        with self.engine.begin() as conn:
            result = conn.execute(jobs.update().where(unfinished).values(status="failed", finished_at=utcnow(), error=error))
        return int(result.rowcount)

    def queued_jobs(self, kinds: Sequence[str]) -> list[dict[str, Any]]:
        """Jobs of ``kinds`` waiting to run, oldest first."""
        query = sa.select(jobs).where(jobs.c.status == "queued", jobs.c.kind.in_(list(kinds))).order_by(jobs.c.id)
        with self.engine.connect() as conn:
            return [_row(row) for row in conn.execute(query)]

    def claim_job(self, job_id: int) -> bool:
        """Move a queued job to ``running``; False when another runner claimed it first (or it is not queued)."""
        with self.engine.begin() as conn:
            result = conn.execute(
                jobs.update().where(jobs.c.id == job_id, jobs.c.status == "queued").values(status="running", started_at=utcnow())
            )
        return result.rowcount == 1

    def get_job(self, job_id: int) -> dict[str, Any] | None:
        """One job, or None."""
        with self.engine.connect() as conn:
            return _row(conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).first())


def _require_items(conn: Connection, wanted: set[str], lock: bool = False) -> None:
    """Raise :class:`StoreError` naming the ids in ``wanted`` that are not items (``lock``: see :func:`_lock_items`)."""
    known = _lock_items(conn, wanted, lock=lock)
    missing = sorted(wanted - known)
    if missing:
        raise StoreError(f"unknown item id(s): {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")


def _chunks(values: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _lock_items(conn: Connection, item_ids: Iterable[str], lock: bool = True) -> set[str]:
    """The ids among ``item_ids`` that exist; on PostgreSQL their rows are locked (FOR UPDATE, id order) until commit."""
    found: set[str] = set()
    for chunk in _chunks(sorted(set(item_ids)), 500):
        query = sa.select(items.c.id).where(items.c.id.in_(list(chunk))).order_by(items.c.id)
        if lock and conn.dialect.name == "postgresql":
            query = query.with_for_update()
        found.update(conn.execute(query).scalars())
    return found


def _dialect_insert(conn: Connection, table: sa.Table) -> Any:
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table)


def _insert_ignore(conn: Connection, table: sa.Table, rows: list[dict[str, Any]], keys: list[str]) -> int:
    inserted = 0
    for chunk in _chunks(rows, 500):
        # One multi-row statement (not executemany), its rowcount kept (psycopg's is otherwise dropped for INSERT).
        statement = _dialect_insert(conn, table).values(list(chunk)).on_conflict_do_nothing(index_elements=keys)
        result = conn.execute(statement.execution_options(preserve_rowcount=True))
        inserted += max(result.rowcount, 0)
    return inserted


def _upsert(conn: Connection, table: sa.Table, row: dict[str, Any], keys: list[str], update: list[str]) -> None:
    statement = _dialect_insert(conn, table).values(**row)
    statement = statement.on_conflict_do_update(index_elements=keys, set_={name: statement.excluded[name] for name in update})
    conn.execute(statement)


def _queue_reviews(conn: Connection, queued: Sequence[NewPrediction], now: datetime) -> None:
    """Upsert outbox rows: new -> pending; already queued and not labelled -> pending with the new prediction."""
    # One row per item (the last prediction wins): PostgreSQL refuses an upsert that touches a row twice.
    latest = list({prediction.item_id: prediction for prediction in queued}.values())
    for chunk in _chunks(latest, 500):
        statement = _dialect_insert(conn, review_tasks).values(
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
            ]
        )
        excluded = statement.excluded
        statement = statement.on_conflict_do_update(
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
        conn.execute(statement)


def _mark_reviews_labelled(conn: Connection, item_ids: Iterable[str]) -> None:
    ids = list(item_ids)
    for chunk in _chunks(ids, 500):
        conn.execute(
            review_tasks.update().where(review_tasks.c.item_id.in_(list(chunk))).values(status="labelled", updated_at=utcnow())
        )
