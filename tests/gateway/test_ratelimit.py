"""Rate limiting: client address, every strategy on every storage, headers, Redis outages.

The strategy tests are a conformance-style suite: one parametrization over ``memory://`` and
a real Redis, so both storages answer the same questions. Outages are real too: the limiter
talks to Redis through a TCP proxy started here, which the test stops and starts again.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from medianest.config.gateway import RateLimit
from medianest.errors import BackendUnavailable, ConfigurationError
from medianest.gateway.ratelimit import (
    DEGRADED_REASON,
    RateDecision,
    RateIdentity,
    RateLimiter,
    client_ip,
)
from medianest.resilience.clock import FakeClock
from tests.support.servers import free_port

TRUSTED = ("10.0.0.0/8", "127.0.0.1/32", "::1/128")
ALICE = RateIdentity(key_id="key-a", user="alice", ip="203.0.113.7")
STRATEGIES = ("fixed_window", "moving_window", "sliding_window_counter")


# --- client address -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("peer", "headers", "expected"),
    [
        pytest.param(
            "198.51.100.9", {"x-forwarded-for": "1.2.3.4"}, "198.51.100.9", id="untrusted"
        ),
        pytest.param("10.0.0.2", {"x-forwarded-for": "1.2.3.4"}, "1.2.3.4", id="one-proxy"),
        pytest.param(
            "10.0.0.2", {"X-Forwarded-For": "1.2.3.4, 10.0.0.5"}, "1.2.3.4", id="trusted-chain"
        ),
        pytest.param(
            "10.0.0.2",
            {"x-forwarded-for": "6.6.6.6, 7.7.7.7, 1.2.3.4, 10.0.0.5"},
            "1.2.3.4",
            id="spoofed-leftmost-ignored",
        ),
        pytest.param("10.0.0.2", {}, "10.0.0.2", id="trusted-no-header"),
        pytest.param(
            "10.0.0.2", {"x-forwarded-for": "10.0.0.7, 10.0.0.5"}, "10.0.0.7", id="all-trusted"
        ),
        pytest.param(
            "10.0.0.2",
            {"forwarded": 'for=192.0.2.60;proto=https, for="[2001:db8::17]:4711"'},
            "2001:db8::17",
            id="forwarded-ipv6-port",
        ),
        pytest.param(
            "10.0.0.2",
            {"forwarded": "for=192.0.2.60, for=10.0.0.5;by=10.0.0.2"},
            "192.0.2.60",
            id="forwarded-chain",
        ),
        pytest.param(
            "10.0.0.2",
            {"x-forwarded-for": "1.2.3.4", "forwarded": "for=5.6.7.8"},
            "1.2.3.4",
            id="xff-wins",
        ),
        pytest.param("10.0.0.2", {"x-forwarded-for": "1.2.3.4:5678"}, "1.2.3.4", id="xff-port"),
        pytest.param(
            "10.0.0.2", {"x-forwarded-for": "1.2.3.4, garbage"}, "10.0.0.2", id="garbage-stops"
        ),
        pytest.param(
            "10.0.0.2",
            {"x-forwarded-for": "6.6.6.6, not-an-ip, 1.2.3.4"},
            "1.2.3.4",
            id="garbage-beyond-client",
        ),
        pytest.param("10.0.0.2", {"forwarded": "for=_hidden"}, "10.0.0.2", id="obfuscated"),
        pytest.param("10.0.0.2", {"x-forwarded-for": ""}, "10.0.0.2", id="empty"),
        pytest.param(
            "::ffff:10.0.0.2", {"x-forwarded-for": "1.2.3.4"}, "1.2.3.4", id="v4-mapped-peer"
        ),
        pytest.param("testclient", {"x-forwarded-for": "1.2.3.4"}, "testclient", id="bad-peer"),
        pytest.param(None, {"x-forwarded-for": "1.2.3.4"}, "unknown", id="no-peer"),
    ],
)
def test_client_ip(peer: str | None, headers: dict[str, str], expected: str) -> None:
    assert client_ip(peer, headers, TRUSTED) == expected


def test_client_ip_rejects_bad_trusted_proxies() -> None:
    with pytest.raises(ConfigurationError, match="not-a-net"):
        client_ip("10.0.0.2", {}, ("not-a-net",))


# --- decisions and headers -------------------------------------------------------------------


def test_headers_of_an_allowed_decision() -> None:
    decision = RateDecision(True, 100, 42, 12.2, None, "100;w=60, 1000;w=3600")
    assert decision.headers() == [
        ("RateLimit-Limit", "100"),
        ("RateLimit-Remaining", "42"),
        ("RateLimit-Reset", "13"),
        ("RateLimit-Policy", "100;w=60, 1000;w=3600"),
    ]


@pytest.mark.parametrize(("retry_after", "expected"), [(0.0, "1"), (0.2, "1"), (7.01, "8")])
def test_retry_after_is_whole_seconds_and_at_least_one(retry_after: float, expected: str) -> None:
    decision = RateDecision(False, 10, 0, retry_after, retry_after, "10;w=60")
    assert dict(decision.headers())["Retry-After"] == expected


def test_no_policy_no_headers() -> None:
    assert RateDecision(True, 0, 0, 0.0, None, "").headers() == []


# --- the limiter on every storage ------------------------------------------------------------


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


async def _delete_prefix(url: str, prefix: str) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture(params=["memory", "redis"])
async def limiter(
    request: pytest.FixtureRequest, registry: CollectorRegistry
) -> AsyncIterator[RateLimiter]:
    url = "memory://" if request.param == "memory" else request.getfixturevalue("redis_url")
    prefix = f"mn-test-{uuid.uuid4().hex}"
    limiter = RateLimiter.from_url(url, registry=registry, key_prefix=prefix)
    await limiter.start()
    try:
        assert not limiter.degraded
        yield limiter
    finally:
        await limiter.close()
        if url != "memory://":
            await _delete_prefix(url, prefix)


async def _run(
    limiter: RateLimiter, limits: Sequence[RateLimit], n: int, who: RateIdentity = ALICE
) -> list[RateDecision]:
    return [await limiter.check("media", limits, who) for _ in range(n)]


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_each_strategy_enforces_its_limit(limiter: RateLimiter, strategy: str) -> None:
    decisions = await _run(limiter, [RateLimit(limit="3/minute", strategy=strategy)], 5)
    assert [d.allowed for d in decisions] == [True, True, True, False, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0, 0]
    assert all(d.limit == 3 and d.policy == "3;w=60" and not d.degraded for d in decisions)
    for d in decisions:
        assert 0 < d.reset_after <= 60
    refused = decisions[-1]
    assert refused.retry_after is not None
    assert 0 < refused.retry_after <= 60


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_headers_of_real_decisions(limiter: RateLimiter, strategy: str) -> None:
    limits = [RateLimit(limit="2/minute", strategy=strategy)]
    first, _, refused = await _run(limiter, limits, 3)
    headers = dict(first.headers())
    assert headers["RateLimit-Limit"] == "2"
    assert headers["RateLimit-Remaining"] == "1"
    assert headers["RateLimit-Policy"] == "2;w=60"
    assert 1 <= int(headers["RateLimit-Reset"]) <= 60
    assert "Retry-After" not in headers
    headers = dict(refused.headers())
    assert headers["RateLimit-Remaining"] == "0"
    assert 1 <= int(headers["Retry-After"]) <= 60


async def test_several_limits_report_the_most_restrictive(limiter: RateLimiter) -> None:
    limits = [
        RateLimit(limit="10/minute", per="ip"),
        RateLimit(limit="5/hour;2/minute", per="key", strategy="moving_window"),
    ]
    first, second, third = await _run(limiter, limits, 3)
    assert (first.allowed, first.limit, first.remaining) == (True, 2, 1)
    assert first.policy.split(", ")[0] == "2;w=60"
    assert set(first.policy.split(", ")) == {"2;w=60", "10;w=60", "5;w=3600"}
    assert (second.allowed, second.remaining) == (True, 0)
    assert (third.allowed, third.limit, third.remaining) == (False, 2, 0)
    assert third.retry_after is not None
    assert third.retry_after >= 1


async def test_refused_if_any_limit_is_exceeded(limiter: RateLimiter) -> None:
    limits = [RateLimit(limit="100/minute"), RateLimit(limit="1/minute", per="route")]
    first, second = await _run(limiter, limits, 2)
    assert first.allowed
    assert not second.allowed
    assert second.limit == 1


@pytest.mark.parametrize(
    ("per", "other", "shared"),
    [
        ("key", RateIdentity("key-b", "alice", ALICE.ip), False),
        ("key", RateIdentity("key-a", "bob", "198.51.100.1"), True),
        ("user", RateIdentity("key-b", "alice", "198.51.100.1"), True),
        ("user", RateIdentity("key-a", "bob", ALICE.ip), False),
        ("ip", RateIdentity("key-b", "bob", ALICE.ip), True),
        ("ip", RateIdentity("key-a", "alice", "198.51.100.1"), False),
        ("route", RateIdentity(None, None, "198.51.100.1"), True),
    ],
)
async def test_counters_are_separated_by_dimension(
    limiter: RateLimiter, per: str, other: RateIdentity, shared: bool
) -> None:
    limits = [RateLimit.model_validate({"limit": "1/minute", "per": per})]
    assert (await limiter.check("media", limits, ALICE)).allowed
    assert (await limiter.check("media", limits, other)).allowed is not shared
    assert (await limiter.check("other-route", limits, ALICE)).allowed


@pytest.mark.parametrize("per", ["key", "user"])
async def test_anonymous_requests_fall_back_to_the_client_address(
    limiter: RateLimiter, per: str
) -> None:
    limits = [RateLimit.model_validate({"limit": "1/minute", "per": per})]
    anonymous = RateIdentity(None, None, "192.0.2.1")
    assert (await limiter.check("media", limits, anonymous)).allowed
    assert not (await limiter.check("media", limits, anonymous)).allowed
    assert (await limiter.check("media", limits, RateIdentity(None, None, "192.0.2.2"))).allowed


async def test_key_values_cannot_forge_another_counter(limiter: RateLimiter) -> None:
    limits = [RateLimit(limit="1/minute", per="key")]
    assert (await limiter.check("media", limits, RateIdentity("a", None, "192.0.2.1"))).allowed
    forged = RateIdentity("a/1/1/minute", None, "192.0.2.1")
    assert (await limiter.check("media", limits, forged)).allowed


async def test_refusals_are_counted(limiter: RateLimiter, registry: CollectorRegistry) -> None:
    await _run(limiter, [RateLimit(limit="1/minute")], 3)
    value = registry.get_sample_value("medianest_gateway_rate_limited_total", {"route": "media"})
    assert value == 2
    assert registry.get_sample_value("medianest_gateway_rate_limit_degraded") == 0
    assert registry.get_sample_value("medianest_gateway_rate_limit_storage_errors_total") == 0


async def test_no_limits_allows_without_headers(limiter: RateLimiter) -> None:
    decision = await limiter.check("media", [], ALICE)
    assert decision.allowed
    assert decision.headers() == []


async def test_healthy_limiter_is_ready(limiter: RateLimiter) -> None:
    await limiter.ping()
    assert await limiter.readiness()


# --- construction ----------------------------------------------------------------------------


def test_unknown_scheme_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="mongodb://") as failed:
        RateLimiter.from_url("mongodb://user:secret@db/0")
    assert "secret" not in str(failed.value.problems)


async def test_two_limiters_share_the_metric_families() -> None:
    registry = CollectorRegistry()
    limiters = [RateLimiter.from_url("memory://", registry=registry) for _ in range(2)]
    defaults = [RateLimiter.from_url("memory://") for _ in range(2)]
    for limiter in [*limiters, *defaults]:
        await limiter.close()
    assert registry.get_sample_value("medianest_gateway_rate_limit_degraded") == 0


# --- Redis outages ---------------------------------------------------------------------------


async def test_unreachable_redis_limits_locally(registry: CollectorRegistry) -> None:
    limiter = RateLimiter.from_url("redis://127.0.0.1:1/0", registry=registry)
    await limiter.start()
    try:
        assert limiter.degraded
        assert registry.get_sample_value("medianest_gateway_rate_limit_degraded") == 1
        with pytest.raises(BackendUnavailable, match="unreachable"):
            await limiter.ping()
        with pytest.raises(BackendUnavailable) as failed:
            await limiter.readiness()
        assert str(failed.value) == DEGRADED_REASON
        decisions = await _run(limiter, [RateLimit(limit="3/minute")], 5)
        assert [d.allowed for d in decisions] == [True, True, True, False, False]
        assert all(d.degraded for d in decisions)
        assert dict(decisions[-1].headers())["Retry-After"]
        errors = registry.get_sample_value("medianest_gateway_rate_limit_storage_errors_total")
        assert errors is not None
        assert errors >= 1
    finally:
        await limiter.close()
    assert registry.get_sample_value("medianest_gateway_rate_limit_degraded") == 0


class TcpProxy:
    """A loopback TCP proxy to Redis that the test can take down and bring back.

    ``stop`` closes the listening socket and aborts every connection through it, which is
    what a client sees when a server dies; ``start`` listens on the same port again.
    """

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            self._writers.discard(writer)
            writer.transport.abort()


@pytest.fixture
async def redis_proxy(redis_url: str) -> AsyncIterator[tuple[TcpProxy, str]]:
    parts = urlsplit(redis_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 6379)
    await proxy.start()
    try:
        yield proxy, f"redis://127.0.0.1:{proxy.port}{parts.path}"
    finally:
        await proxy.stop()


async def test_outage_degrades_then_recovers_to_redis(
    redis_url: str, redis_proxy: tuple[TcpProxy, str], registry: CollectorRegistry
) -> None:
    proxy, url = redis_proxy
    clock = FakeClock()
    prefix = f"mn-test-{uuid.uuid4().hex}"
    limiter = RateLimiter.from_url(
        url, registry=registry, key_prefix=prefix, probe_interval=5.0, clock=clock
    )
    limits = [RateLimit(limit="3/minute", strategy="moving_window")]

    def errors() -> float | None:
        return registry.get_sample_value("medianest_gateway_rate_limit_storage_errors_total")

    def gauge() -> float | None:
        return registry.get_sample_value("medianest_gateway_rate_limit_degraded")

    await limiter.start()
    try:
        first, second = await _run(limiter, limits, 2)
        assert first.allowed
        assert second.allowed
        assert not second.degraded
        assert (gauge(), errors()) == (0, 0)

        await proxy.stop()
        local = await _run(limiter, limits, 5)
        assert limiter.degraded
        assert gauge() == 1
        assert errors() == 1
        assert [d.allowed for d in local] == [True, True, True, False, False]
        assert all(d.degraded for d in local)
        with pytest.raises(BackendUnavailable, match="enforcing local limits"):
            await limiter.readiness()

        clock.advance(4.0)  # not yet due: requests do not touch Redis at all
        await _run(limiter, limits, 3)
        await limiter.wait_for_probe()
        assert errors() == 1

        clock.advance(1.5)  # due, but Redis is still down: one probe, one more error
        await _run(limiter, limits, 3)
        await limiter.wait_for_probe()
        assert limiter.degraded
        assert errors() == 2

        await proxy.start()
        clock.advance(5.0)
        answered_locally = await limiter.check("media", limits, ALICE)
        assert answered_locally.degraded
        await limiter.wait_for_probe()
        assert not limiter.degraded
        assert gauge() == 0
        assert await limiter.readiness()

        # Back on Redis, whose counter still holds the two requests made before the outage.
        third, fourth = await _run(limiter, limits, 2)
        assert third.allowed
        assert not third.degraded
        assert third.remaining == 0
        assert not fourth.allowed
        assert errors() == 2
    finally:
        await limiter.close()
        await _delete_prefix(redis_url, prefix)


async def test_readiness_notices_an_outage_without_traffic(
    redis_proxy: tuple[TcpProxy, str], registry: CollectorRegistry
) -> None:
    proxy, url = redis_proxy
    clock = FakeClock()
    limiter = RateLimiter.from_url(url, registry=registry, clock=clock)
    await limiter.start()
    try:
        assert "reachable" in await limiter.readiness()
        await proxy.stop()
        with pytest.raises(BackendUnavailable, match="enforcing local limits"):
            await limiter.readiness()
        assert limiter.degraded
        await proxy.start()
        with pytest.raises(BackendUnavailable):
            await limiter.readiness()  # the probe interval has not passed yet
        clock.advance(limiter.probe_interval)
        assert await limiter.readiness()
        assert not limiter.degraded
    finally:
        with contextlib.suppress(Exception):
            await limiter.close()
