"""The saga orchestrator on every event store: the happy path, retries then compensation in
reverse order, crashes resolved through idempotency keys, compensation that keeps failing,
and two orchestrators recovering at once."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from medianest.database import Database, upgrade
from medianest.errors import ConcurrencyError, NotFoundError, ValidationError
from medianest.events import NO_STREAM, EventStore, NewEvent
from medianest.events.backends.sql import SqlEventStore
from medianest.events.leases import SqlLeases, leases_for
from medianest.sagas import SagaOrchestrator, SagaState
from tests.sagas.ledger import FileLedger, Ledger
from tests.support.event_stores import ROWS, StoreUnderTest
from tests.support.wallclock import Clock

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=sorted(ROWS))
async def subject(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreUnderTest]:
    async with ROWS[request.param].make(tmp_path, None) as made:
        yield made


@pytest.fixture
def ledger() -> Ledger:
    return Ledger()


async def types_of(store: EventStore, saga_id: str) -> list[str]:
    return [event.type for event in await store.read_stream(f"saga-{saga_id}")]


async def test_the_happy_path_runs_every_step_once(subject: StoreUnderTest, ledger: Ledger) -> None:
    store = subject.store
    sagas = SagaOrchestrator(store, [ledger.definition()], owner="one")
    record = await sagas.start("order", "s1", {"movie": 603})

    assert record.state is SagaState.COMPLETED
    assert ledger.applied == {"s1:a": 1, "s1:b": 1, "s1:c": 1}
    assert ledger.seen_results["s1:c"] == ["a", "b"], "later steps see earlier results"
    assert await types_of(store, "s1") == [
        "SagaStarted",
        *["StepStarted", "StepCompleted"] * 3,
        "SagaCompleted",
    ]
    shown = await sagas.show("s1")
    assert shown.input == {"movie": 603}
    assert [(s.name, s.status, s.attempts) for s in shown.steps] == [
        ("a", "completed", 1),
        ("b", "completed", 1),
        ("c", "completed", 1),
    ]
    assert shown.results["b"] == {"step": "b", "ref": "ref-s1:b"}
    [listed] = await sagas.list()
    assert (listed.id, listed.definition, listed.state) == ("s1", "order", SagaState.COMPLETED)
    assert await sagas.recover() == []
    started = await store.read_stream("saga-s1", limit=1)
    assert started[0].metadata.correlation_id == "s1"


async def test_a_failing_step_is_retried_then_compensated_in_reverse_order(
    subject: StoreUnderTest, ledger: Ledger
) -> None:
    sagas = SagaOrchestrator(subject.store, [ledger.definition(attempts=3)], owner="one")
    ledger.failures["c"] = 99
    record = await sagas.start("order", "s2")

    assert record.state is SagaState.COMPENSATED
    assert ledger.calls["s2:c"] == 3, "three attempts before giving up"
    assert ledger.undo_calls == ["c", "b", "a"], "reverse order, the failed step first"
    assert ledger.undone == {"s2:a": 1, "s2:b": 1}, "c never took effect: nothing to undo"
    types = await types_of(subject.store, "s2")
    assert types.count("StepFailed") == 3
    assert types[-5:] == [
        "CompensationStarted",
        "StepCompensated",
        "StepCompensated",
        "StepCompensated",
        "SagaCompensated",
    ]
    failed = [e.data for e in await subject.store.read_stream("saga-s2") if e.type == "StepFailed"]
    assert [f["retrying"] for f in failed] == [True, True, False]
    assert failed[0]["error"] == "OSError: c failed (attempt 1)"
    assert (record.failed_step, record.error) == ("c", "OSError: c failed (attempt 3)")


async def test_a_transient_failure_is_retried_and_the_saga_goes_on(
    subject: StoreUnderTest, ledger: Ledger
) -> None:
    sagas = SagaOrchestrator(subject.store, [ledger.definition()], owner="one")
    ledger.failures["b"] = 2
    record = await sagas.start("order", "s3")
    assert record.state is SagaState.COMPLETED
    assert (ledger.calls["s3:b"], ledger.applied["s3:b"]) == (3, 1)
    assert record.steps[1].attempts == 3


async def test_a_permanent_failure_is_not_retried(subject: StoreUnderTest, ledger: Ledger) -> None:
    sagas = SagaOrchestrator(subject.store, [ledger.definition()], owner="one")
    ledger.failures["b"] = 1
    ledger.errors["b"] = ValidationError
    record = await sagas.start("order", "s4")
    assert record.state is SagaState.COMPENSATED
    assert ledger.calls["s4:b"] == 1
    assert ledger.undo_calls == ["b", "a"]


async def test_a_stalled_driver_is_replaced_and_the_step_happens_once(
    subject: StoreUnderTest, ledger: Ledger
) -> None:
    """The first orchestrator stalls inside step b after its effect (a process that hangs or
    dies); once its lease has expired a second one resumes the saga: b runs again with the
    same key, takes effect once, and the saga completes. When the stalled one wakes up, the
    stream version refuses its late append."""
    clock = Clock()
    leases = leases_for(subject.store, clock=clock)
    ledger.gates["b"] = gate = asyncio.Event()
    stalled = SagaOrchestrator(subject.store, [ledger.definition()], owner="a", leases=leases)
    first = asyncio.create_task(stalled.start("order", "s5"))
    await ledger.wait_for(lambda: ledger.applied["s5:b"] == 1)
    assert (await stalled.show("s5")).steps[1].status == "started", "in doubt"

    peer = subject.open_peer() if subject.open_peer else contextlib.nullcontext(subject.store)
    async with peer as other_store:
        same = other_store is subject.store
        other_leases = leases if same else leases_for(other_store, clock=clock)
        successor = SagaOrchestrator(
            other_store, [ledger.definition()], owner="b", leases=other_leases
        )
        assert await successor.recover() == [], "the lease of the stalled driver still holds"
        del ledger.gates["b"]
        clock.advance(31)
        assert await successor.recover() == ["s5"]
        record = await successor.show("s5")

    assert record.state is SagaState.COMPLETED
    assert ledger.applied == {"s5:a": 1, "s5:b": 1, "s5:c": 1}, "each effect exactly once"
    assert ledger.calls["s5:b"] == 2
    keys = [
        e.data["idempotency_key"]
        for e in await subject.store.read_stream("saga-s5")
        if e.type == "StepStarted" and e.data["step"] == "b"
    ]
    assert keys == ["s5:b", "s5:b"]

    gate.set()
    with pytest.raises(ConcurrencyError):
        await first
    assert (await stalled.show("s5")).version == record.version, "the late append was refused"


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
async def test_a_process_killed_mid_step_is_recovered_by_another(
    dialect: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if dialect == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
        holder: contextlib.AbstractAsyncContextManager[str] = contextlib.nullcontext(url)
    else:
        from tests.support.postgres import fresh_database
        from tests.support.services import require_service

        holder = fresh_database(require_service("postgres"))
    async with holder as db_url:
        async with Database(db_url) as db:
            await upgrade(db)
        ledger_dir = tmp_path / "ledger"
        ledger_dir.mkdir()
        worker = subprocess.Popen(  # noqa: ASYNC220 - killed below, never waited on blocking
            [sys.executable, "-m", "tests.sagas.crash_worker", db_url, str(ledger_dir), "k1"],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        try:
            async with asyncio.timeout(30):
                while not (ledger_dir / "hanging").exists():
                    assert worker.poll() is None, "the worker ended early"
                    await asyncio.sleep(0.05)
        finally:
            worker.send_signal(signal.SIGKILL)
            await asyncio.to_thread(worker.wait)
        assert worker.returncode == -signal.SIGKILL

        ledger = FileLedger(ledger_dir)
        async with Database(db_url) as db, SqlEventStore(db) as store:
            clock = Clock(datetime.now(UTC) + timedelta(seconds=31))
            sagas = SagaOrchestrator(
                store, [ledger.definition()], owner="survivor", leases=SqlLeases(db, clock=clock)
            )
            assert (await sagas.show("k1")).steps[1].status == "started"
            assert await sagas.recover() == ["k1"]
            assert (await sagas.show("k1")).state is SagaState.COMPLETED
    assert ledger.lines("applied.log") == {"k1:a": 1, "k1:b": 1, "k1:c": 1}
    assert ledger.lines("calls.log")["k1:b"] == 2


async def test_a_compensation_that_keeps_failing_waits_for_a_retry(
    subject: StoreUnderTest, ledger: Ledger
) -> None:
    sagas = SagaOrchestrator(subject.store, [ledger.definition(undo_attempts=2)], owner="one")
    ledger.failures["b"] = 1
    ledger.errors["b"] = ValidationError
    ledger.undo_failing.add("a")
    record = await sagas.start("order", "s6")

    assert record.state is SagaState.COMPENSATION_FAILED
    assert ledger.undo_calls == ["b", "a", "a"]
    [listed] = await sagas.list(SagaState.COMPENSATION_FAILED)
    assert (listed.id, listed.step, listed.error) == ("s6", "a", "RuntimeError: cannot undo a")
    shown = await sagas.show("s6")
    assert (shown.failed_step, shown.error) == ("a", "RuntimeError: cannot undo a")
    assert shown.steps[0].compensation_error == "RuntimeError: cannot undo a"
    assert await sagas.recover() == [], "recovery leaves it for a person"
    with pytest.raises(NotFoundError):
        await sagas.retry("s6-none")

    ledger.undo_failing.clear()
    retried = await sagas.retry("s6", by="admin")
    assert retried.state is SagaState.COMPENSATED
    assert ledger.undo_calls == ["b", "a", "a", "a"]
    assert ledger.undone == {"s6:a": 1}
    assert [s.state for s in await sagas.list()] == [SagaState.COMPENSATED]
    with pytest.raises(ValidationError, match="s6' is compensated"):
        await sagas.retry("s6")


async def test_two_orchestrators_recovering_at_once_drive_each_saga_once(
    subject: StoreUnderTest, ledger: Ledger
) -> None:
    ids = [f"r{n}" for n in range(6)]
    for saga_id in ids:
        started = NewEvent(
            "SagaStarted", {"definition": "order", "input": {}, "steps": ["a", "b", "c"]}
        )
        await subject.store.append(f"saga-{saga_id}", [started], NO_STREAM)
    ledger.gates["a"] = gate = asyncio.Event()
    peer = subject.open_peer() if subject.open_peer else contextlib.nullcontext(subject.store)
    async with peer as other_store:
        first = SagaOrchestrator(subject.store, [ledger.definition()], owner="first")
        second = SagaOrchestrator(other_store, [ledger.definition()], owner="second")
        both = asyncio.gather(first.recover(), second.recover())
        await ledger.wait_for(lambda: sum(ledger.calls.values()) == len(ids))
        gate.set()
        by_first, by_second = await both

    assert not set(by_first) & set(by_second), "no saga driven by both"
    assert sorted(by_first + by_second) == ids
    for saga_id in ids:
        assert (await first.show(saga_id)).state is SagaState.COMPLETED
        for step in "abc":
            assert ledger.calls[f"{saga_id}:{step}"] == 1
            assert ledger.applied[f"{saga_id}:{step}"] == 1


async def test_a_step_left_in_doubt_too_often_fails_for_good(ledger: Ledger) -> None:
    from medianest.events.backends.memory import MemoryEventStore

    store = MemoryEventStore()
    events = [
        NewEvent("SagaStarted", {"definition": "order", "input": {}, "steps": ["a", "b"]}),
        *[
            NewEvent(
                "StepStarted", {"step": "a", "index": 0, "attempt": n, "idempotency_key": "d:a"}
            )
            for n in (1, 2, 3, 4)
        ],
    ]
    await store.append("saga-d", events, NO_STREAM)
    sagas = SagaOrchestrator(store, [ledger.definition(steps=("a", "b"), attempts=3)])
    assert await sagas.recover() == ["d"]
    record = await sagas.show("d")
    assert record.state is SagaState.COMPENSATED
    assert "left in doubt 4 times" in (record.error or "")
    assert ledger.calls["d:a"] == 0
    assert ledger.undo_calls == ["a"]


async def test_start_refuses_unknown_definitions_and_reused_ids(ledger: Ledger) -> None:
    from medianest.events.backends.memory import MemoryEventStore

    sagas = SagaOrchestrator(MemoryEventStore(), [ledger.definition()])
    with pytest.raises(NotFoundError, match="no saga definition 'nope'"):
        await sagas.start("nope", "x")
    with pytest.raises(ValidationError, match="saga id"):
        await sagas.start("order", "bad id!")
    await sagas.start("order", "x")
    with pytest.raises(ConcurrencyError, match="exists already"):
        await sagas.start("order", "x")
    with pytest.raises(NotFoundError, match="no saga 'y'"):
        await sagas.show("y")
