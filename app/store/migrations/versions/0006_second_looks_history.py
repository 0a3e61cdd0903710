"""Second looks keep their history: several per item (``look`` 1, 2, ...), each with its split (a suspected holdout
label is asked again too), why it was asked (a suspect, or answers that tie) and the label in doubt then.

The old table was keyed by item id (one second look per item, ever); its rows become each item's look 1, training
split, asked because suspected (the only kind there was), label unknown.

Revision ID: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

COPIED = "model_version, status, not_for, ls_task_id, attempts, next_attempt_at, last_error, created_at, updated_at"


def _indexes() -> None:
    op.create_index("ix_second_looks_status", "second_looks", ["status"])
    op.create_index("ix_second_looks_ls_task_id", "second_looks", ["ls_task_id"])


def upgrade() -> None:
    op.create_table(
        "second_looks_new",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("item_id", sa.String(200), sa.ForeignKey("items.id"), nullable=False),
        sa.Column("look", sa.Integer, nullable=False),
        sa.Column("split", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(16), nullable=False),
        sa.Column("label", sa.Text, nullable=True),
        sa.Column("model_version", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("not_for", sa.JSON, nullable=False),
        sa.Column("ls_task_id", sa.Integer, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("item_id", "look", name="second_looks_item_look"),
        sa.CheckConstraint("status IN ('pending', 'sent', 'failed', 'labelled')", name="second_looks_status"),
    )
    op.execute(
        f"INSERT INTO second_looks_new (item_id, look, split, reason, label, {COPIED}) "
        f"SELECT item_id, 1, 'training', 'suspect', NULL, {COPIED} FROM second_looks ORDER BY created_at, item_id"
    )
    op.drop_table("second_looks")  # its indexes go with it; the new table's get their names after the rename
    op.rename_table("second_looks_new", "second_looks")
    op.create_index("ix_second_looks_item_id", "second_looks", ["item_id"])
    _indexes()


def downgrade() -> None:
    op.create_table(
        "second_looks_old",
        sa.Column("item_id", sa.String(200), sa.ForeignKey("items.id"), primary_key=True),
        sa.Column("model_version", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("not_for", sa.JSON, nullable=False),
        sa.Column("ls_task_id", sa.Integer, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("status IN ('pending', 'sent', 'failed', 'labelled')", name="second_looks_status"),
    )
    # One row per item again: each item's first look (the later ones' history is lost).
    op.execute(f"INSERT INTO second_looks_old (item_id, {COPIED}) SELECT item_id, {COPIED} FROM second_looks WHERE look = 1")
    op.drop_table("second_looks")
    op.rename_table("second_looks_old", "second_looks")
    _indexes()
