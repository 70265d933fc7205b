"""How the hub plugs media requests in: the saga definitions and the read model.

``app.py`` calls :func:`saga_definitions` when it builds the hub's
:class:`~medianest.sagas.SagaOrchestrator` (every role: the API starts sagas wherever it
runs) and :func:`start_projection` in the ``workers`` role, next to saga recovery and the
outbox relay.
"""

from __future__ import annotations

import contextlib
from typing import Protocol

from medianest.config import Settings
from medianest.config.requests import requests_settings
from medianest.database import Database
from medianest.errors import ConfigurationError
from medianest.events.base import EventStore
from medianest.integrations.overseerr import OverseerrAdapter
from medianest.integrations.registry import Integrations
from medianest.media_requests.hooks import hooks_from_env
from medianest.media_requests.projection import RequestProjection
from medianest.media_requests.saga import request_media_saga
from medianest.sagas.base import SagaDefinition


class HubParts(Protocol):
    """What the wiring needs of :class:`medianest.app.Hub`."""

    settings: Settings
    database: Database
    integrations: Integrations
    event_store: EventStore | None


def _store(hub: HubParts) -> EventStore:
    if hub.event_store is None:
        raise ConfigurationError("media requests need the event store, which is not started")
    return hub.event_store


def saga_definitions(hub: HubParts) -> list[SagaDefinition]:
    """Every saga definition of media requests (``request-media``).

    The Overseerr adapter is looked up on each use, so a saga started before Overseerr was
    configured fails with :class:`~medianest.errors.ServiceNotConfigured` and compensates.
    """

    def overseerr() -> OverseerrAdapter:
        return hub.integrations.overseerr("media requests")

    settings = requests_settings(hub.settings)
    return [request_media_saga(_store(hub), overseerr, settings, hooks=hooks_from_env())]


async def start_projection(hub: HubParts, stack: contextlib.AsyncExitStack) -> RequestProjection:
    """Start the ``media_requests`` projection; ``stack`` stops it with the hub."""
    projection = RequestProjection(hub.database, _store(hub))
    await projection.start()
    stack.push_async_callback(projection.close)
    return projection
