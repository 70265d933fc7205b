"""RecordedEvent as the SQL store builds it (decoded on first use) behaves as the dataclass."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from datetime import UTC, datetime
from uuid import uuid4

import pytest

from medianest.events import EventMetadata, RecordedEvent

AT = datetime(2026, 11, 24, 9, 30, 1, 250000, tzinfo=UTC)
META = EventMetadata(correlation_id="c", user="alice", extra={"k": "v"})


def _pair() -> tuple[RecordedEvent, RecordedEvent]:
    built = RecordedEvent(uuid4(), "s-1", 3, 42, "Done", 2, {"a": [1, 2]}, META, AT)
    stored = RecordedEvent.from_stored(
        (
            42,
            str(built.id),
            "s-1",
            3,
            "Done",
            2,
            '{"a": [1, 2]}',
            '{"correlation_id": "c", "user": "alice", "extra": {"k": "v"}}',
            "2026-11-24 09:30:01.250000",
        )
    )
    return built, stored


def test_a_stored_event_equals_the_built_one_field_by_field() -> None:
    built, stored = _pair()
    assert stored == built
    assert [getattr(stored, f.name) for f in dataclasses.fields(RecordedEvent)] == [
        getattr(built, f.name) for f in dataclasses.fields(RecordedEvent)
    ]
    assert stored.recorded_at.tzinfo is UTC
    assert stored.data is stored.data  # decoded once, then kept
    assert repr(stored) == repr(built)
    assert repr(stored).startswith("RecordedEvent(id=UUID(")
    assert type(stored) is type(built) is RecordedEvent


def test_an_aware_time_from_the_driver_is_normalised_to_utc() -> None:
    from datetime import timedelta, timezone

    local = AT.astimezone(timezone(timedelta(hours=2)))
    stored = RecordedEvent.from_stored((1, str(uuid4()), "s", 1, "T", 1, "{}", "{}", local))
    assert stored.recorded_at == AT
    assert stored.recorded_at.tzinfo is UTC
    assert stored.metadata == EventMetadata()


def test_it_is_frozen_unhashable_and_copies_like_a_dataclass() -> None:
    built, stored = _pair()
    with pytest.raises(dataclasses.FrozenInstanceError):
        stored.type = "Other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        hash(stored)
    assert dataclasses.is_dataclass(stored)
    assert dataclasses.asdict(stored) == dataclasses.asdict(built)
    replaced = dataclasses.replace(stored, type="Other", data={"b": 1})
    assert (replaced.type, replaced.data, replaced.id) == ("Other", {"b": 1}, built.id)
    assert pickle.loads(pickle.dumps(stored)) == built
    assert copy.deepcopy(stored) == built
    assert stored != object()
    assert dataclasses.replace(stored, position=43) != built


def test_it_matches_positionally_like_the_dataclass() -> None:
    _, stored = _pair()
    match stored:
        case RecordedEvent(event_id, stream_id, version):
            assert (event_id, stream_id, version) == (stored.id, "s-1", 3)
        case _:
            pytest.fail("no match")
