"""The main database (SQLAlchemy async) and its migrations."""

from medianest.database.engine import Database
from medianest.database.migrations_runner import MigrationStatus, head, status, upgrade

__all__ = ["Database", "MigrationStatus", "head", "status", "upgrade"]
