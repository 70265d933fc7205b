"""Tables owned by the core hub (later parts add their own through migrations).

``instance_metadata`` holds facts about this installation that must survive restarts and be
shared by every process of one deployment, such as the ``instance_id`` that MediaNest sends to
Plex as its stable ``X-Plex-Client-Identifier``.
"""

from __future__ import annotations

from sqlalchemy import JSON, Column, DateTime, ForeignKey, MetaData, String, Table, Text, func

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

api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("owner", String(200), nullable=False, index=True),
    Column("scopes", JSON, nullable=False),
    Column("hmac", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=True),
    Column("last_used_at", DateTime(timezone=True), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("replaced_by", String(32), ForeignKey("api_keys.key_id"), nullable=True),
    Column("overlap_until", DateTime(timezone=True), nullable=True),
)
"""API keys (:mod:`medianest.security.apikeys`): only an HMAC of each key, never the key."""
