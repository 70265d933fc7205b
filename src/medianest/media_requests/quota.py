"""Per-person request quotas, kept as events so that reserving and releasing are idempotent.

Each person has the stream ``quota-<user id>``:

================ ===============================================================
QuotaReserved    ``key`` (the saga step's idempotency key), ``request_id``
QuotaReleased    ``key`` (the reservation given back by a compensation)
================ ===============================================================

A reservation counts against the quota for :data:`WINDOW` from when it was recorded, unless
released. :meth:`QuotaLedger.reserve` folds the stream, and either finds the key reserved
already (a retry after a crash: nothing is appended, the same answer is given), or appends
the reservation at the stream version it read. Two sagas of one person racing for the last
place therefore cannot both win: the second append fails with
:class:`~medianest.errors.WrongExpectedVersion`, and that saga reads again and sees the
quota used up. :meth:`QuotaLedger.release` is idempotent the same way.

The stream is read whole: a person makes a handful of requests a week, so it stays a few
hundred events long for years.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from medianest.errors import ConcurrencyError, RateLimitExceeded, WrongExpectedVersion
from medianest.events.base import EventStore
from medianest.events.model import NO_STREAM, EventMetadata, NewEvent, RecordedEvent

QUOTA_RESERVED = "QuotaReserved"
QUOTA_RELEASED = "QuotaReleased"
WINDOW = timedelta(days=7)
_ATTEMPTS = 5


class QuotaExceeded(RateLimitExceeded):
    """The person has made ``limit`` requests in the last 7 days already."""


def stream_of(user_id: str) -> str:
    return f"quota-{user_id}"


@dataclass
class QuotaState:
    """A person's reservations folded from their stream; ``version`` is the stream's."""

    version: int = 0
    reserved: dict[str, datetime] = field(default_factory=dict)
    released: set[str] = field(default_factory=set)

    @classmethod
    def fold(cls, events: Sequence[RecordedEvent]) -> QuotaState:
        state = cls(version=events[-1].version if events else 0)
        for event in events:
            key = str(event.data.get("key", ""))
            if event.type == QUOTA_RESERVED:
                state.reserved.setdefault(key, event.recorded_at)
            elif event.type == QUOTA_RELEASED:
                state.released.add(key)
        return state

    def active(self, now: datetime) -> list[datetime]:
        """When each reservation still counting at ``now`` was made, oldest first."""
        since = now - WINDOW
        return sorted(
            at for key, at in self.reserved.items() if key not in self.released and at > since
        )


class QuotaLedger:
    """Reserves and releases places in people's quotas (module docstring)."""

    def __init__(self, store: EventStore) -> None:
        self.store = store

    async def state(self, user_id: str) -> QuotaState:
        return QuotaState.fold(await self.store.read_stream(stream_of(user_id)))

    async def reserve(
        self,
        user_id: str,
        key: str,
        *,
        request_id: str,
        limit: int | None,
        metadata: EventMetadata | None = None,
    ) -> dict[str, object]:
        """Take a place for ``key`` (``limit`` None: no limit, the place is still recorded).

        Returns ``{"used", "limit"}`` as of the reservation; :class:`QuotaExceeded` when no
        place is left. Reserving a key reserved before answers the same and appends nothing.
        """
        for _ in range(_ATTEMPTS):
            state = await self.state(user_id)
            now = datetime.now(UTC)
            active = state.active(now)
            if key in state.reserved:
                return {"used": len(active), "limit": limit}
            if limit is not None and len(active) >= limit:
                retry_after = (active[0] + WINDOW - now).total_seconds()
                raise QuotaExceeded(
                    f"request quota used up: {len(active)} of {limit} requests in the last 7 days",
                    limit=limit,
                    retry_after=max(1.0, round(retry_after)),
                )
            event = NewEvent(
                QUOTA_RESERVED,
                {"key": key, "request_id": request_id},
                metadata=metadata or EventMetadata(),
            )
            try:
                await self.store.append(stream_of(user_id), [event], state.version or NO_STREAM)
            except WrongExpectedVersion:
                continue
            return {"used": len(active) + 1, "limit": limit}
        raise ConcurrencyError(f"quota of {user_id!r}: too many concurrent reservations")

    async def release(
        self, user_id: str, key: str, *, metadata: EventMetadata | None = None
    ) -> bool:
        """Give back the place of ``key``; False when it was not reserved or given back
        already (nothing is appended then)."""
        for _ in range(_ATTEMPTS):
            state = await self.state(user_id)
            if key not in state.reserved or key in state.released:
                return False
            event = NewEvent(QUOTA_RELEASED, {"key": key}, metadata=metadata or EventMetadata())
            try:
                await self.store.append(stream_of(user_id), [event], state.version)
            except WrongExpectedVersion:
                continue
            return True
        raise ConcurrencyError(f"quota of {user_id!r}: too many concurrent changes")
