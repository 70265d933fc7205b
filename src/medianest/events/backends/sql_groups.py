"""How the SQL event store turns queued appends into transactions (group commit).

An append waits as a :class:`Pending`; the store's writer takes a group of them into one
transaction, where :func:`make_plan` checks each against the streams as the ones before it
in the group left them and decides which are written, which are answered without writing
(a replayed retry, a wrong expected version) and which wait for the next transaction.
:func:`commit_sync` is that transaction for the SQLite writer's thread
(:mod:`.sql_sqlite`); the async one is in :mod:`.sql`. Both write with the helpers below, so
they decide and answer alike.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from uuid import UUID

from medianest.errors import ValidationError, WrongExpectedVersion
from medianest.events.appending import PreparedEvent, replayed
from medianest.events.backends import sql_raw, sql_sqlite
from medianest.events.model import AppendResult, ExpectedVersion, RecordedEvent, check_expected


class Pending:
    """An append waiting for the store's writer, and its caller's future."""

    __slots__ = ("batch", "expected", "future", "stream_id")

    def __init__(
        self, stream_id: str, batch: list[PreparedEvent], expected: ExpectedVersion
    ) -> None:
        self.stream_id = stream_id
        self.batch = batch
        self.expected = expected
        self.future: asyncio.Future[AppendResult] = asyncio.get_running_loop().create_future()

    def settle(self, outcome: AppendResult | BaseException) -> None:
        if not self.future.done():
            if isinstance(outcome, AppendResult):
                self.future.set_result(outcome)
            else:
                self.future.set_exception(outcome)


Outcome = AppendResult | ValidationError | WrongExpectedVersion


@dataclass
class Plan:
    """What one transaction does with a group: the appends it writes (each with its
    stream's version before it), the answers decided without writing (replays, refusals),
    and the appends left for the next transaction (they reuse an id of an earlier append
    of the group: as a retry, they must find it stored)."""

    written: list[tuple[Pending, int]] = field(default_factory=list)
    answered: list[tuple[Pending, Outcome]] = field(default_factory=list)
    deferred: list[Pending] = field(default_factory=list)
    versions: dict[str, int] = field(default_factory=dict)


def make_plan(
    group: list[Pending], versions: dict[str, int], stored: dict[UUID, RecordedEvent] | None
) -> Plan | None:
    """Check the group's appends in order against the stream ``versions`` (each sees the
    ones before it). ``stored`` are the already stored events among the group's ids; None
    when they were not looked up, and then None is returned if an expected version does not
    fit: that append may be a retry of one that went through, so the ids must be looked up."""
    plan = Plan(versions=dict(versions))
    taken: set[UUID] = set()
    for item in group:
        ids = {prepared.event.id for prepared in item.batch}
        if not taken.isdisjoint(ids):
            plan.deferred.append(item)
            continue
        current = plan.versions.get(item.stream_id, 0)
        try:
            if stored is not None and not stored.keys().isdisjoint(ids):
                result = replayed(item.stream_id, item.batch, item.expected, stored, current)
                plan.answered.append((item, result))
                continue
            check_expected(item.stream_id, item.expected, current)
        except WrongExpectedVersion as exc:
            if stored is None:
                return None
            plan.answered.append((item, exc))
            continue
        except ValidationError as exc:
            plan.answered.append((item, exc))
            continue
        plan.versions[item.stream_id] = current + len(item.batch)
        taken.update(ids)
        plan.written.append((item, current))
    return plan


def stream_changes(plan: Plan, existing: set[str]) -> tuple[dict[str, int], dict[str, int]]:
    """The stream rows the plan creates and those it moves, with their new versions."""
    streams = {item.stream_id for item, _ in plan.written}
    created = {s: plan.versions[s] for s in streams - existing}
    moved = {s: plan.versions[s] for s in streams & existing}
    return created, moved


def written_count(plan: Plan) -> int:
    return sum(len(item.batch) for item, _ in plan.written)


def segments(plan: Plan) -> list[sql_raw.Segment]:
    return [(item.stream_id, item.batch, current + 1) for item, current in plan.written]


def answer_written(plan: Plan, position: int) -> None:
    """Answer the written appends, the first one's events from ``position`` on."""
    for item, current in plan.written:
        position += len(item.batch)
        plan.answered.append((item, AppendResult(current + len(item.batch), position - 1)))


def commit_sync(group: list[Pending], look_up_ids: bool, tx: sql_sqlite.Transaction) -> Plan:
    """:meth:`SqlEventStore._commit_once` in the SQLite writer's thread, on ``tx``."""
    versions = tx.stream_versions([item.stream_id for item in group])
    plan = None if look_up_ids else make_plan(group, versions, None)
    if plan is None:
        ids = [prepared.event.id for item in group for prepared in item.batch]
        plan = make_plan(group, versions, tx.events_by_ids(ids))
        assert plan is not None
    if plan.written:
        tx.set_stream_versions(*stream_changes(plan, set(versions)))
        position = tx.claim_positions(written_count(plan))
        tx.insert_events(segments(plan), position, datetime.now(UTC))
        answer_written(plan, position)
    return plan


Commit = Callable[
    [list[Pending], bool], Awaitable[tuple[list[tuple[Pending, Outcome]], list[Pending]]]
]
"""Commits a group (``look_up_ids``): the answers and the appends left for the next one."""
