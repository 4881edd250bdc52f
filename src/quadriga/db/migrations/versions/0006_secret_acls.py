"""secret_acls: read ACLs of secrets and containers (Barbican's), how a tenant lets quadriga's service user
read a secret under Keystone

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "secret_acls",
        sa.Column("target_id", sa.String(length=36), nullable=False),
        sa.Column("users", sa.JSON(), nullable=False),
        sa.Column("project_access", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("target_id"),
    )


def downgrade() -> None:
    op.drop_table("secret_acls")
