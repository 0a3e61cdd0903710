"""Alembic's environment for juicer: the connection is handed in by :func:`app.store.migrate.migrate`, never configured here.

``render_as_batch`` makes ``op.batch_alter_table`` recreate SQLite tables where SQLite's ALTER TABLE cannot do a
change; on PostgreSQL the same migrations run as plain ALTERs.
"""

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None, render_as_batch=True, transaction_per_migration=False)
with context.begin_transaction():
    context.run_migrations()
