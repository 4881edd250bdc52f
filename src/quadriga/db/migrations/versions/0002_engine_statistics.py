"""engines: the agent that runs each amphora, and listener statistics from the data plane

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("amphorae", schema=None) as batch_op:
        batch_op.add_column(sa.Column("applied_revision", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("status_reason", sa.Text(), nullable=True))
    op.create_table(
        "listener_statistics",
        sa.Column("listener_id", sa.String(length=36), nullable=False),
        sa.Column("amphora_id", sa.String(length=36), nullable=False),
        sa.Column("load_balancer_id", sa.String(length=36), nullable=False),
        sa.Column("bytes_in", sa.BigInteger(), nullable=False),
        sa.Column("bytes_out", sa.BigInteger(), nullable=False),
        sa.Column("active_connections", sa.BigInteger(), nullable=False),
        sa.Column("total_connections", sa.BigInteger(), nullable=False),
        sa.Column("request_errors", sa.BigInteger(), nullable=False),
        sa.Column("raw", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("listener_id", "amphora_id"),
    )
    with op.batch_alter_table("listener_statistics", schema=None) as batch_op:
        batch_op.create_index("ix_listener_statistics_load_balancer_id", ["load_balancer_id"], unique=False)


def downgrade() -> None:
    op.drop_table("listener_statistics")
    with op.batch_alter_table("amphorae", schema=None) as batch_op:
        batch_op.drop_column("status_reason")
        batch_op.drop_column("applied_revision")
