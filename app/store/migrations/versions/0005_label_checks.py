"""The label checks (issue 20): each version's suspected label errors and consensus labels, and the second looks.

Revision ID: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "label_checks",
        sa.Column("model_version", sa.String(32), primary_key=True),
        sa.Column("item_id", sa.String(200), sa.ForeignKey("items.id"), primary_key=True),
        sa.Column("split", sa.String(16), nullable=False),
        sa.Column("label", sa.Text, nullable=False),
        sa.Column("suspect", sa.Boolean, nullable=False),
        sa.Column("suggested", sa.Text, nullable=True),
        sa.Column("score", sa.Float, nullable=True),
        sa.Column("consensus", sa.Text, nullable=True),
        sa.Column("agreement", sa.Float, nullable=True),
        sa.Column("newest_label_id", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "second_looks",
        sa.Column("item_id", sa.String(200), sa.ForeignKey("items.id"), primary_key=True),
        sa.Column("model_version", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("not_for", sa.JSON, nullable=False),
        sa.Column("ls_task_id", sa.Integer, nullable=True, index=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("status IN ('pending', 'sent', 'failed', 'labelled')", name="second_looks_status"),
    )


def downgrade() -> None:
    op.drop_table("second_looks")
    op.drop_table("label_checks")
