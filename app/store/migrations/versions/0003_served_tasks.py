"""Label Studio tasks the ML backend was asked about, each linked to the juicer item it became (issue 11).

Revision ID: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "served_tasks",
        sa.Column("project", sa.String(64), primary_key=True),
        sa.Column("task_id", sa.Integer, primary_key=True),
        sa.Column("item_id", sa.String(200), sa.ForeignKey("items.id"), nullable=False, index=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("served_tasks")
