"""The Alembic runner: bring a store's schema to the newest revision in ``migrations/``, once for many processes."""

from __future__ import annotations

import logging
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine

logger = logging.getLogger(__name__)

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


def head_version() -> str:
    """The newest revision this code knows."""
    return str(ScriptDirectory.from_config(_alembic_config()).get_current_head())


def schema_version(conn: Connection) -> str | None:
    """The revision the database behind ``conn`` is at (None before any migration)."""
    return MigrationContext.configure(conn).get_current_revision()
