"""The schema of main on 2026-12-01 (commit 2136fb1), before migrations existed.

A store made by that code has these tables and no ``alembic_version``: :func:`app.store.migrate.migrate` stamps it at
this revision, then upgrades it. A new store is created by running this migration.

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "items",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("content_hash", sa.String(64), nullable=False, index=True),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("split", sa.String(16), nullable=False, index=True),
        sa.Column("image_path", sa.Text, nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.CheckConstraint("split IN ('seed', 'pool', 'holdout', 'served')", name="items_split"),
    )
    op.create_table(
        "labels",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("item_id", sa.String(200), sa.ForeignKey("items.id"), nullable=False, index=True),
        sa.Column("label", sa.Text, nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("annotator", sa.Text, nullable=True),
        sa.Column("external_id", sa.String(64), nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("withdrawn_at", TZ, nullable=True),
        sa.Index("labels_external", "source", "external_id"),
    )
    op.create_table(
        "predictions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("item_id", sa.String(200), sa.ForeignKey("items.id"), nullable=False, index=True),
        sa.Column("model_version", sa.String(32), nullable=False),
        sa.Column("label", sa.Text, nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("probabilities", sa.JSON, nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("rule", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("created_at", TZ, nullable=False),
    )
    op.create_table(
        "review_tasks",
        sa.Column("item_id", sa.String(200), sa.ForeignKey("items.id"), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("label", sa.Text, nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("model_version", sa.String(32), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", TZ, nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("ls_task_id", sa.Integer, nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.CheckConstraint("status IN ('pending', 'sent', 'failed', 'labelled')", name="review_tasks_status"),
    )
    op.create_table(
        "model_versions",
        sa.Column("version", sa.String(32), primary_key=True),
        sa.Column("seq", sa.Integer, nullable=False, unique=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("backbone_id", sa.Text, nullable=False),
        sa.Column("classes", sa.JSON, nullable=False),
        sa.Column("n_labels", sa.Integer, nullable=False),
        sa.Column("labels_per_class", sa.JSON, nullable=False),
        sa.Column("max_label_id", sa.Integer, nullable=False),
        sa.Column("metrics", sa.JSON, nullable=True),
        sa.Column("head_path", sa.Text, nullable=False),
        sa.Column("train_seconds", sa.Float, nullable=True),
    )
    op.create_table(
        "webhook_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("received_at", TZ, nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("processed_at", TZ, nullable=True, index=True),
        sa.Column("error", sa.Text, nullable=True),
    )
    op.create_table("cursors", sa.Column("name", sa.String(64), primary_key=True), sa.Column("value", sa.Text, nullable=False))
    op.create_table("meta", sa.Column("key", sa.String(64), primary_key=True), sa.Column("value", sa.JSON, nullable=False))
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("started_at", TZ, nullable=True),
        sa.Column("finished_at", TZ, nullable=True),
        sa.Column("result", sa.JSON, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
    )


def downgrade() -> None:
    for table in ("jobs", "meta", "cursors", "webhook_events", "model_versions", "review_tasks", "predictions", "labels", "items"):
        op.drop_table(table)
