"""Chaos: Overseerr dies mid-flight; search keeps answering and recovers on its own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from medianest.aggregation import SourceState
from medianest.app import Hub
from medianest.config import load_settings
from medianest.simulators import FaultRule
from tests.support.stack import SimulatedStack, simulated_stack

OPEN_FOR = 0.4
FAST_BREAKER = {
    "timeout": {"attempt": 0.5, "total": 1.0},
    "retry": {"max_attempts": 1},
    "breaker": {"window_size": 4, "minimum_calls": 2, "open_duration": OPEN_FOR},
}


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[tuple[Hub, SimulatedStack]]:
    async with simulated_stack(size=80, seed=3) as stack:
        upstreams: dict[str, Any] = {name: stack.upstreams[name] for name in ("plex", "overseerr")}
        upstreams["overseerr"] = {**upstreams["overseerr"], "policy": FAST_BREAKER}
        settings = load_settings(
            overrides={"data_dir": str(tmp_path), "upstreams": upstreams, "search": {"deadline": 1}}
        )
        hub = Hub(settings)
        await hub.start()
        try:
            yield hub, stack
        finally:
            await hub.close()


async def a_library_title(hub: Hub) -> str:
    plex = hub.integrations.plex()
    libraries = await plex.libraries()
    movies = next(lib for lib in libraries if lib.type == "movie")
    page = await plex.items(movies.key, limit=20)
    return next(item.title for item in page.items if len(item.title) >= 8)


async def test_search_survives_overseerr_down_and_recovers(hub: tuple[Hub, SimulatedStack]) -> None:
    running, stack = hub
    title = await a_library_title(running)
    healthy = await running.aggregator.search(title)
    assert healthy.sources["overseerr"].status is SourceState.OK

    stack.apps["overseerr"].faults.set([FaultRule(kind="down", mode="reset")])
    states = []
    # Distinct queries (no stale answer to fall back on) that still match the title.
    queries = iter([title[1:], title[2:], title[:-1], title[:-2], title[1:-1], title.lower()])
    for query in (next(queries), next(queries), next(queries)):
        result = await running.aggregator.search(query)
        states.append(result.sources["overseerr"].status)
        assert result.sources["plex"].status is SourceState.OK
    assert states[-1] is SourceState.CIRCUIT_OPEN, states

    seen_by_overseerr = len(stack.apps["overseerr"].requests)
    tripped = await running.aggregator.search(next(queries))
    assert tripped.sources["overseerr"].status is SourceState.CIRCUIT_OPEN
    assert any(h.title == title for h in tripped.items)
    # The open breaker answers without a network call (bench/ measures how fast).
    assert len(stack.apps["overseerr"].requests) == seen_by_overseerr

    stale = await running.aggregator.search(title)
    assert stale.sources["overseerr"].status is SourceState.STALE

    stack.apps["overseerr"].faults.clear()
    overseerr = running.integrations.overseerr()
    async with asyncio.timeout(OPEN_FOR * 20):
        while True:
            result = await running.aggregator.search(title)
            recovered = result.sources["overseerr"].status is SourceState.OK
            if recovered and overseerr.breaker_state() == "closed":
                break
            await asyncio.sleep(OPEN_FOR / 4)
    assert any(h.title == title and "overseerr" in h.sources for h in result.items)
