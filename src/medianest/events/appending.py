"""The rules of an append that do not depend on the backend.

Every backend runs the same three steps: :func:`prepare` checks the call, the backend looks up
the event ids already stored, and when some are :func:`replayed` decides whether this is a
retry of an append that already happened (its original result is returned) or a mistake.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from medianest.errors import ValidationError
from medianest.events.model import (
    NO_STREAM,
    AppendResult,
    EventMetadata,
    ExpectedVersion,
    NewEvent,
    RecordedEvent,
    StreamState,
    check_expected_value,
    check_name,
    json_text,
)


@dataclass(frozen=True, slots=True)
class PreparedEvent:
    """A checked :class:`NewEvent` with its data and metadata as the JSON text to store.

    The text is what validating the event produced; it is written as is (no second
    serialisation), and parsed again only where a value is needed (:attr:`data`).
    """

    event: NewEvent
    data_json: str
    metadata_json: str

    @property
    def data(self) -> dict[str, Any]:
        """A fresh copy of the event's data, as it will read back."""
        return json.loads(self.data_json)  # type: ignore[no-any-return]

    @property
    def metadata(self) -> EventMetadata:
        """The event's metadata, as it will read back."""
        return EventMetadata.from_json(json.loads(self.metadata_json))


_NONE = object()


def prepare(
    stream_id: str, events: Sequence[NewEvent], expected: ExpectedVersion
) -> list[PreparedEvent]:
    """Check an append's arguments; :class:`~medianest.errors.ValidationError` otherwise.

    At least one event, unique ids inside the batch, types that are names, data that is a
    JSON object, schema versions >= 1. Events of one append often share their metadata
    object; its JSON text is then made once.
    """
    check_name("stream_id", stream_id)
    check_expected_value(expected)
    if isinstance(events, NewEvent) or not events:
        raise ValidationError(
            "append needs a non-empty sequence of NewEvent", errors={"events": "empty"}
        )
    prepared: list[PreparedEvent] = []
    seen: set[UUID] = set()
    last_metadata: object = _NONE
    metadata_json = ""
    for index, event in enumerate(events):
        where = f"events.{index}"
        if not isinstance(event, NewEvent):
            raise ValidationError(f"{where} is not a NewEvent", errors={where: "not a NewEvent"})
        if not isinstance(event.id, UUID):
            raise ValidationError(
                f"{where}.id must be a UUID", errors={f"{where}.id": "not a UUID"}
            )
        if event.id in seen:
            raise ValidationError(
                f"event id {event.id} appears twice in one append", errors={f"{where}.id": "dup"}
            )
        seen.add(event.id)
        check_name(f"{where}.type", event.type)
        version = event.schema_version
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ValidationError(
                f"{where}.schema_version must be an int >= 1",
                errors={f"{where}.schema_version": "invalid"},
            )
        if event.metadata is not last_metadata:
            last_metadata = event.metadata
            metadata_json = json_text(f"{where}.metadata", last_metadata.to_json())
        prepared.append(PreparedEvent(event, json_text(f"{where}.data", event.data), metadata_json))
    return prepared


def replayed(
    stream_id: str,
    events: Sequence[PreparedEvent],
    expected: ExpectedVersion,
    stored: Mapping[UUID, RecordedEvent],
    current: int,
) -> AppendResult:
    """The original result of an append whose ids are (partly) in ``stored`` already.

    It is a retry when **every** event is stored, in ``stream_id``, at consecutive versions,
    in the same order, with the same type, schema version and data (metadata may differ: a
    retry often carries a new trace). The expected version must fit where the batch landed
    (an exact version ``v`` means the batch starts at ``v + 1``; ``NO_STREAM`` at 1), else
    :class:`~medianest.errors.WrongExpectedVersion` carrying ``current``, the stream's version
    now. Anything else means an id was reused
    for another event, which is a :class:`~medianest.errors.ValidationError`.
    """
    from medianest.errors import WrongExpectedVersion

    first = stored.get(events[0].event.id)
    for index, prepared in enumerate(events):
        found = stored.get(prepared.event.id)
        where = f"events.{index}.id"
        if found is None:
            raise ValidationError(
                f"part of this append is already stored (event {events[0].event.id} is, "
                f"{prepared.event.id} is not): a retry must repeat the same events",
                errors={where: "partially stored batch"},
            )
        assert first is not None
        if (
            found.stream_id != stream_id
            or found.version != first.version + index
            or found.type != prepared.event.type
            or found.schema_version != prepared.event.schema_version
            or found.data != prepared.data
        ):
            raise ValidationError(
                f"event id {prepared.event.id} is already stored as another event "
                f"({found.type!r} v{found.version} of stream {found.stream_id!r})",
                errors={where: "already used"},
            )
    assert first is not None
    start = first.version
    if isinstance(expected, int):
        fits = start == expected + 1
    else:
        fits = expected is not NO_STREAM or start == 1
    if not fits:
        shown = expected.value if isinstance(expected, StreamState) else expected
        raise WrongExpectedVersion(stream_id, shown, current)
    last = stored[events[-1].event.id]
    return AppendResult(next_version=last.version, position=last.position)
