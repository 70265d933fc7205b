"""Unified search merges by external ids and survives any one source failing."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from medianest import errors
from medianest.aggregation import (
    Availability,
    IntegrationAggregator,
    Source,
    SourceState,
    create_cache,
    merge,
)
from medianest.integrations.models import ExternalIds, MediaItem, MediaType


def movie(source: str, title: str, year: int, **kw: object) -> MediaItem:
    return MediaItem(source=source, type=MediaType.MOVIE, title=title, year=year, **kw)  # type: ignore[arg-type]


MATRIX_PLEX = movie("plex", "The Matrix", 1999, ids=ExternalIds(imdb="tt0133093"), rating_key="42")
MATRIX_OVS = movie(
    "overseerr",
    "The Matrix",
    1999,
    ids=ExternalIds(tmdb=603, imdb="tt0133093"),
    media_status="available",
)
DUNE_OVS = movie("overseerr", "Dune", 2021, ids=ExternalIds(tmdb=438631), media_status="processing")
ALIEN_OVS = movie("overseerr", "Alien", 1979, ids=ExternalIds(tmdb=348))


def fixed(items: Sequence[MediaItem]) -> Source:
    async def fetch(_query: str) -> Sequence[MediaItem]:
        return items

    return Source(items[0].source if items else "empty", "test", fetch)


def failing(name: str, exc: Exception) -> Source:
    async def fetch(_query: str) -> Sequence[MediaItem]:
        raise exc

    return Source(name, "test", fetch)


def test_merge_by_shared_id_and_availability() -> None:
    hits = merge([MATRIX_PLEX, MATRIX_OVS, DUNE_OVS, ALIEN_OVS])
    assert [h.title for h in hits] == ["The Matrix", "Dune", "Alien"]
    matrix, dune, alien = hits
    assert matrix.sources == ["overseerr", "plex"]
    assert matrix.ids == ExternalIds(tmdb=603, imdb="tt0133093")
    assert matrix.availability is Availability.AVAILABLE
    assert matrix.rating_key == "42"
    assert dune.availability is Availability.REQUESTED
    assert alien.availability is Availability.REQUESTABLE


def test_merge_joins_groups_bridged_by_a_later_item() -> None:
    a = movie("plex", "Heat", 1995, ids=ExternalIds(imdb="tt0113277"), rating_key="7")
    b = movie("x", "Heat", 1995, ids=ExternalIds(tmdb=949))
    bridge = movie("overseerr", "Heat", 1995, ids=ExternalIds(tmdb=949, imdb="tt0113277"))
    hits = merge([a, b, bridge])
    assert len(hits) == 1
    assert hits[0].ids == ExternalIds(tmdb=949, imdb="tt0113277")


def test_items_without_ids_merge_on_title_and_year() -> None:
    one = movie("plex", "Amélie", 2001, rating_key="9")
    two = movie("overseerr", "AMELIE", 2001, media_status="pending")
    other_year = movie("overseerr", "Amélie", 2002)
    hits = merge([one, two, other_year])
    assert len(hits) == 2
    assert hits[0].availability is Availability.AVAILABLE


def test_partially_available_and_blocked() -> None:
    partial = movie(
        "overseerr", "Show", 2020, ids=ExternalIds(tmdb=1), media_status="partially_available"
    )
    blocked = movie("overseerr", "Bad", 2020, ids=ExternalIds(tmdb=2), media_status="blacklisted")
    assert [h.availability for h in merge([partial, blocked])] == [
        Availability.PARTIAL,
        Availability.BLOCKED,
    ]


async def test_one_failing_source_never_fails_the_answer() -> None:
    agg = IntegrationAggregator(
        [fixed([MATRIX_PLEX]), failing("overseerr", errors.CircuitOpenError("overseerr"))]
    )
    result = await agg.search("  the   matrix ")
    assert result.query == "the matrix"
    assert result.partial
    assert result.sources["plex"].status is SourceState.OK
    assert result.sources["overseerr"].status is SourceState.CIRCUIT_OPEN
    assert [h.title for h in result.items] == ["The Matrix"]


@pytest.mark.parametrize(
    ("exc", "state"),
    [
        (errors.UpstreamUnavailable("down", service="overseerr"), SourceState.ERROR),
        (RuntimeError("bug"), SourceState.ERROR),
    ],
)
async def test_errors_are_reported_per_source(exc: Exception, state: SourceState) -> None:
    agg = IntegrationAggregator([failing("overseerr", exc)])
    result = await agg.search("x")
    assert result.sources["overseerr"].status is state
    assert result.items == []


async def test_slow_source_times_out_at_its_deadline() -> None:
    never = asyncio.Event()

    async def slow(_q: str) -> Sequence[MediaItem]:
        await never.wait()
        return []

    agg = IntegrationAggregator(
        [fixed([MATRIX_PLEX]), Source("overseerr", "t", slow)], deadline=0.05
    )
    result = await agg.search("matrix")
    assert result.sources["overseerr"].status is SourceState.TIMEOUT
    assert result.sources["plex"].count == 1


async def test_failed_source_serves_its_last_good_answer_as_stale() -> None:
    cache = create_cache("memory://")
    healthy = True

    async def flaky(_q: str) -> Sequence[MediaItem]:
        if not healthy:
            raise errors.UpstreamUnavailable("down", service="overseerr")
        return [DUNE_OVS]

    agg = IntegrationAggregator([Source("overseerr", "t", flaky)], cache=cache)
    assert (await agg.search("Dune")).sources["overseerr"].status is SourceState.OK
    healthy = False
    result = await agg.search("dune")
    report = result.sources["overseerr"]
    assert report.status is SourceState.STALE
    assert report.detail is not None
    assert report.detail.startswith("error:")
    assert report.stale_age_s is not None
    assert report.stale_age_s >= 0
    assert [h.title for h in result.items] == ["Dune"]
    other = await agg.search("alien")
    assert other.sources["overseerr"].status is SourceState.ERROR


async def test_empty_query_is_rejected() -> None:
    with pytest.raises(errors.ValidationError):
        await IntegrationAggregator([]).search("   ")


async def test_answer_does_not_wait_for_a_late_source_to_unwind() -> None:
    unwinding = asyncio.Event()
    release = asyncio.Event()

    async def stubborn(_q: str) -> Sequence[MediaItem]:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            unwinding.set()
            await release.wait()
            raise
        return []

    agg = IntegrationAggregator(
        [fixed([MATRIX_PLEX]), Source("slow", "t", stubborn)], deadline=0.01
    )
    result = await agg.search("matrix")
    assert result.sources["slow"].status is SourceState.TIMEOUT
    await unwinding.wait()
    assert agg._abandoned
    release.set()
    async with asyncio.timeout(5):
        while agg._abandoned:
            await asyncio.sleep(0)


async def test_cancelled_search_cancels_its_sources() -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def waits(_q: str) -> Sequence[MediaItem]:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()
        return []

    agg = IntegrationAggregator([Source("waits", "t", waits)], deadline=60)
    search = asyncio.create_task(agg.search("x"))
    await started.wait()
    search.cancel()
    with pytest.raises(asyncio.CancelledError):
        await search
    await asyncio.wait_for(cancelled.wait(), 5)


async def test_upstream_timeout_is_reported_as_timeout_with_its_reason() -> None:
    agg = IntegrationAggregator(
        [failing("overseerr", errors.UpstreamTimeout("overseerr took too long", service="o"))]
    )
    report = (await agg.search("x")).sources["overseerr"]
    assert report.status is SourceState.TIMEOUT
    assert report.detail == "overseerr took too long"
