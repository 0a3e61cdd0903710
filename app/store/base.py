"""The store's foundation: its error, UTC time, the SQL helpers every section shares, and :class:`StoreBase`."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Self, Sequence, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from app.store.migrate import head_version, migrate, schema_version
from app.store.schema import cursors, items, meta

logger = logging.getLogger(__name__)

R = TypeVar("R")


class StoreError(Exception):
    """The store cannot be opened or a write broke a rule (unknown item, bad split)."""


def _enable_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def utcnow() -> datetime:
    """The current time, timezone-aware UTC (what every timestamp column holds)."""
    return datetime.now(timezone.utc)


def aware(value: Any) -> Any:
    """``value`` with UTC attached when it is a naive timestamp (SQLite hands them back naive; written as UTC)."""
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


def record(cls: type[R], row: sa.Row | None) -> R | None:
    """The record ``cls`` made from a result row (its keys are the record's fields), or None without a row."""
    return None if row is None else cls(**{key: aware(value) for key, value in row._mapping.items()})


def records(cls: type[R], rows: Iterable[sa.Row]) -> list[R]:
    """The records ``cls`` made from result rows."""
    return [cls(**{key: aware(value) for key, value in row._mapping.items()}) for row in rows]


class StoreBase:
    """The store's connection: opening (migrated to the newest schema), transactions, health, small named values.

    The sections of :class:`app.store.Store` are mixins over this class."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def open(cls, data_dir: str | Path) -> Self:
        """Open (creating if needed) ``<data_dir>/juicer.db`` in WAL mode with every table."""
        path = Path(data_dir) / "juicer.db"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the data folder {path.parent}: {exc.strerror}") from exc
        return cls.from_url(f"sqlite:///{path}")

    @classmethod
    def from_settings(cls, settings: Any) -> Self:
        """The store ``settings.store.url`` names, else ``<data_dir>/juicer.db``."""
        if settings.store.url:
            return cls.from_url(settings.store.url, pool_size=settings.store.pool_size)
        return cls.open(settings.data_dir)

    @classmethod
    def from_url(cls, url: str, pool_size: int = 5) -> Self:
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
        On PostgreSQL the caller locks the rows it reads with :func:`lock_items`.
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
            return schema_version(conn)

    @staticmethod
    def head_version() -> str:
        """The newest revision this code knows."""
        return head_version()

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
            upsert(conn, meta, {"key": key, "value": value}, ["key"], ["value"])

    def get_cursor(self, name: str) -> str | None:
        """The saved position of a reader (e.g. the Label Studio label pull)."""
        with self.engine.connect() as conn:
            return conn.execute(sa.select(cursors.c.value).where(cursors.c.name == name)).scalar_one_or_none()

    def set_cursor(self, name: str, value: str) -> None:
        """Save a reader's position."""
        with self.engine.begin() as conn:
            upsert(conn, cursors, {"name": name, "value": value}, ["name"], ["value"])



def require_items(conn: Connection, wanted: set[str], lock: bool = False) -> None:
    """Raise :class:`StoreError` naming the ids in ``wanted`` that are not items (``lock``: see :func:`lock_items`)."""
    known = lock_items(conn, wanted, lock=lock)
    missing = sorted(wanted - known)
    if missing:
        raise StoreError(f"unknown item id(s): {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")


def chunks(values: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    """``values`` in slices of at most ``size`` (a statement's parameters stay bounded)."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


def lock_items(conn: Connection, item_ids: Iterable[str], lock: bool = True) -> set[str]:
    """The ids among ``item_ids`` that exist; on PostgreSQL their rows are locked (FOR UPDATE, id order) until commit."""
    found: set[str] = set()
    for chunk in chunks(sorted(set(item_ids)), 500):
        query = sa.select(items.c.id).where(items.c.id.in_(list(chunk))).order_by(items.c.id)
        if lock and conn.dialect.name == "postgresql":
            query = query.with_for_update()
        found.update(conn.execute(query).scalars())
    return found


def dialect_insert(conn: Connection, table: sa.Table) -> Any:
    """An INSERT of ``table`` in ``conn``'s dialect (both have ON CONFLICT)."""
    return insert_of(conn.dialect.name, table)


def insert_of(dialect: str, table: sa.Table) -> Any:
    """An INSERT of ``table`` in ``dialect`` ("postgresql", else SQLite's); for a statement built once per dialect."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table)


def insert_ignore(conn: Connection, table: sa.Table, rows: list[dict[str, Any]], keys: list[str]) -> int:
    """Insert the rows whose ``keys`` are new, leave the others; returns how many were inserted."""
    if len(rows) == 1:  # the row as parameters: the statement's compiled form is cached (a VALUES list is compiled
        # on every call: most of a one-image /v1/predict's item insert)
        statement = dialect_insert(conn, table).on_conflict_do_nothing(index_elements=keys)
        return max(conn.execute(statement.execution_options(preserve_rowcount=True), rows[0]).rowcount, 0)
    inserted = 0
    for chunk in chunks(rows, 500):
        # One multi-row statement (not executemany), its rowcount kept (psycopg's is otherwise dropped for INSERT).
        statement = dialect_insert(conn, table).values(list(chunk)).on_conflict_do_nothing(index_elements=keys)
        result = conn.execute(statement.execution_options(preserve_rowcount=True))
        inserted += max(result.rowcount, 0)
    return inserted


def upsert(conn: Connection, table: sa.Table, row: dict[str, Any], keys: list[str], update: list[str]) -> None:
    """Insert ``row``, or update its ``update`` columns when its ``keys`` exist."""
    statement = dialect_insert(conn, table).values(**row)
    statement = statement.on_conflict_do_update(index_elements=keys, set_={name: statement.excluded[name] for name in update})
    conn.execute(statement)


