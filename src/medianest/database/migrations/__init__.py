"""Alembic migration scripts of the hub (run by ``medianest migrate`` and at start-up)."""
