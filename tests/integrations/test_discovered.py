"""Adapters that resolve their service through the registry: moves followed without a
restart, the configured URL as the fallback, and failover between registered endpoints."""

from __future__ import annotations

import asyncio

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


@pytest.mark.parametrize("retry", [True, False])
async def test_a_timed_out_endpoint_hands_over_but_a_cancelled_call_does_not(
    retry: bool,
) -> None:
    policy = PolicyConfig.model_validate(
        {
            "timeout": {"attempt": 0.6, "total": 10},
            "retry": {"enabled": retry, "max_attempts": 2, "base_delay": 0.001},
        }
    )
    async with (
        serve_asgi(upstream_app("one")) as one,
        serve_asgi(upstream_app("two")) as two,
        HttpAdapter("media", http_for("media", one.url, policy)) as adapter,
    ):
        adapter.http.use_endpoints([one.url, two.url])
        slow = {"delay": "3"}
        hits = [server.server.config.app.state.hits for server in (one, two)]

        call = asyncio.create_task(adapter.http.request("GET", "/slow", query=slow))

        async def reached() -> bool:
            return hits[0]["slow"] == 1

        await until(reached, "the call to reach the first endpoint")
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert adapter.http.base_url == one.url, "the caller gave up: the endpoint is fine"

        with pytest.raises(errors.TimeoutExceeded):
            await adapter.http.request("GET", "/slow", query=slow)
        assert [h["slow"] for h in hits] == ([2, 1] if retry else [2, 0])
        assert adapter.http.base_url == (one.url if retry else two.url), (
            "each timed-out attempt moves the next one on"
        )


def test_plex_tv_is_never_resolved() -> None:
    from medianest.integrations.plextv import PlexTvAdapter

    assert HttpAdapter.discoverable
    assert not PlexTvAdapter.discoverable
