"""Tables owned by the core hub (later parts add their own through migrations).

``instance_metadata`` holds facts about this installation that must survive restarts and be
shared by every process of one deployment, such as the ``instance_id`` that MediaNest sends to
Plex as its stable ``X-Plex-Client-Identifier``.
"""

from __future__ import annotations

from sqlalchemy import Column, DateTime, MetaData, String, Table, Text, func

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

instance_metadata = Table(
    "instance_metadata",
    metadata,
    Column("key", String(100), primary_key=True),
    Column("value", Text, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
