"""The saga orchestrator: starts sagas, recovers the incomplete ones, lists and retries them.

State lives only in the event store (:mod:`.records`), so any hub process can take over any
saga. Who drives a saga at a given moment is decided by a **lease per saga**,
``saga:<id>`` (:mod:`medianest.events.leases`): :meth:`SagaOrchestrator.start` takes it
before the saga's first event, every driver renews it while it works, and
:meth:`~SagaOrchestrator.recover` drives only the sagas whose lease it can take. So two
orchestrators recovering at once (two ``workers`` instances) never drive one saga together;
should a stalled holder overlap with its successor anyway, the stream version on each
append fences the stale one off (:mod:`.driver`).

**Recovery** (:meth:`~SagaOrchestrator.recover`, at start-up and every ``interval`` in
:meth:`~SagaOrchestrator.run`) scans the global log for saga *lifecycle* events -- from
where its previous scan stopped, so a scan costs only what is new -- and keeps an index of
every saga's state. Each ``running`` or ``compensating`` saga that nobody holds is loaded
from its stream and driven on (:mod:`.driver` explains how it decides between continuing
and compensating). A retry request (``medianest sagas retry``, the admin API) wakes the
loop at once.

``compensation_failed`` sagas are left alone until :meth:`~SagaOrchestrator.retry` (or
:func:`request_retry`, which needs no saga definitions) records a retry request.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import copy
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any, TypeVar

from medianest.errors import ConcurrencyError, MediaNestError, NotFoundError, ValidationError
from medianest.events.base import EventStore
from medianest.events.leases import Leases, default_owner, leases_for
from medianest.events.model import NO_STREAM, EventFilter, EventMetadata, NewEvent, json_object
from medianest.observability.logging import get_logger
from medianest.sagas import records as R
from medianest.sagas.base import SagaDefinition, SagaState, check_saga_name
from medianest.sagas.driver import SagaDriver
from medianest.sagas.records import SagaRecord, SagaSummary, load, request_retry

_log = get_logger("medianest.sagas")
T = TypeVar("T")
_SCAN_BATCH = 500


class SagaOrchestrator:
    """Runs sagas of the given definitions (module docstring).

    ``owner`` names this instance in the leases (unique per process by default);
    ``lease_ttl`` is how long a saga stays claimed when its driver stops renewing;
    ``concurrency`` bounds how many sagas one recovery drives at once.
    """

    def __init__(
        self,
        store: EventStore,
        definitions: Iterable[SagaDefinition],
        *,
        owner: str | None = None,
        lease_ttl: float = 30.0,
        leases: Leases | None = None,
        concurrency: int = 8,
    ) -> None:
        self.store = store
        self.definitions: dict[str, SagaDefinition] = {}
        for definition in definitions:
            if definition.name in self.definitions:
                raise ValidationError(f"two saga definitions named {definition.name!r}")
            self.definitions[definition.name] = definition
        self.owner = owner or default_owner()
        self.lease_ttl = lease_ttl
        self.leases = leases or leases_for(store)
        self._limit = asyncio.Semaphore(concurrency)
        self._index: dict[str, SagaSummary] = {}
        self._scanned = 0
        self._active: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()

    def __repr__(self) -> str:
        return f"SagaOrchestrator({sorted(self.definitions)}, owner={self.owner!r})"

    def definition(self, name: str) -> SagaDefinition:
        found = self.definitions.get(name)
        if found is None:
            raise NotFoundError(f"no saga definition {name!r}", definition=name)
        return found

    # -- starting, retrying, reading ------------------------------------------------------

    async def start(
        self,
        definition_name: str,
        saga_id: str,
        input: Mapping[str, Any] | None = None,
        *,
        metadata: EventMetadata | None = None,
        wait: bool = True,
    ) -> SagaRecord:
        """Record ``SagaStarted`` and drive the saga to its end; its final record.

        Without ``wait`` the saga is driven in the background and the record just after
        ``SagaStarted`` is returned: the saga is durable then (recovery finishes it should
        this process stop), which is what an API answering 202 needs.
        :class:`~medianest.errors.ConcurrencyError` when a saga with this id exists.
        """
        definition = self.definition(definition_name)
        check_saga_name("saga id", saga_id)
        data = {
            "definition": definition.name,
            "input": json_object("input", input or {}),
            "steps": [step.name for step in definition.steps],
        }
        meta = metadata or EventMetadata(correlation_id=saga_id)
        started: asyncio.Future[SagaRecord] = asyncio.get_running_loop().create_future()

        async def first() -> SagaRecord:
            event = NewEvent(R.SAGA_STARTED, data, metadata=meta)
            try:
                await self.store.append(R.stream_of(saga_id), [event], NO_STREAM)
            except ConcurrencyError:
                raise ConcurrencyError(f"saga {saga_id!r} exists already") from None
            record = await load(self.store, saga_id)
            started.set_result(copy.deepcopy(record))
            return await SagaDriver(self.store, definition, record).run()

        if wait:
            record = await self._leased(saga_id, first)
        else:
            task = asyncio.create_task(
                self._leased(saga_id, first), name=f"medianest-saga-{saga_id}"
            )
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            task.add_done_callback(_log_failure)
            either: list[asyncio.Future[Any]] = [started, task]
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            if started.done():
                return started.result()
            record = task.result()
        if record is None:
            raise ConcurrencyError(f"saga {saga_id!r} is being driven by another instance")
        return record

    async def retry(self, saga_id: str, *, by: str = "", wait: bool = True) -> SagaRecord:
        """Resume compensation of a ``compensation_failed`` saga (after the fault was fixed).

        With ``wait`` the saga is driven here and its final record returned; without, it is
        driven in the background and the record just after the request is returned.
        """
        record = await request_retry(self.store, saga_id, by=by)
        if not wait:
            task = asyncio.create_task(self._drive(saga_id), name=f"medianest-saga-{saga_id}")
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            return record
        driven = await self._drive(saga_id)
        return driven if driven is not None else await load(self.store, saga_id)

    async def show(self, saga_id: str) -> SagaRecord:
        """Everything recorded about one saga; :class:`NotFoundError` when unknown."""
        return await load(self.store, saga_id)

    async def list(self, state: SagaState | None = None, limit: int = 100) -> list[SagaSummary]:
        """Sagas (newest first), optionally only those in ``state``."""
        await self._scan()
        found = [s for s in self._index.values() if state is None or s.state is state]
        found.sort(key=lambda s: s.started_at, reverse=True)
        return found[:limit]

    # -- recovery -------------------------------------------------------------------------

    async def recover(self) -> builtins.list[str]:
        """Drive every incomplete saga whose lease this instance can take; their ids.

        A saga that fails to be driven (a database outage, a lost lease, an unknown
        definition) is logged and left for the next recovery.
        """
        await self._scan()
        waiting = [
            saga_id
            for saga_id, summary in self._index.items()
            if summary.state.incomplete and saga_id not in self._active
        ]
        driven: list[str] = []

        async def one(saga_id: str) -> None:
            async with self._limit:
                try:
                    if await self._drive(saga_id) is not None:
                        driven.append(saga_id)
                except Exception as exc:
                    error = f"{type(exc).__name__}: {exc}"
                    _log.warning("saga recovery failed", saga_id=saga_id, error=error)

        async with asyncio.TaskGroup() as group:
            for saga_id in sorted(waiting):
                group.create_task(one(saga_id))
        return sorted(driven)

    async def run(self, interval: float = 10.0) -> None:
        """Recover now and then every ``interval`` seconds (at once on a retry request)."""
        while True:
            try:
                await self.recover()
            except Exception as exc:
                _log.warning("saga recovery pass failed", error=f"{type(exc).__name__}: {exc}")
            if not await self._wait_for_retry_request(interval):
                return

    async def start_recovery(self, interval: float = 10.0) -> None:
        """Run :meth:`run` in a background task (the ``workers`` role)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(interval), name="medianest-saga-recovery")

    async def close(self) -> None:
        """Stop recovering and driving; sagas stopped midway are resumed by recovery."""
        tasks = [t for t in (self._task, *self._background) if t is not None]
        self._task = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _wait_for_retry_request(self, interval: float) -> bool:
        """Until a retry request is appended or ``interval`` passed; False: store closed."""
        wake = EventFilter(types=(R.COMPENSATION_RETRY_REQUESTED,), stream_prefix=R.STREAM_PREFIX)
        subscription = self.store.subscribe(self._scanned, wake, batch_size=1)
        try:
            async with asyncio.timeout(interval):
                await anext(subscription)
        except TimeoutError:
            pass
        except StopAsyncIteration:
            return False
        finally:
            await subscription.aclose()
        return True

    async def _scan(self) -> None:
        """Bring the index up to date with the lifecycle events appended since last time."""
        lifecycle = EventFilter(types=R.LIFECYCLE, stream_prefix=R.STREAM_PREFIX)
        while True:
            head = await self.store.head_position()
            batch = await self.store.read_all(self._scanned, limit=_SCAN_BATCH, filter=lifecycle)
            for event in batch:
                R.summarise(self._index, event)
            if batch:
                self._scanned = batch[-1].position
            if len(batch) < _SCAN_BATCH:
                self._scanned = max(self._scanned, head)
                return

    async def _drive(self, saga_id: str) -> SagaRecord | None:
        """Drive one stored saga under its lease to its end; None when another instance
        holds it or it turned out to be finished already (someone else drove it)."""

        async def drive() -> tuple[SagaRecord, bool]:
            record = await load(self.store, saga_id)
            if not record.state.incomplete:
                return record, False
            driver = SagaDriver(self.store, self.definition(record.definition), record)
            return await driver.run(), True

        outcome = await self._leased(saga_id, drive)
        if outcome is None:
            return None
        record, advanced = outcome
        summary = self._index.get(saga_id)
        if summary is not None:
            summary.state, summary.updated_at = record.state, record.updated_at
        return record if advanced else None

    async def _leased(self, saga_id: str, work: Callable[[], Coroutine[Any, Any, T]]) -> T | None:
        """``work()`` while holding (and renewing) lease ``saga:<id>``; None when another
        instance holds it. Losing the lease midway cancels ``work`` and raises
        ConcurrencyError (the saga then looks crashed to its next driver)."""
        if saga_id in self._active:
            return None
        name = f"saga:{saga_id}"
        if not await self.leases.acquire(name, self.owner, self.lease_ttl):
            return None
        self._active.add(saga_id)
        task: asyncio.Task[T] = asyncio.create_task(work(), name=f"medianest-saga-{saga_id}")
        lost = asyncio.Event()
        keeper = asyncio.create_task(self._keep(name, task, lost))
        try:
            return await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if lost.is_set() and (current is None or not current.cancelling()):
                raise ConcurrencyError(f"saga {saga_id!r}: lease lost midway") from None
            raise
        finally:
            keeper.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            self._active.discard(saga_id)
            with contextlib.suppress(MediaNestError):
                await self.leases.release(name, self.owner)

    async def _keep(self, name: str, task: asyncio.Task[Any], lost: asyncio.Event) -> None:
        """Renew lease ``name`` every third of its ttl; cancel ``task`` once it is lost
        (refused, or not renewed for a whole ttl because the database failed)."""
        renewed = time.monotonic()
        while True:
            await asyncio.sleep(self.lease_ttl / 3)
            try:
                held = await self.leases.renew(name, self.owner, self.lease_ttl)
            except MediaNestError as exc:
                _log.warning("saga lease renewal failed", lease=name, error=str(exc))
                held = time.monotonic() - renewed < self.lease_ttl
            else:
                renewed = time.monotonic() if held else renewed
            if not held:
                lost.set()
                task.cancel()
                return


def _log_failure(task: asyncio.Task[Any]) -> None:
    """Log how a saga driven in the background stopped early (recovery resumes it)."""
    if task.cancelled() or task.exception() is None:
        return
    error = task.exception()
    _log.warning(
        "saga driver stopped", task=task.get_name(), error=f"{type(error).__name__}: {error}"
    )
