"""The media requests read model (``media_requests``), kept by its event-store projection.

Its checkpoint is an ``event_checkpoints`` row (0006) written in the same transaction as
the rows it moved.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "media_requests",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(200), nullable=False),
        sa.Column("media_type", sa.String(16), nullable=False),
        sa.Column("tmdb_id", sa.Integer(), nullable=False),
        sa.Column("seasons", sa.JSON(), nullable=False),
        sa.Column("title", sa.String(500), nullable=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("overseerr_id", sa.String(64), nullable=True),
        sa.Column("saga_id", sa.String(100), nullable=True),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_media_requests")),
        sa.UniqueConstraint("saga_id", name=op.f("uq_media_requests_saga_id")),
    )
    op.create_index(
        "ix_media_requests_user_id_created_at", "media_requests", ["user_id", "created_at"]
    )
    op.create_index("ix_media_requests_created_at", "media_requests", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_media_requests_created_at", table_name="media_requests")
    op.drop_index("ix_media_requests_user_id_created_at", table_name="media_requests")
    op.drop_table("media_requests")
