"""In-process event store (``memory://``): lists and dicts, for one process and for tests.

Every operation is synchronous inside (no ``await`` between checking and writing), so
appends are atomic and positions are trivially gap-free and in commit order. Nothing
survives the process.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from medianest.events.appending import prepare, replayed
from medianest.events.base import EventStore, check_limit, check_position
from medianest.events.model import (
    AppendResult,
    EventFilter,
    ExpectedVersion,
    NewEvent,
    RecordedEvent,
    Snapshot,
    check_expected,
    check_name,
)
from medianest.events.upcasting import Upcasters


class MemoryEventStore(EventStore):
    """The whole store in memory (module docstring)."""

    def __init__(self, *, upcasters: Upcasters | None = None) -> None:
        super().__init__(upcasters=upcasters)
        self._log: list[RecordedEvent] = []
        self._streams: dict[str, list[RecordedEvent]] = {}
        self._by_id: dict[UUID, RecordedEvent] = {}
        self._snapshots: dict[str, Snapshot] = {}
        self._checkpoints: dict[str, int] = {}

    @classmethod
    def from_url(
        cls, url: str, *, upcasters: Upcasters | None = None, **_options: Any
    ) -> MemoryEventStore:
        return cls(upcasters=upcasters)

    def __repr__(self) -> str:
        return f"MemoryEventStore({len(self._log)} events)"

    async def start(self) -> None:
        self._signal.reopen()

    async def close(self) -> None:
        self._signal.close()

    async def append(
        self, stream_id: str, events: Sequence[NewEvent], expected_version: ExpectedVersion
    ) -> AppendResult:
        prepared = prepare(stream_id, events, expected_version)
        stream = self._streams.get(stream_id, [])
        stored = {
            p.event.id: self._by_id[p.event.id] for p in prepared if p.event.id in self._by_id
        }
        if stored:
            return replayed(stream_id, prepared, expected_version, stored, len(stream))
        check_expected(stream_id, expected_version, len(stream))
        now = datetime.now(UTC)
        for item in prepared:
            recorded = RecordedEvent(
                id=item.event.id,
                stream_id=stream_id,
                version=len(stream) + 1,
                position=len(self._log) + 1,
                type=item.event.type,
                schema_version=item.event.schema_version,
                data=item.data,
                metadata=item.metadata,
                recorded_at=now,
            )
            stream.append(recorded)
            self._log.append(recorded)
            self._by_id[recorded.id] = recorded
        self._streams[stream_id] = stream
        self._signal.notify()
        return AppendResult(next_version=len(stream), position=len(self._log))

    async def read_stream(
        self,
        stream_id: str,
        from_version: int | None = None,
        limit: int | None = None,
        backwards: bool = False,
    ) -> list[RecordedEvent]:
        check_name("stream_id", stream_id)
        check_position("from_version", from_version, optional=True)
        limit = check_limit(limit)
        stream = self._streams.get(stream_id, [])
        if backwards:
            top = len(stream) if from_version is None else min(from_version, len(stream))
            chosen = stream[:top][::-1]
        else:
            chosen = stream[max((from_version or 1) - 1, 0) :]
        if limit is not None:
            chosen = chosen[:limit]
        return [self.upcasters.apply(_copy(event)) for event in chosen]

    async def read_all(
        self,
        from_position: int = 0,
        limit: int | None = None,
        filter: EventFilter | None = None,
    ) -> list[RecordedEvent]:
        check_position("from_position", from_position)
        limit = check_limit(limit)
        event_filter = filter or EventFilter()
        out: list[RecordedEvent] = []
        if limit == 0:
            return out
        for event in self._log[from_position:]:
            if event_filter.matches(event):
                out.append(self.upcasters.apply(_copy(event)))
                if limit is not None and len(out) >= limit:
                    break
        return out

    async def head_position(self) -> int:
        return len(self._log)

    async def stream_version(self, stream_id: str) -> int:
        return len(self._streams.get(check_name("stream_id", stream_id), []))

    async def save_snapshot(
        self, stream_id: str, version: int, schema_version: int, state: dict[str, object]
    ) -> None:
        copied = self._check_snapshot(stream_id, version, schema_version, state)
        current = self._snapshots.get(stream_id)
        if current is not None and current.version > version:
            return
        self._snapshots[stream_id] = Snapshot(
            stream_id, version, schema_version, copied, datetime.now(UTC)
        )

    async def load_snapshot(
        self, stream_id: str, schema_version: int | None = None
    ) -> Snapshot | None:
        snapshot = self._snapshots.get(check_name("stream_id", stream_id))
        if snapshot is None or (
            schema_version is not None and snapshot.schema_version != schema_version
        ):
            return None
        return dataclasses.replace(snapshot, state=copy.deepcopy(snapshot.state))

    async def save_checkpoint(self, name: str, position: int) -> None:
        check_position("position", position)
        self._checkpoints[check_name("name", name)] = position

    async def load_checkpoint(self, name: str) -> int:
        return self._checkpoints.get(check_name("name", name), 0)


def _copy(event: RecordedEvent) -> RecordedEvent:
    """``event`` with its own ``data``: a reader changing it must not change the log."""
    return dataclasses.replace(event, data=copy.deepcopy(event.data))
