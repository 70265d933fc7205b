"""The gateway response cache: freshness, stale-if-error, what is stored, LRU bounds."""

from __future__ import annotations

import pytest

from medianest.config.gateway import Cache
from medianest.gateway.cache import CachedResponse, ResponseCache
from medianest.resilience.clock import FakeClock

CACHE = Cache(ttl=30, stale_if_error=60)
JSON = [("content-type", "application/json"), ("content-length", "2")]


def make() -> tuple[ResponseCache, FakeClock]:
    clock = FakeClock(1000.0)
    return ResponseCache(clock=clock), clock


def key(path: str = "/plex/library", **kw: str) -> str:
    parts = {"route_name": "plex", "method": "GET", "host": "hub.local", "query": "", **kw}
    return ResponseCache.key(path=path, **parts)


def test_keys_separate_what_differs() -> None:
    base = key()
    assert key() == base
    assert key(host="HUB.local") == base
    assert base.startswith("plex:")
    others = {
        key(path="/plex/other"),
        key(query="a=1"),
        key(method="HEAD"),
        key(host="other.local"),
        key(vary="Bearer abc|"),
        key(route_name="kuma"),
    }
    assert base not in others
    assert len(others) == 6


def test_fresh_then_stale_then_expired() -> None:
    cache, clock = make()
    assert cache.put(key(), 200, JSON, b"{}", CACHE)
    entry = cache.get(key())
    assert entry is not None
    assert (entry.status, entry.body, entry.stored_at) == (200, b"{}", 1000.0)
    clock.advance(29.9)
    assert entry.fresh(clock.monotonic())
    clock.advance(0.1)
    assert not entry.fresh(clock.monotonic())
    assert entry.usable_stale(clock.monotonic())
    assert cache.get(key()) is entry
    clock.advance(59.9)
    assert cache.get(key()) is entry
    clock.advance(0.1)
    assert not entry.usable_stale(clock.monotonic())
    assert cache.get(key()) is None
    assert len(cache) == 0


def test_without_stale_if_error_an_entry_ends_with_its_ttl() -> None:
    cache, clock = make()
    cache.put(key(), 200, JSON, b"{}", Cache(ttl=5))
    clock.advance(5)
    assert cache.get(key()) is None


def test_upstream_age_counts_against_freshness() -> None:
    cache, clock = make()
    cache.put(key(), 200, [*JSON, ("age", "20")], b"{}", CACHE)
    entry = cache.get(key())
    assert entry is not None
    assert entry.age(clock.monotonic()) == 20
    clock.advance(10)
    assert not entry.fresh(clock.monotonic())


def test_response_headers_hit_and_stale() -> None:
    cache, clock = make()
    cache.put(key(), 200, [*JSON, ("age", "3"), ("x-medianest-cache", "MISS")], b"{}", CACHE)
    entry = cache.get(key())
    assert entry is not None
    clock.advance(12.7)
    assert cache.response_headers(entry, clock.monotonic(), stale=False) == [
        *JSON,
        ("age", "15"),
        ("x-medianest-cache", "HIT"),
    ]
    clock.advance(30)
    assert cache.response_headers(entry, clock.monotonic(), stale=True) == [
        *JSON,
        ("age", "45"),
        ("warning", '110 - "Response is Stale"'),
        ("x-medianest-cache", "STALE"),
    ]


@pytest.mark.parametrize("status", [200, 203, 204, 301, 404])
def test_cacheable_statuses(status: int) -> None:
    cache, _ = make()
    assert cache.put(key(), status, JSON, b"", CACHE)


@pytest.mark.parametrize("status", [201, 206, 302, 304, 400, 401, 403, 429, 500, 502, 503])
def test_other_statuses_are_not_stored(status: int) -> None:
    cache, _ = make()
    assert not cache.put(key(), status, JSON, b"{}", CACHE)
    assert cache.get(key()) is None


@pytest.mark.parametrize(
    "header",
    [
        ("Set-Cookie", "session=1"),
        ("Cache-Control", "no-store"),
        ("cache-control", "max-age=60, PRIVATE"),
        ("cache-control", 'private="set-cookie"'),
        ("cache-control", "no-cache"),
        ("vary", "*"),
    ],
)
def test_personal_or_forbidden_answers_are_not_stored(header: tuple[str, str]) -> None:
    cache, _ = make()
    assert not cache.put(key(), 200, [*JSON, header], b"{}", CACHE)
    assert cache.put(key(), 200, [*JSON, ("cache-control", "public, max-age=5")], b"{}", CACHE)


def test_bodies_over_max_bytes_are_not_stored() -> None:
    cache, _ = make()
    limit = Cache(ttl=30, max_bytes=4)
    assert not cache.put(key(), 200, JSON, b"12345", limit)
    assert cache.put(key(), 200, JSON, b"1234", limit)


def test_put_replaces_an_entry() -> None:
    cache, clock = make()
    cache.put(key(), 200, JSON, b"old", CACHE)
    clock.advance(40)
    cache.put(key(), 200, JSON, b"new", CACHE)
    entry = cache.get(key())
    assert entry is not None
    assert (entry.body, entry.fresh(clock.monotonic())) == (b"new", True)
    assert (len(cache), cache.total_bytes) == (1, 3)


def test_least_recently_used_entries_are_evicted() -> None:
    clock = FakeClock()
    cache = ResponseCache(max_entries=3, clock=clock)
    for name in "abc":
        cache.put(key(f"/{name}"), 200, JSON, name.encode(), CACHE)
    assert cache.get(key("/a")) is not None
    cache.put(key("/d"), 200, JSON, b"d", CACHE)
    assert [cache.get(key(f"/{n}")) is not None for n in "abcd"] == [True, False, True, True]
    assert len(cache) == 3


def test_total_bytes_are_bounded_too() -> None:
    cache = ResponseCache(max_total_bytes=10, clock=FakeClock())
    cache.put(key("/a"), 200, JSON, b"x" * 6, CACHE)
    cache.put(key("/b"), 200, JSON, b"y" * 4, CACHE)
    cache.put(key("/c"), 200, JSON, b"z" * 3, CACHE)
    assert cache.get(key("/a")) is None
    assert cache.total_bytes == 7
    assert not cache.put(key("/d"), 200, JSON, b"w" * 11, CACHE)


def test_clear_one_route() -> None:
    cache, _ = make()
    cache.put(key(), 200, JSON, b"{}", CACHE)
    cache.put(key(route_name="kuma"), 200, JSON, b"{}", CACHE)
    assert cache.clear("plex") == 1
    assert cache.get(key()) is None
    assert cache.get(key(route_name="kuma")) is not None


def test_cached_response_arithmetic() -> None:
    entry = CachedResponse(200, [], b"", stored_at=10.0, ttl=5.0, stale_if_error=5.0)
    assert (entry.age(12.0), entry.fresh(14.9), entry.fresh(15.0)) == (2.0, True, False)
    assert (entry.usable_stale(19.9), entry.usable_stale(20.0)) == (True, False)
