"""Alembic migrations of juicer's store (run at start by :func:`app.store.migrate`; SQLite in batch mode)."""
