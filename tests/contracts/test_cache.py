"""Conformance suite of the answer cache, on every backend (a new backend is a new row)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest

from medianest.aggregation import AnswerCache, create_cache
from medianest.errors import BackendUnavailable, ConfigurationError
from tests.support.services import require_service


@pytest.fixture(params=["memory", "redis"])
async def cache(request: pytest.FixtureRequest) -> AsyncIterator[AnswerCache]:
    url = "memory://" if request.param == "memory" else require_service("redis")
    options = {} if request.param == "memory" else {"prefix": f"mn-test:{uuid.uuid4().hex}:"}
    backend = create_cache(url, **options)
    await backend.start()
    try:
        yield backend
    finally:
        await backend.close()


async def test_round_trip_keeps_json_values_and_store_time(cache: AnswerCache) -> None:
    value = [{"title": "The Matrix", "year": 1999, "ids": {"tmdb": 603}}, {"n": None}]
    before = time.time()
    await cache.set("search:plex:matrix", value, ttl=60)
    found = await cache.get("search:plex:matrix")
    assert found is not None
    assert found.value == value
    assert before - 1 <= found.stored_at <= time.time() + 1
    await cache.ping()


async def test_missing_and_deleted_keys(cache: AnswerCache) -> None:
    assert await cache.get("nope") is None
    await cache.set("k", 1, ttl=60)
    await cache.delete("k")
    assert await cache.get("k") is None


async def test_overwrite_replaces(cache: AnswerCache) -> None:
    await cache.set("k", "old", ttl=60)
    await cache.set("k", "new", ttl=60)
    found = await cache.get("k")
    assert found is not None
    assert found.value == "new"


async def test_entries_expire(cache: AnswerCache) -> None:
    await cache.set("short", "x", ttl=0.05)
    async with asyncio.timeout(5):
        while await cache.get("short") is not None:
            await asyncio.sleep(0.02)


async def test_unknown_scheme() -> None:
    with pytest.raises(ConfigurationError, match="unknown cache backend"):
        create_cache("memcached://h")


async def test_memory_cache_is_bounded() -> None:
    backend = create_cache("memory://", max_entries=2)
    for key in ("a", "b", "c"):
        await backend.set(key, key, ttl=60)
    assert await backend.get("a") is None
    assert await backend.get("c") is not None


async def test_unreachable_redis_is_backend_unavailable() -> None:
    backend = create_cache("redis://:pw-secret@127.0.0.1:1/0")
    await backend.start()
    try:
        with pytest.raises(BackendUnavailable) as info:
            await backend.get("k")
        with pytest.raises(BackendUnavailable):
            await backend.ping()
    finally:
        await backend.close()
    assert "pw-secret" not in str(info.value) + info.value.backend
