"""Upcasters: old event shapes turned into the current one as events are read.

Stored events are never rewritten. When the shape of an event type's ``data`` changes, its
writers bump ``schema_version`` and register a function that turns version ``n`` into
``n + 1``; readers then only ever see the newest shape::

    upcasters = Upcasters()

    @upcasters.register("RequestCreated", 1)
    def _add_priority(data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "priority": "normal"}

    store = create_event_store(url, upcasters=upcasters)

Functions chain (1 → 2 → 3...) until no function is registered for the event's version. A
function may also rename the type by returning :class:`Upcast` (the chain then continues under
the new type). Upcasting happens on every read path (stream reads, global reads,
subscriptions); appends' idempotency checks compare the stored, original shape.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from medianest.errors import ConfigurationError, ValidationError
from medianest.events.model import RecordedEvent, json_object


@dataclass(frozen=True, slots=True)
class Upcast:
    """What an upcaster returns when the new shape also has a new event ``type``."""

    type: str
    data: dict[str, Any]


UpcastFunction = Callable[[dict[str, Any]], "dict[str, Any] | Upcast"]

_MAX_CHAIN = 1000


class Upcasters:
    """Registry of ``(event type, from schema version) → function`` (module docstring)."""

    def __init__(self) -> None:
        self._functions: dict[tuple[str, int], UpcastFunction] = {}

    def __len__(self) -> int:
        return len(self._functions)

    def register(
        self, event_type: str, from_version: int, function: UpcastFunction | None = None
    ) -> Any:
        """Register ``function`` turning ``event_type`` v``from_version`` into the next version.

        Usable directly or as a decorator. Registering the same pair twice is a
        :class:`~medianest.errors.ConfigurationError` (two answers to one question).
        """

        def add(fn: UpcastFunction) -> UpcastFunction:
            key = (event_type, from_version)
            if key in self._functions:
                raise ConfigurationError(
                    f"an upcaster for {event_type!r} v{from_version} is already registered"
                )
            self._functions[key] = fn
            return fn

        if function is not None:
            return add(function)
        return add

    def apply(self, event: RecordedEvent) -> RecordedEvent:
        """``event`` in its newest known shape (the same object when nothing applies)."""
        if not self._functions:
            return event
        event_type, version, data = event.type, event.schema_version, event.data
        for _ in range(_MAX_CHAIN):
            function = self._functions.get((event_type, version))
            if function is None:
                break
            result = function(dict(data))
            if isinstance(result, Upcast):
                event_type, data = result.type, result.data
            else:
                data = result
            data = json_object("data", data)
            version += 1
        else:
            raise ValidationError(
                f"upcasters of {event.type!r} loop past version {version}",
                errors={"upcasters": "loop"},
            )
        if version == event.schema_version:
            return event
        return dataclasses.replace(event, type=event_type, schema_version=version, data=data)
