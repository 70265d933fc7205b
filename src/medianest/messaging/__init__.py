"""Messaging: one broker interface over embedded and distributed backends, chosen by URL.

See :mod:`medianest.messaging.base` for the envelope and the contract every backend keeps.
"""

from medianest.messaging.base import (
    BROKERS,
    Broker,
    DeadLetter,
    Handler,
    Message,
    RetryPolicy,
    Subscription,
    topic_matches,
    uuid7,
)

__all__ = [
    "BROKERS",
    "Broker",
    "DeadLetter",
    "Handler",
    "Message",
    "RetryPolicy",
    "Subscription",
    "create_broker",
    "topic_matches",
    "uuid7",
]


def create_broker(url: str, **options: object) -> Broker:
    """The broker for ``url`` (``memory://``, ``sqlite:///...``, ``redis://...``,
    ``amqp://...``, ``nats://...``); unknown schemes raise ConfigurationError."""
    return BROKERS.create(url, **options)
