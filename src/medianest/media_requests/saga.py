"""The ``request-media`` saga: one person's request for a movie or a show, end to end.

================== ====================================== ===============================
step               action                                 compensation
================== ====================================== ===============================
reserve_quota      take a place in the person's quota     give the place back
                   (:mod:`.quota`; admins are exempt)
create_in_overseerr find the title's request in Overseerr  delete the request, if this
                   or make it (:mod:`.upstream`)          saga made it (404 = done)
record_request     ``MediaRequested`` + ``RequestSubmitted`` mark the request failed
                   (+ ``RequestApproved`` when Overseerr
                   approved it) on ``request-<id>``
publish_created    append ``RequestCreated``, which the   none (it is the last step)
                   outbox relay publishes as
                   ``request.created``
================== ====================================== ===============================

**Idempotent per key**, as :mod:`medianest.sagas.base` requires: the quota reservation is
keyed by the step's idempotency key; the Overseerr request is looked up (and its ledger
read) before anything is created; ``record_request`` does nothing when the request's stream
exists already; ``RequestCreated`` carries an event id derived from the step's key, so the
store recognises a repeated append and writes it once.

**Why an event, not a broker publish.** ``publish_created`` only appends to the event
store; the outbox relay (:mod:`medianest.events.outbox`) publishes it, at least once, with
the event id as message id (consumers drop duplicates). A broker outage therefore delays
the notification instead of failing -- and compensating -- a request Overseerr accepted.

Failures worth a second attempt (connection errors, timeouts, 5xx, 429, a database hiccup,
a lost race on a stream) are retried three times; anything else (quota used up, a title
TMDB does not know, nothing left to request) compensates at once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any
from uuid import UUID, uuid5

from medianest.config.requests import RequestsSettings
from medianest.errors import BackendError, ConcurrencyError
from medianest.events.aggregates import Repository
from medianest.events.base import EventStore
from medianest.events.model import ANY, EventMetadata, NewEvent
from medianest.events.requests import MediaRequest
from medianest.integrations.models import MediaType
from medianest.integrations.overseerr import OverseerrAdapter
from medianest.media_requests.hooks import SagaHooks
from medianest.media_requests.quota import QuotaLedger
from medianest.media_requests.upstream import OverseerrRequests, Wanted
from medianest.resilience.retry import Retry, is_retryable
from medianest.sagas.base import SagaDefinition, Step, StepContext
from medianest.sagas.records import load

REQUEST_MEDIA = "request-media"
REQUEST_CREATED = "RequestCreated"
_EVENT_IDS = UUID("5f0c3a52-0d0e-4a8e-9a57-6d2f1c1e7b31")
"""Namespace of the uuid5 event ids derived from idempotency keys."""


def saga_id_for(request_id: str) -> str:
    """The id of the saga that makes request ``request_id``."""
    return f"{REQUEST_MEDIA}-{request_id}"


@dataclass(frozen=True)
class RequestInput:
    """The saga's input (``SagaStarted.input``): who asks for what."""

    request_id: str
    user_id: str
    media_type: MediaType
    tmdb_id: int
    seasons: tuple[int, ...] = ()
    quota_exempt: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "user_id": self.user_id,
            "media_type": self.media_type.value,
            "tmdb_id": self.tmdb_id,
            "seasons": list(self.seasons),
            "quota_exempt": self.quota_exempt,
        }

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> RequestInput:
        return cls(
            request_id=str(data["request_id"]),
            user_id=str(data["user_id"]),
            media_type=MediaType(data["media_type"]),
            tmdb_id=int(data["tmdb_id"]),
            seasons=tuple(int(s) for s in data.get("seasons") or ()),
            quota_exempt=bool(data.get("quota_exempt")),
        )

    @property
    def wanted(self) -> Wanted:
        return Wanted(self.media_type, self.tmdb_id, self.seasons)


def _worth_retrying(exc: BaseException) -> bool:
    return is_retryable(exc) or isinstance(exc, BackendError | ConcurrencyError)


def step_retry() -> Retry:
    """Three attempts, 0.1 s doubling to 5 s, on transient upstream and database failures."""
    return Retry(3, base_delay=0.1, max_delay=5.0, retry_on=_worth_retrying, name=REQUEST_MEDIA)


class RequestMediaSteps:
    """The actions and compensations of the saga (module docstring)."""

    def __init__(
        self,
        store: EventStore,
        overseerr: Callable[[], OverseerrAdapter],
        settings: RequestsSettings,
    ) -> None:
        self.store = store
        self.settings = settings
        self.quota = QuotaLedger(store)
        self.upstream = OverseerrRequests(store, overseerr)
        self.requests: Repository[MediaRequest] = Repository(store, MediaRequest)

    @staticmethod
    def _meta(ctx: StepContext, request: RequestInput) -> EventMetadata:
        return EventMetadata(correlation_id=ctx.saga_id, user=request.user_id)

    async def reserve_quota(self, ctx: StepContext) -> dict[str, Any]:
        request = RequestInput.of(ctx.input)
        limit: int | None = self.settings.quota_per_week or None
        if request.quota_exempt:
            limit = None
        return await self.quota.reserve(
            request.user_id,
            ctx.idempotency_key,
            request_id=request.request_id,
            limit=limit,
            metadata=self._meta(ctx, request),
        )

    async def release_quota(self, ctx: StepContext) -> None:
        request = RequestInput.of(ctx.input)
        await self.quota.release(
            request.user_id, ctx.idempotency_key, metadata=self._meta(ctx, request)
        )

    async def create_in_overseerr(self, ctx: StepContext) -> dict[str, Any]:
        request = RequestInput.of(ctx.input)
        return await self.upstream.ensure(ctx.saga_id, request.wanted, self._meta(ctx, request))

    async def delete_in_overseerr(self, ctx: StepContext) -> None:
        request = RequestInput.of(ctx.input)
        await self.upstream.undo(ctx.saga_id, request.wanted, self._meta(ctx, request))

    async def record_request(self, ctx: StepContext) -> dict[str, Any]:
        request = RequestInput.of(ctx.input)
        made = ctx.results["create_in_overseerr"]
        if await self.requests.find(request.request_id) is None:
            item = MediaRequest(request.request_id)
            item.request(
                media_type=request.media_type.value,
                tmdb_id=request.tmdb_id,
                title=str(made["title"])[:500],
                requested_by=request.user_id,
                seasons=request.seasons,
            )
            item.submit(str(made["overseerr_id"]))
            if made["status"] in ("approved", "completed"):
                item.approve("overseerr")
            await self.requests.save(item, metadata=self._meta(ctx, request))
        return {"request_id": request.request_id}

    async def withdraw_request(self, ctx: StepContext) -> None:
        request = RequestInput.of(ctx.input)
        item = await self.requests.find(request.request_id)
        if item is None or item.final:
            return
        why = (await load(self.store, ctx.saga_id)).error or "a later step failed"
        item.fail(f"withdrawn: {why}"[:500])
        await self.requests.save(item, metadata=self._meta(ctx, request))

    async def publish_created(self, ctx: StepContext) -> dict[str, Any]:
        request = RequestInput.of(ctx.input)
        made = ctx.results["create_in_overseerr"]
        data = {
            **request.to_json(),
            "title": made["title"],
            "overseerr_id": made["overseerr_id"],
            "overseerr_status": made["status"],
            "saga_id": ctx.saga_id,
        }
        data.pop("quota_exempt")
        event_id = uuid5(_EVENT_IDS, ctx.idempotency_key)
        event = NewEvent(REQUEST_CREATED, data, metadata=self._meta(ctx, request), id=event_id)
        await self.store.append(MediaRequest.stream_for(request.request_id), [event], ANY)
        return {"event_id": str(event_id)}


def request_media_saga(
    store: EventStore,
    overseerr: Callable[[], OverseerrAdapter],
    settings: RequestsSettings,
    *,
    hooks: SagaHooks | None = None,
) -> SagaDefinition:
    """The ``request-media`` definition; ``hooks`` only in tests (:mod:`.hooks`)."""
    steps = RequestMediaSteps(store, overseerr, settings)
    definition = SagaDefinition(
        REQUEST_MEDIA,
        [
            Step("reserve_quota", steps.reserve_quota, steps.release_quota, retry=step_retry()),
            Step(
                "create_in_overseerr",
                steps.create_in_overseerr,
                steps.delete_in_overseerr,
                retry=step_retry(),
            ),
            Step(
                "record_request", steps.record_request, steps.withdraw_request, retry=step_retry()
            ),
            Step("publish_created", steps.publish_created, None, retry=step_retry()),
        ],
    )
    if hooks is None:
        return definition
    return SagaDefinition(definition.name, [_hooked(step, hooks) for step in definition.steps])


def _hooked(step: Step, hooks: SagaHooks) -> Step:
    """``step`` with the test hooks run around its action and its compensation."""
    action, undo = step.execute, step.compensate

    async def execute(ctx: StepContext) -> Mapping[str, Any] | None:
        await hooks.at(ctx, f"{step.name}:enter")
        result = await action(ctx)
        await hooks.at(ctx, f"{step.name}:exit")
        return result

    async def compensate(ctx: StepContext) -> None:
        await hooks.at(ctx, f"{step.name}:undo-enter")
        if undo is not None:
            await undo(ctx)
        await hooks.at(ctx, f"{step.name}:undo-exit")

    return replace(step, execute=execute, compensate=compensate)
