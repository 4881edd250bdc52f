"""heartbeats: each engine's last applied heartbeat; statistics are sums of heartbeat deltas

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("amphorae", schema=None) as batch_op:
        batch_op.add_column(sa.Column("heartbeat_boot", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("heartbeat_seq", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("heartbeat_at", sa.DateTime(), nullable=True))
    with op.batch_alter_table("listener_statistics", schema=None) as batch_op:
        batch_op.drop_column("raw")


def downgrade() -> None:
    with op.batch_alter_table("listener_statistics", schema=None) as batch_op:
        batch_op.add_column(sa.Column("raw", sa.JSON(), nullable=False, server_default="{}"))
    with op.batch_alter_table("amphorae", schema=None) as batch_op:
        batch_op.drop_column("heartbeat_at")
        batch_op.drop_column("heartbeat_seq")
        batch_op.drop_column("heartbeat_boot")
