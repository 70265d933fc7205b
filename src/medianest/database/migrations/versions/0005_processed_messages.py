"""Idempotent consumers: the messages each consumer group has already handled.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "processed_messages",
        sa.Column("group", sa.String(100), nullable=False),
        sa.Column("message_id", sa.String(64), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("group", "message_id", name=op.f("pk_processed_messages")),
    )
    op.create_index(op.f("ix_processed_messages_expires_at"), "processed_messages", ["expires_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_processed_messages_expires_at"), table_name="processed_messages")
    op.drop_table("processed_messages")
