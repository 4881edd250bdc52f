"""amphora agent: the agent an engine runs on gets a column of its own; compute_id becomes the engine's id on that
agent (a UUID, as Octavia's compute_id, the amphora's Nova server)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("amphorae", schema=None) as batch_op:
        batch_op.add_column(sa.Column("agent", sa.String(length=255), nullable=True))
    op.execute("UPDATE amphorae SET agent = compute_id, compute_id = id")


def downgrade() -> None:
    op.execute("UPDATE amphorae SET compute_id = agent")
    with op.batch_alter_table("amphorae", schema=None) as batch_op:
        batch_op.drop_column("agent")
