"""The ``[events]`` section: the event store, the outbox relay and saga recovery."""

from __future__ import annotations

from pydantic import Field

from medianest.config.section import Section


class EventsSettings(Section):
    """Where events are stored and how the background work on them runs (``workers``)."""

    url: str = Field(
        "",
        description="Event store URL: empty for the main database (the default), `memory://` "
        "(one process, tests) or a `postgresql://` / `sqlite:///` database of its own.",
        examples=["postgresql://medianest@127.0.0.1/events"],
    )
    relay_lease_ttl: float = Field(
        30.0,
        gt=1,
        le=3600,
        description="Seconds the outbox relay's lease lasts unless renewed: if the instance "
        "publishing events dies, another takes over after this long.",
    )
    relay_batch_size: int = Field(
        100, ge=1, le=10_000, description="Events the outbox relay publishes per read."
    )
    saga_lease_ttl: float = Field(
        30.0,
        gt=1,
        le=3600,
        description="Seconds a saga's driver lease lasts unless renewed; a saga whose driver "
        "died is recovered by another instance after this long.",
    )
    saga_recovery_interval: float = Field(
        10.0, gt=0, le=3600, description="Seconds between scans for sagas to recover (workers)."
    )
