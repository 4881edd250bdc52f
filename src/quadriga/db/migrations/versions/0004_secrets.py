"""secrets: the tenants' secret store (secrets with encrypted payloads, containers of secrets)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "secrets",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("secret_type", sa.String(length=80), nullable=False),
        sa.Column("payload_content_type", sa.String(length=255), nullable=True),
        sa.Column("encrypted_payload", sa.LargeBinary(), nullable=True),
        sa.Column("algorithm", sa.String(length=255), nullable=True),
        sa.Column("bit_length", sa.Integer(), nullable=True),
        sa.Column("mode", sa.String(length=255), nullable=True),
        sa.Column("expiration", sa.DateTime(), nullable=True),
        sa.Column("creator_id", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("secrets", schema=None) as batch_op:
        batch_op.create_index("ix_secrets_project_id", ["project_id"], unique=False)
    op.create_table(
        "secret_containers",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("creator_id", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("secret_containers", schema=None) as batch_op:
        batch_op.create_index("ix_secret_containers_project_id", ["project_id"], unique=False)
    op.create_table(
        "container_secrets",
        sa.Column("container_id", sa.String(length=36), nullable=False),
        sa.Column("secret_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.ForeignKeyConstraint(["container_id"], ["secret_containers.id"]),
        sa.ForeignKeyConstraint(["secret_id"], ["secrets.id"]),
        sa.PrimaryKeyConstraint("container_id", "secret_id"),
    )
    with op.batch_alter_table("container_secrets", schema=None) as batch_op:
        batch_op.create_index("ix_container_secrets_secret_id", ["secret_id"], unique=False)


def downgrade() -> None:
    op.drop_table("container_secrets")
    op.drop_table("secret_containers")
    op.drop_table("secrets")
