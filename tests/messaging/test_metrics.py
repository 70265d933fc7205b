"""The broker's Prometheus families, read from a registry of the test's own."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from medianest.messaging import Broker, Message, RetryPolicy
from medianest.messaging.backends.memory import MemoryBroker
from medianest.messaging.backends.sqlite import SqliteBroker
from medianest.messaging.metrics import MessagingMetrics
from tests.support.brokers import Inbox, dead_letters_of, eventually

ONCE = RetryPolicy(max_attempts=1)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


BrokerMaker = Callable[[Path, MessagingMetrics], Broker]
MAKERS: dict[str, BrokerMaker] = {
    "memory": lambda tmp, metrics: MemoryBroker(metrics=metrics, drain_timeout=1),
    "sqlite": lambda tmp, metrics: SqliteBroker(
        str(tmp / "broker.db"), metrics=metrics, poll_interval=0.05, lag_interval=0.05
    ),
}


@pytest.fixture(params=sorted(MAKERS))
async def broker(
    request: pytest.FixtureRequest, tmp_path: Path, registry: CollectorRegistry
) -> AsyncIterator[Broker]:
    metrics = MessagingMetrics.for_registry(registry)
    async with MAKERS[request.param](tmp_path, metrics) as started:
        yield started


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def test_outcomes_durations_and_lag_are_counted(
    broker: Broker, registry: CollectorRegistry
) -> None:
    inbox = Inbox()

    async def handler(message: Message) -> None:
        if message.payload["fail"]:
            raise RuntimeError("no")
        await inbox(message)

    await (await broker.subscribe("m.*", "idle", Inbox())).close()
    subscription = await broker.subscribe("m.*", "workers", handler, retry=ONCE)
    for fail in (False, False, True):
        await broker.publish(Message("m.job", {"fail": fail}))
    await inbox.wait_count(2)
    await dead_letters_of(broker, 1)

    async def lag_seen() -> bool:
        return value(registry, "medianest_messaging_lag", group="idle") == 3

    await eventually(lag_seen)
    labels = {"topic": "m.job", "group": "workers"}
    assert value(registry, "medianest_messages_published_total", topic="m.job") == 3
    assert value(registry, "medianest_messages_consumed_total", **labels) == 2
    assert value(registry, "medianest_messages_failed_total", **labels) == 1
    assert value(registry, "medianest_messages_dead_lettered_total", **labels) == 1
    assert value(registry, "medianest_message_handler_duration_seconds_count", **labels) == 3
    assert value(registry, "medianest_messaging_lag", group="workers") == 0
    bucket = {**labels, "le": "+Inf"}
    assert value(registry, "medianest_message_handler_duration_seconds_bucket", **bucket) == 3
    assert b"medianest_message_handler_duration_seconds_sum" in generate_latest(registry)
    await subscription.close()


def test_one_collector_per_registry(registry: CollectorRegistry) -> None:
    assert MessagingMetrics.for_registry(registry) is MessagingMetrics.for_registry(registry)
    assert MessagingMetrics.for_registry(registry) is not MessagingMetrics.for_registry(
        CollectorRegistry()
    )
