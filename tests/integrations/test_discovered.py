"""Adapters that resolve their service through the registry: moves followed without a
restart, the configured URL as the fallback, and failover between registered endpoints."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from medianest import errors
from medianest.discovery import HealthState, ServiceInstance, create_registry
from medianest.integrations.base import HttpAdapter
from medianest.integrations.discovered import AdapterEndpoints
from medianest.integrations.http import http_for
from medianest.resilience import PolicyConfig
from tests.support.servers import free_port, serve_asgi
from tests.support.upstream import upstream_app
from tests.support.waiting import until

NO_RETRY = PolicyConfig.model_validate({"retry": {"enabled": False}})
RETRY_ONCE = {"max_attempts": 2, "base_delay": 0.001}


async def answered_by(adapter: HttpAdapter) -> str | None:
    try:
        answer = await adapter.http.request("GET", "/echo")
    except errors.UpstreamUnavailable:
        return None
    return str(answer.json()["instance"])


def media(instance_id: str, url: str) -> ServiceInstance:
    return ServiceInstance(id=instance_id, name="media", endpoints=(url,))


async def test_an_adapter_follows_its_service_and_falls_back_to_its_url() -> None:
    configured = f"http://127.0.0.1:{free_port()}"
    async with (
        serve_asgi(upstream_app("one")) as one,
        serve_asgi(upstream_app("two")) as two,
        create_registry("memory://") as registry,
        HttpAdapter("media", http_for("media", configured, NO_RETRY)) as adapter,
    ):
        endpoints = AdapterEndpoints([adapter], registry)
        await endpoints.start()
        try:
            assert await answered_by(adapter) is None, "nothing registered: the configured URL"
            await registry.register(media("one", one.url))

            async def on(name: str | None) -> bool:
                return await answered_by(adapter) == name

            await until(lambda: on("one"), "the registered instance")
            await registry.register(media("two", two.url))
            await registry.deregister("one")
            await until(lambda: on("two"), "the move to the second instance")
            await registry.deregister("two")
            await until(lambda: on(None), "the fall back to the configured URL")
            assert adapter.http.endpoints == (configured,)
        finally:
            await endpoints.close()


async def test_unhealthy_instances_are_not_used() -> None:
    async with (
        serve_asgi(upstream_app("one")) as one,
        serve_asgi(upstream_app("two")) as two,
        create_registry("memory://") as registry,
        HttpAdapter("media", http_for("media", one.url, NO_RETRY)) as adapter,
    ):
        await registry.register(media("one", one.url))
        await registry.register(media("two", two.url))
        await registry.set_health("one", HealthState.UNHEALTHY, "checks failed")
        endpoints = AdapterEndpoints([adapter], registry)
        await endpoints.start()
        try:
            assert adapter.http.endpoints == (two.url,)
            assert await answered_by(adapter) == "two"
        finally:
            await endpoints.close()


@pytest.mark.parametrize("retry", [True, False])
async def test_a_failed_endpoint_hands_over_to_the_next(retry: bool) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    policy = PolicyConfig.model_validate(
        {"retry": {"enabled": retry, "max_attempts": 2, "base_delay": 0.001}}
    )
    async with (
        serve_asgi(upstream_app("live")) as live,
        HttpAdapter("media", http_for("media", dead, policy)) as adapter,
    ):
        adapter.http.use_endpoints([dead, live.url])
        if not retry:
            assert await answered_by(adapter) is None, "the first call meets the dead endpoint"
        assert await answered_by(adapter) == "live"
        assert adapter.http.base_url == live.url, "requests stay on the endpoint that answers"
        adapter.http.use_endpoints([dead, live.url])
        assert adapter.http.base_url == live.url, "a refresh keeps the endpoint in use first"


async def test_a_cancelled_call_leaves_the_endpoint_in_use() -> None:
    """The caller gave up (a search deadline, a client gone): the endpoint is not at fault."""
    policy = PolicyConfig.model_validate({"timeout": {"attempt": 30, "total": 60}})
    async with (
        serve_asgi(upstream_app("one")) as one,
        serve_asgi(upstream_app("two")) as two,
        HttpAdapter("media", http_for("media", one.url, policy)) as adapter,
    ):
        adapter.http.use_endpoints([one.url, two.url])
        hits = one.server.config.app.state.hits
        call = asyncio.create_task(adapter.http.request("GET", "/slow", query={"delay": "3"}))

        async def reached() -> bool:
            return bool(hits["slow"] == 1)

        await until(reached, "the call to reach the first endpoint")
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert adapter.http.base_url == one.url


@pytest.mark.parametrize(
    ("resilience", "raised", "slow_hits", "first"),
    [
        ({"retry": {"enabled": False}}, errors.TimeoutExceeded, [1, 0], "two"),
        (
            {"retry": {"max_attempts": 2, "base_delay": 0.001}},
            errors.TimeoutExceeded,
            [1, 1],
            "one",
        ),
        (
            {
                "retry": RETRY_ONCE,
                "breaker": {"minimum_calls": 1, "window_size": 1, "open_duration": 60},
            },
            errors.CircuitOpenError,
            [1, 0],
            "two",
        ),
    ],
    ids=["no-retry", "retried", "breaker-opened"],
)
async def test_a_timed_out_attempt_moves_the_next_one_on(
    resilience: dict[str, Any], raised: type[Exception], slow_hits: list[int], first: str
) -> None:
    """Each attempt that ran out of time moves the adapter to the next endpoint, whether a
    retry follows or the call ends (its timeout, or the breaker that timeout opened)."""
    policy = PolicyConfig.model_validate({"timeout": {"attempt": 0.6, "total": 30}, **resilience})
    async with (
        serve_asgi(upstream_app("one")) as one,
        serve_asgi(upstream_app("two")) as two,
        HttpAdapter("media", http_for("media", one.url, policy)) as adapter,
    ):
        adapter.http.use_endpoints([one.url, two.url])
        with pytest.raises(raised):
            await adapter.http.request("GET", "/slow", query={"delay": "3"})
        hits = [server.server.config.app.state.hits["slow"] for server in (one, two)]
        assert hits == slow_hits
        assert adapter.http.base_url == {"one": one.url, "two": two.url}[first]


def test_plex_tv_is_never_resolved() -> None:
    from medianest.integrations.plextv import PlexTvAdapter

    assert HttpAdapter.discoverable
    assert not PlexTvAdapter.discoverable
