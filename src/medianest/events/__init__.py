"""The event store: streams of immutable events, a gap-free global log, subscriptions.

See :mod:`medianest.events.base` for the contract every backend keeps and
:mod:`medianest.events.model` for the values and their numbering.
"""

from medianest.events.base import (
    ANY,
    NO_STREAM,
    STORES,
    STREAM_EXISTS,
    AppendResult,
    EventFilter,
    EventMetadata,
    EventStore,
    EventSubscription,
    ExpectedVersion,
    NewEvent,
    RecordedEvent,
    Snapshot,
    StreamState,
    Upcast,
    Upcasters,
)
from medianest.events.model import snapshot_due

__all__ = [
    "ANY",
    "NO_STREAM",
    "STORES",
    "STREAM_EXISTS",
    "AppendResult",
    "EventFilter",
    "EventMetadata",
    "EventStore",
    "EventSubscription",
    "ExpectedVersion",
    "NewEvent",
    "RecordedEvent",
    "Snapshot",
    "StreamState",
    "Upcast",
    "Upcasters",
    "create_event_store",
    "snapshot_due",
]


def create_event_store(url: str, **options: object) -> EventStore:
    """The event store for ``url`` (``memory://``, ``sqlite:///...``, ``postgresql://...``);
    options go to the backend's ``from_url`` (``database=``, ``upcasters=``...). Unknown
    schemes raise :class:`~medianest.errors.ConfigurationError`."""
    return STORES.create(url, **options)
