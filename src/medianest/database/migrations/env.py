"""Alembic environment: always run on a connection handed over by :mod:`medianest.database`.

MediaNest never lets Alembic open its own engine: ``medianest.database.migrations`` passes the
live connection in ``config.attributes["connection"]`` so locking, URLs and drivers stay in one
place.
"""

from __future__ import annotations

from alembic import context

from medianest.database.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `medianest migrate`, not the alembic command")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
    # medianest.database.engine makes SQLite emit a real BEGIN, so its DDL is transactional.
    transactional_ddl=True,
)
with context.begin_transaction():
    context.run_migrations()
