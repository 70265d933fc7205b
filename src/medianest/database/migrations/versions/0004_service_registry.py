"""Service registry: live instances and the change log their watchers poll.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "service_instances",
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("definition", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("renewed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ttl", sa.Float(), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_service_instances")),
        sa.CheckConstraint(
            "state IN ('unknown', 'healthy', 'unhealthy')", name=op.f("ck_service_instances_state")
        ),
    )
    op.create_index(op.f("ix_service_instances_name"), "service_instances", ["name"])
    op.create_index(op.f("ix_service_instances_expires_at"), "service_instances", ["expires_at"])
    op.create_table(
        "service_changes",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("instance_id", sa.String(128), nullable=False),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("registration", sa.JSON(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_service_changes")),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_service_changes_at"), "service_changes", ["at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_service_changes_at"), table_name="service_changes")
    op.drop_table("service_changes")
    op.drop_index(op.f("ix_service_instances_expires_at"), table_name="service_instances")
    op.drop_index(op.f("ix_service_instances_name"), table_name="service_instances")
    op.drop_table("service_instances")
