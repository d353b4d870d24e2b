"""Updates, jobs and ticks.

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "updates",
        sa.Column("update_id", sa.BigInteger, primary_key=True),
        sa.Column("chat_id", sa.BigInteger),
        sa.Column("text", sa.Text),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True)),
        sa.Column("reply", sa.Text),
    )
    op.create_table(
        "jobs",
        sa.Column("token", sa.String(64), primary_key=True),
        sa.Column("seconds", sa.Integer, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("worker", sa.String(64)),
    )
    op.create_table(
        "ticks",
        sa.Column("tick", sa.String(32), primary_key=True),
        sa.Column("runs", sa.Integer, nullable=False, server_default="1"),
        sa.Column("ran_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("ticks")
    op.drop_table("jobs")
    op.drop_table("updates")
