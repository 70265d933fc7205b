"""Tables owned by the core hub (later parts add their own through migrations).

``instance_metadata`` holds facts about this installation that must survive restarts and be
shared by every process of one deployment, such as the ``instance_id`` that MediaNest sends to
Plex as its stable ``X-Plex-Client-Identifier``.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    func,
)

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

users = Table(
    "users",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("username", String(200), nullable=False),
    Column("username_key", String(200), nullable=False, unique=True),
    Column("display_name", String(200), nullable=False),
    Column("email", String(320), nullable=True),
    Column("role", String(16), nullable=False),
    Column("plex_id", String(32), nullable=True, unique=True),
    Column("plex_token_enc", Text, nullable=True),
    Column("oidc_issuer", String(500), nullable=True),
    Column("oidc_subject", String(255), nullable=True),
    Column("password_hash", Text, nullable=True),
    Column("must_change_password", Boolean, nullable=False, server_default=false()),
    Column("disabled_at", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("last_login_at", DateTime(timezone=True), nullable=True),
    UniqueConstraint("oidc_issuer", "oidc_subject"),
    CheckConstraint("role IN ('admin', 'user', 'guest')", name="role"),
)
"""People (:mod:`medianest.security.users`). ``username_key`` is the case-folded username,
unique; the Plex token is vault ciphertext, the password an argon2id hash."""

sessions = Table(
    "sessions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column(
        "user_id",
        String(36),
        ForeignKey("users.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("kind", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_seen_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("user_agent", String(500), nullable=True),
    Column("ip", String(64), nullable=True),
    CheckConstraint("kind IN ('cookie', 'bearer')", name="kind"),
)
"""Sign-in sessions (:mod:`medianest.security.sessions`): the SHA-256 of each session token,
never the token."""

signing_keys = Table(
    "signing_keys",
    metadata,
    Column("kid", String(64), primary_key=True),
    Column("algorithm", String(16), nullable=False),
    Column("private_key_enc", Text, nullable=False),
    Column("public_jwk", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("not_after_sign", DateTime(timezone=True), nullable=False),
    Column("not_after_verify", DateTime(timezone=True), nullable=False),
)
"""Keys signing the hub's access tokens (:mod:`medianest.security.tokens`); the private key
is vault ciphertext."""

service_instances = Table(
    "service_instances",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("name", String(63), nullable=False, index=True),
    Column("definition", JSON, nullable=False),
    Column("state", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("registered_at", DateTime(timezone=True), nullable=False),
    Column("renewed_at", DateTime(timezone=True), nullable=False),
    Column("ttl", Float, nullable=True),
    Column("expires_at", DateTime(timezone=True), nullable=True, index=True),
    Column("revision", Integer, nullable=False),
    CheckConstraint("state IN ('unknown', 'healthy', 'unhealthy')", name="state"),
)
"""The service registry (:mod:`medianest.discovery.backends.sql`): one row per live instance,
its definition as JSON; rows past ``expires_at`` are dead and purged by the next writer."""

service_changes = Table(
    "service_changes",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("instance_id", String(128), nullable=False),
    Column("name", String(63), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("registration", JSON, nullable=True),
    Column("at", DateTime(timezone=True), nullable=False, index=True),
    sqlite_autoincrement=True,
)
"""The registry's change log, written in the transaction of each change; watchers in every
process poll it by ``seq`` (never reused, in commit order)."""

processed_messages = Table(
    "processed_messages",
    metadata,
    Column("group", String(100), primary_key=True),
    Column("message_id", String(64), primary_key=True),
    Column("processed_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
)
"""Messages a consumer group has handled (:mod:`medianest.messaging.idempotency`): one row
per (group, message id), written with the handler's own effects when it can be, kept until
``expires_at`` so that redeliveries within that time take effect once."""

events = Table(
    "events",
    metadata,
    Column(
        "position",
        BigInteger().with_variant(Integer, "sqlite"),
        primary_key=True,
        autoincrement=False,
    ),
    Column("id", String(36), nullable=False, unique=True),
    Column("stream_id", String(200), nullable=False),
    Column("version", Integer, nullable=False),
    Column("type", String(200), nullable=False, index=True),
    Column("schema_version", Integer, nullable=False),
    Column("data", JSON, nullable=False),
    Column("metadata", JSON, nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("stream_id", "version"),
)
"""The event store's log (:mod:`medianest.events.backends.sql`): ``position`` is assigned by
the appender from ``event_position`` (never a sequence), so positions are gap-free and in
commit order; ``(stream_id, version)`` is each stream's own numbering."""

event_streams = Table(
    "event_streams",
    metadata,
    Column("stream_id", String(200), primary_key=True),
    Column("version", Integer, nullable=False),
)
"""One row per stream with its current version: the row appenders to one stream lock."""

event_position = Table(
    "event_position",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("last", BigInteger, nullable=False),
    CheckConstraint("id = 1", name="single_row"),
)
"""The last position handed out (one row): appenders add to it in their transaction, which
serialises position assignment in commit order."""

event_snapshots = Table(
    "event_snapshots",
    metadata,
    Column("stream_id", String(200), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("schema_version", Integer, nullable=False),
    Column("state", JSON, nullable=False),
    Column("taken_at", DateTime(timezone=True), nullable=False),
)
"""The newest snapshot of each stream's aggregate state."""

event_checkpoints = Table(
    "event_checkpoints",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("position", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
"""Where each named subscriber stopped, for subscribers without a table of their own."""

leases = Table(
    "leases",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("owner", String(200), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)
"""Named leases (:mod:`medianest.events.leases`): which instance runs a job that must run
once at a time (the outbox relay, driving one saga) and until when; a row past
``expires_at`` may be taken over by anyone."""

media_requests = Table(
    "media_requests",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("user_id", String(200), nullable=False),
    Column("media_type", String(16), nullable=False),
    Column("tmdb_id", Integer, nullable=False),
    Column("seasons", JSON, nullable=False),
    Column("title", String(500), nullable=True),
    Column("status", String(32), nullable=False),
    Column("reason", Text, nullable=True),
    Column("overseerr_id", String(64), nullable=True),
    Column("saga_id", String(100), nullable=True, unique=True),
    Column("position", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_media_requests_user_id_created_at", "user_id", "created_at"),
    Index("ix_media_requests_created_at", "created_at"),
)
"""The read model of media requests (:mod:`medianest.media_requests.projection`), one row
per request, kept from the ``request-media`` sagas and the ``request-<id>`` streams.
``position`` is the event-log position of the last event applied to the row: a row only
moves forward, so two projections running at once never undo each other."""
