"""A settable wall clock (aware UTC datetimes): tests move time instead of sleeping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

START = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


class Clock:
    """Returns ``now`` until told to move: ``advance(seconds=10)``, ``advance(days=1)``."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float = 0, **delta: float) -> None:
        self.now += timedelta(seconds=seconds, **delta)
