"""Leases: one holder at a time, take-over after expiry, race-safe on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from medianest.errors import ValidationError
from medianest.events import EventStore
from medianest.events.backends.memory import MemoryEventStore
from medianest.events.leases import Leases, MemoryLeases, SqlLeases, leases_for
from tests.support.event_stores import ROWS
from tests.support.wallclock import Clock


@pytest.fixture(params=sorted(ROWS))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EventStore]:
    async with ROWS[request.param].make(tmp_path, None) as subject:
        yield subject.store


async def test_one_holder_until_it_expires_or_releases(store: EventStore) -> None:
    clock = Clock()
    leases = leases_for(store, clock=clock)
    assert isinstance(leases, MemoryLeases if isinstance(store, MemoryEventStore) else SqlLeases)
    assert await leases.acquire("job", "a", 10)
    assert not await leases.acquire("job", "b", 10)
    assert await leases.acquire("job", "a", 10), "the holder may acquire again (extends)"
    clock.advance(5)
    assert await leases.renew("job", "a", 10)
    clock.advance(9)
    assert not await leases.acquire("job", "b", 10), "renewed: 15 s left"
    assert not await leases.renew("job", "b", 10)
    holder = await leases.holder("job")
    assert holder is not None
    assert (holder.owner, holder.expires_at) == ("a", clock.now + timedelta(seconds=1))
    clock.advance(1.5)
    assert await leases.acquire("job", "b", 10), "expired: b takes over"
    assert not await leases.renew("job", "a", 10), "a lost it"
    await leases.release("job", "a")
    assert not await leases.acquire("job", "a", 10), "releasing someone else's lease does nothing"
    await leases.release("job", "b")
    assert await leases.holder("job") is None
    assert await leases.acquire("job", "a", 10)


async def test_racing_acquirers_never_both_win(store: EventStore) -> None:
    clock = Clock()
    leases = leases_for(store, clock=clock)
    for round_ in range(3):
        name = f"race-{round_}"
        wins = await asyncio.gather(*(leases.acquire(name, f"o{n}", 5) for n in range(8)))
        assert sum(wins) == 1
        clock.advance(6)
        wins = await asyncio.gather(*(leases.acquire(name, f"p{n}", 5) for n in range(8)))
        assert sum(wins) == 1, "an expired lease is taken over by exactly one"


async def test_leases_of_one_memory_store_are_shared() -> None:
    store = MemoryEventStore()
    first: Leases = leases_for(store)
    assert leases_for(store) is first
    assert leases_for(MemoryEventStore()) is not first


async def test_bad_arguments_are_refused() -> None:
    leases = MemoryLeases()
    with pytest.raises(ValidationError):
        await leases.acquire("job", "a", 0)
    with pytest.raises(ValidationError):
        await leases.acquire("", "a", 1)
