"""The values of the event store: events to append, recorded events, versions, filters.

Numbering, the same on every backend:

* a stream's **version** is the number of events in it; its events carry versions 1, 2, 3...
  A stream that does not exist is at version 0 (so ``expected_version=0`` and
  :attr:`StreamState.NO_STREAM` mean the same thing);
* the **position** of an event is its place in the store-wide log, 1, 2, 3... with no gaps and
  in commit order; 0 means "before the first event", which is where a new reader starts.

Event ``data`` and ``metadata`` are JSON objects. They are checked (and copied) at append, so a
value that JSON cannot carry is refused with :class:`~medianest.errors.ValidationError` on
every backend, and tuples come back as lists everywhere.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import FrozenInstanceError, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Self, cast
from uuid import UUID, uuid4

from medianest.errors import ValidationError

MAX_NAME_LENGTH = 200
"""Longest stream id, event type, subscriber name (they are indexed columns)."""


class StreamState(StrEnum):
    """Expected versions that are not a number."""

    ANY = "any"
    """Append whatever the stream's version (and create it when missing)."""
    NO_STREAM = "no_stream"
    """The stream must not exist yet (the same as ``0``)."""
    STREAM_EXISTS = "stream_exists"
    """The stream must already hold at least one event."""


ANY = StreamState.ANY
NO_STREAM = StreamState.NO_STREAM
STREAM_EXISTS = StreamState.STREAM_EXISTS

ExpectedVersion = int | StreamState
"""What an append expects the stream's version to be: an exact version or a marker."""


def check_expected(stream_id: str, expected: ExpectedVersion, current: int) -> None:
    """Raise :class:`~medianest.errors.WrongExpectedVersion` unless ``current`` fits.

    ``current`` is the stream's version now (0 when it does not exist); the error carries it
    as ``actual``.
    """
    from medianest.errors import WrongExpectedVersion

    if expected is ANY:
        return
    if expected is NO_STREAM:
        fits = current == 0
    elif expected is STREAM_EXISTS:
        fits = current > 0
    else:
        fits = current == expected
    if not fits:
        raise WrongExpectedVersion(stream_id, _shown(expected), current)


def _shown(expected: ExpectedVersion) -> object:
    return expected.value if isinstance(expected, StreamState) else expected


def check_expected_value(expected: object) -> ExpectedVersion:
    """``expected`` when it is a version (int >= 0) or a :class:`StreamState`, else an error."""
    if isinstance(expected, StreamState):
        return expected
    if isinstance(expected, int) and not isinstance(expected, bool) and expected >= 0:
        return expected
    raise ValidationError(
        f"expected_version must be a version >= 0, ANY, NO_STREAM or STREAM_EXISTS, "
        f"not {expected!r}",
        errors={"expected_version": "invalid"},
    )


def check_name(kind: str, value: object) -> str:
    """A stream id, event type or subscriber name: a non-empty string of at most 200 chars."""
    if not isinstance(value, str) or not value or len(value) > MAX_NAME_LENGTH:
        raise ValidationError(
            f"{kind} must be a non-empty string of at most {MAX_NAME_LENGTH} characters, "
            f"not {value!r}",
            errors={kind: "invalid"},
        )
    return value


def json_object(kind: str, value: object) -> dict[str, Any]:
    """A deep copy of ``value`` as JSON would give it back, or ValidationError naming ``kind``."""
    copied = json.loads(json_text(kind, value))
    assert isinstance(copied, dict)
    return copied


def json_text(kind: str, value: object) -> str:
    """``value``, a JSON object, as JSON text (what is stored), or ValidationError naming
    ``kind``. Reading the text back gives what :func:`json_object` gives."""
    if not isinstance(value, Mapping):
        raise ValidationError(f"{kind} must be a JSON object", errors={kind: "not an object"})
    try:
        return json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{kind} is not JSON: {exc}", errors={kind: str(exc)}) from exc


@dataclass(frozen=True, slots=True)
class EventMetadata:
    """Where an event comes from (DESIGN.md: every envelope carries these).

    ``correlation_id`` ties together everything one user action caused, ``causation_id`` is
    the id of the message or event that directly caused this one, ``traceparent`` the W3C
    trace context of the writer, ``user`` who acted. ``extra`` holds anything else (strings).
    """

    correlation_id: str | None = None
    causation_id: str | None = None
    traceparent: str | None = None
    user: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict)

    def caused_by(self, event: RecordedEvent, *, user: str | None = None) -> EventMetadata:
        """Metadata for an event caused by ``event``: same correlation, causation = its id."""
        return EventMetadata(
            correlation_id=event.metadata.correlation_id or str(event.id),
            causation_id=str(event.id),
            traceparent=self.traceparent or event.metadata.traceparent,
            user=user if user is not None else (self.user or event.metadata.user),
            extra=dict(self.extra),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            k: v
            for k, v in (
                ("correlation_id", self.correlation_id),
                ("causation_id", self.causation_id),
                ("traceparent", self.traceparent),
                ("user", self.user),
            )
            if v is not None
        }
        if self.extra:
            out["extra"] = dict(self.extra)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Self:
        """The metadata stored as ``data`` (what :meth:`to_json` gave).

        Every event read back builds one, so this fills the slots directly instead of going
        through the frozen dataclass's ``__init__`` (``object.__setattr__`` per field, about
        three times the cost); the result is the same value."""
        data = data or {}
        extra = data.get("extra")
        if cls is not EventMetadata:
            return cls(
                correlation_id=data.get("correlation_id"),
                causation_id=data.get("causation_id"),
                traceparent=data.get("traceparent"),
                user=data.get("user"),
                extra=dict(extra or {}),
            )
        made = _new_object(cls)
        _set_correlation(made, data.get("correlation_id"))
        _set_causation(made, data.get("causation_id"))
        _set_traceparent(made, data.get("traceparent"))
        _set_user(made, data.get("user"))
        _set_extra(made, dict(extra) if extra else {})
        return made


_new_object = object.__new__
_set_correlation = vars(EventMetadata)["correlation_id"].__set__
_set_causation = vars(EventMetadata)["causation_id"].__set__
_set_traceparent = vars(EventMetadata)["traceparent"].__set__
_set_user = vars(EventMetadata)["user"].__set__
_set_extra = vars(EventMetadata)["extra"].__set__


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to append. ``id`` makes appends idempotent: keep it when retrying.

    ``schema_version`` is the version of the shape of ``data`` for this ``type`` (see
    :class:`~medianest.events.upcasting.Upcasters`).
    """

    type: str
    data: Mapping[str, Any] = field(default_factory=dict)
    metadata: EventMetadata = field(default_factory=EventMetadata)
    id: UUID = field(default_factory=uuid4)
    schema_version: int = 1


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """An event as stored: a :class:`NewEvent` plus where and when it landed.

    ``recorded_at`` is the writer's clock (aware UTC); order events by ``position``, never by
    time, since writers on several machines do not share a clock.

    This frozen dataclass is the declaration (what type checkers and ``dataclasses.fields``
    see). At run time the name is bound to :class:`_StoredEvent`, which has the same fields,
    constructor and behaviour (equality, ``repr``, immutability, ``dataclasses.replace``)
    and also :meth:`from_stored`: an event over a row as read, whose ``id``, ``data``,
    ``metadata`` and ``recorded_at`` are decoded on first use.
    """

    id: UUID
    stream_id: str
    version: int
    position: int
    type: str
    schema_version: int
    data: dict[str, Any]
    metadata: EventMetadata
    recorded_at: datetime

    @classmethod
    def from_stored(cls, row: Sequence[Any]) -> RecordedEvent:
        """An event over a stored row ``(position, id, stream_id, version, type,
        schema_version, data, metadata, recorded_at)``: the id as text, data and metadata
        as JSON text, the time as a datetime or ISO text (naive = UTC)."""
        return cast(RecordedEvent, _StoredEvent.from_stored(row))

    def same_content(self, event: NewEvent) -> bool:
        """Whether ``event`` (a retry) carries what this one stored (metadata aside)."""
        return (
            self.type == event.type
            and self.schema_version == event.schema_version
            and self.data == json_object("data", event.data)
        )


_FIELDS = tuple(RecordedEvent.__dataclass_fields__)
_RAW: Any = object()
"""Marks a field of a :class:`_StoredEvent` that is still the stored text."""


class _StoredEvent:
    """:class:`RecordedEvent` at run time: a slotted class over the stored row that decodes
    ``id`` (a UUID), ``data`` and ``metadata`` (JSON) and ``recorded_at`` (an aware UTC
    datetime) on first access and keeps the result; the other fields are read from the row.

    Reading a page of events thus costs one small object per row; a reader pays for the
    values it uses. It mimics the frozen dataclass it stands for: it carries its
    ``__dataclass_fields__`` (``dataclasses.replace``/``asdict``/``fields`` work), compares
    field by field with events of its class, repr's and pickles like it, refuses assignment
    with ``FrozenInstanceError`` and is unhashable (``data`` is a dict).
    """

    __slots__ = ("_data", "_id", "_metadata", "_recorded_at", "_stored")
    __dataclass_fields__ = RecordedEvent.__dataclass_fields__
    __dataclass_params__ = RecordedEvent.__dataclass_params__  # type: ignore[attr-defined]
    __match_args__ = (
        "id",
        "stream_id",
        "version",
        "position",
        "type",
        "schema_version",
        "data",
        "metadata",
        "recorded_at",
    )

    _stored: Sequence[Any]
    _id: Any
    _data: Any
    _metadata: Any
    _recorded_at: Any

    def __init__(
        self,
        id: UUID,
        stream_id: str,
        version: int,
        position: int,
        type: str,
        schema_version: int,
        data: dict[str, Any],
        metadata: EventMetadata,
        recorded_at: datetime,
    ) -> None:
        _set_stored(self, (position, None, stream_id, version, type, schema_version))
        _set_id(self, id)
        _set_data(self, data)
        _set_metadata(self, metadata)
        _set_recorded_at(self, recorded_at)

    @classmethod
    def from_stored(cls, row: Sequence[Any]) -> _StoredEvent:
        """See :meth:`RecordedEvent.from_stored`."""
        event = _new(cls)
        _set_stored(event, row)
        _set_id(event, _RAW)
        _set_data(event, _RAW)
        _set_metadata(event, _RAW)
        _set_recorded_at(event, _RAW)
        return event

    @property
    def position(self) -> int:
        return self._stored[0]  # type: ignore[no-any-return]

    @property
    def stream_id(self) -> str:
        return self._stored[2]  # type: ignore[no-any-return]

    @property
    def version(self) -> int:
        return self._stored[3]  # type: ignore[no-any-return]

    @property
    def type(self) -> str:
        return self._stored[4]  # type: ignore[no-any-return]

    @property
    def schema_version(self) -> int:
        return self._stored[5]  # type: ignore[no-any-return]

    @property
    def id(self) -> UUID:
        value = self._id
        if value is _RAW:
            value = UUID(self._stored[1])
            _set_id(self, value)
        return value  # type: ignore[no-any-return]

    @property
    def data(self) -> dict[str, Any]:
        value = self._data
        if value is _RAW:
            value = json.loads(self._stored[6])
            _set_data(self, value)
        return value  # type: ignore[no-any-return]

    @property
    def metadata(self) -> EventMetadata:
        value = self._metadata
        if value is _RAW:
            value = EventMetadata.from_json(json.loads(self._stored[7]))
            _set_metadata(self, value)
        return value  # type: ignore[no-any-return]

    @property
    def recorded_at(self) -> datetime:
        value = self._recorded_at
        if value is _RAW:
            value = self._stored[8]
            if isinstance(value, str):
                value = datetime.fromisoformat(value)
            value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
            _set_recorded_at(self, value)
        return value  # type: ignore[no-any-return]

    same_content = RecordedEvent.same_content

    def _values(self) -> tuple[Any, ...]:
        return (
            self.id,
            self.stream_id,
            self.version,
            self.position,
            self.type,
            self.schema_version,
            self.data,
            self.metadata,
            self.recorded_at,
        )

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, _StoredEvent)
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())  # as the dataclass's: a TypeError, data being a dict

    def __repr__(self) -> str:
        values = zip(_FIELDS, self._values(), strict=True)
        return f"RecordedEvent({', '.join(f'{name}={value!r}' for name, value in values)})"

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (self.__class__, self._values())


_new = object.__new__
_slots: dict[str, Any] = dict(vars(_StoredEvent))
_set_stored = _slots["_stored"].__set__
_set_id = _slots["_id"].__set__
_set_data = _slots["_data"].__set__
_set_metadata = _slots["_metadata"].__set__
_set_recorded_at = _slots["_recorded_at"].__set__
_StoredEvent.__name__ = _StoredEvent.__qualname__ = "RecordedEvent"
_StoredEvent.__doc__ = RecordedEvent.__doc__
if not TYPE_CHECKING:
    RecordedEvent = _StoredEvent  # the declaration above is for type checkers


@dataclass(frozen=True, slots=True)
class AppendResult:
    """After an append: the stream's version (pass it as the next ``expected_version``) and
    the global position of the last event written."""

    next_version: int
    position: int


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events a global read or a subscription wants: every listed ``types`` (all when
    empty) and only streams whose id starts with ``stream_prefix`` (all when None)."""

    types: tuple[str, ...] = ()
    stream_prefix: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.types, str):
            object.__setattr__(self, "types", (self.types,))
        else:
            object.__setattr__(self, "types", tuple(self.types))

    @property
    def everything(self) -> bool:
        return not self.types and not self.stream_prefix

    def matches(self, event: RecordedEvent) -> bool:
        if self.types and event.type not in self.types:
            return False
        return not self.stream_prefix or event.stream_id.startswith(self.stream_prefix)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The state of a stream's aggregate at ``version``, in the shape ``schema_version``."""

    stream_id: str
    version: int
    schema_version: int
    state: dict[str, Any]
    taken_at: datetime


def snapshot_due(every: int, before: int, after: int) -> bool:
    """Whether an append that moved a stream from ``before`` to ``after`` crossed a multiple
    of ``every`` (the "snapshot every N events" policy; ``every <= 0`` means never)."""
    return every > 0 and after // every > before // every
