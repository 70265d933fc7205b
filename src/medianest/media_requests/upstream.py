"""Making (and unmaking) the Overseerr request of one saga, at most once, across crashes.

Overseerr takes no idempotency key, and ``POST /request`` is never repeated blindly
(:mod:`medianest.integrations.overseerr`). So the saga step **looks before it creates**:
a request for the title found in Overseerr is adopted instead of creating another. What a
lookup cannot tell is *whose* request it found: one this saga made before the process died,
or someone else's. The step therefore keeps a small ledger, the stream
``overseerr-<saga id>``:

================ ===============================================================
CreateAttempted  ``media_type``, ``tmdb_id``, ``seasons``: appended before the POST,
                 so a request may exist from here on
CreateConfirmed  ``overseerr_id``: the request is this saga's
CreateRefused    ``reason``: Overseerr answered 409 / 202, it made nothing
CreateUndone     ``overseerr_id`` (or null): the compensation deleted it
================ ===============================================================

The last event decides. After ``CreateAttempted`` with no outcome (the answer was lost),
the request found for the title *is* this saga's: another MediaNest saga for the same title
would have been refused by Overseerr (one request per movie, per season), so only a person
using Overseerr directly in that very moment could be mistaken for us. Before any attempt,
or after a refusal, a request found belongs to someone else: it is adopted
(``created: false``) and never deleted by the compensation.

A TV request is adopted without a POST only when the request found covers every season
asked for; otherwise the POST is made and Overseerr itself requests only the seasons nobody
requested yet (202 when there is none left: then the existing request is adopted).

Known limit: a POST still travelling when the compensation runs (the process died
mid-request and the answer is late) can land after the compensation looked; Overseerr's
own one-request-per-title rule keeps that to an orphan, never a duplicate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from medianest.errors import UpstreamConflict
from medianest.events.base import EventStore
from medianest.events.model import ANY, EventMetadata, NewEvent
from medianest.integrations.models import MediaRequest, MediaType, RequestStatus
from medianest.integrations.overseerr import OverseerrAdapter, RequestExists

CREATE_ATTEMPTED = "CreateAttempted"
CREATE_CONFIRMED = "CreateConfirmed"
CREATE_REFUSED = "CreateRefused"
CREATE_UNDONE = "CreateUndone"


class NothingToRequest(UpstreamConflict):
    """Overseerr refused to make a request and has none to adopt: the title (or every
    season asked for) is already available."""


def ledger_stream(saga_id: str) -> str:
    return f"overseerr-{saga_id}"


@dataclass(frozen=True)
class LedgerState:
    """The last ledger event: its type ("" when none) and the request id it names."""

    last: str = ""
    overseerr_id: int | None = None


@dataclass(frozen=True)
class Wanted:
    """What one saga asks Overseerr for; ``seasons`` empty = every season (tv)."""

    media_type: MediaType
    tmdb_id: int
    seasons: tuple[int, ...] = ()

    def covered_by(self, found: MediaRequest) -> bool:
        if self.media_type is MediaType.MOVIE:
            return True
        return bool(self.seasons) and set(self.seasons) <= set(found.seasons)


class OverseerrRequests:
    """The ``create_in_overseerr`` step's work (module docstring).

    ``adapter`` is called for the adapter on each use (the hub may be reconfigured).
    """

    def __init__(self, store: EventStore, adapter: Callable[[], OverseerrAdapter]) -> None:
        self.store = store
        self.adapter = adapter

    async def ledger(self, saga_id: str) -> LedgerState:
        last = await self.store.read_stream(ledger_stream(saga_id), limit=1, backwards=True)
        if not last:
            return LedgerState()
        found = last[0].data.get("overseerr_id")
        return LedgerState(last[0].type, found if isinstance(found, int) else None)

    async def _note(
        self, saga_id: str, event_type: str, data: dict[str, Any], meta: EventMetadata
    ) -> None:
        event = NewEvent(event_type, data, metadata=meta)
        await self.store.append(ledger_stream(saga_id), [event], ANY)

    async def ensure(self, saga_id: str, wanted: Wanted, meta: EventMetadata) -> dict[str, Any]:
        """The saga's Overseerr request, made now or found from before; its step result:
        ``overseerr_id``, ``created`` (this saga made it), ``title``, ``status``."""
        adapter = self.adapter()
        if wanted.media_type is MediaType.MOVIE:
            title = (await adapter.movie(wanted.tmdb_id)).title
        else:
            title = (await adapter.tv(wanted.tmdb_id)).title
        state = await self.ledger(saga_id)
        found = await adapter.find_request(wanted.media_type, wanted.tmdb_id)
        if found is not None:
            ours = state.last == CREATE_ATTEMPTED or (
                state.last == CREATE_CONFIRMED and state.overseerr_id == found.id
            )
            if state.last == CREATE_ATTEMPTED:
                await self._note(saga_id, CREATE_CONFIRMED, {"overseerr_id": found.id}, meta)
            if ours or wanted.covered_by(found):
                return _result(found, title, created=ours)
        attempt = {
            "media_type": wanted.media_type.value,
            "tmdb_id": wanted.tmdb_id,
            "seasons": list(wanted.seasons),
        }
        seasons = list(wanted.seasons) if wanted.seasons else None  # tv: None = every season
        await self._note(saga_id, CREATE_ATTEMPTED, attempt, meta)
        try:
            made = await adapter.create_request(wanted.media_type, wanted.tmdb_id, seasons=seasons)
        except RequestExists as exc:
            await self._note(saga_id, CREATE_REFUSED, {"reason": exc.message}, meta)
            found = await adapter.find_request(wanted.media_type, wanted.tmdb_id)
            if found is None:
                raise NothingToRequest(
                    f"{title}: nothing to request, it is already available",
                    service=adapter.name,
                ) from exc
            return _result(found, title, created=False)
        await self._note(saga_id, CREATE_CONFIRMED, {"overseerr_id": made.id}, meta)
        return _result(made, title, created=True)

    async def undo(self, saga_id: str, wanted: Wanted, meta: EventMetadata) -> int | None:
        """Delete the request this saga made, if it made one; the id deleted (or None).

        Safe to repeat: a request already gone counts as deleted, and once the deletion is
        recorded nothing is looked up again (it might find someone else's new request)."""
        state = await self.ledger(saga_id)
        target: int | None = None
        if state.last == CREATE_CONFIRMED:
            target = state.overseerr_id
        elif state.last == CREATE_ATTEMPTED:
            found = await self.adapter().find_request(wanted.media_type, wanted.tmdb_id)
            target = found.id if found is not None else None
        else:
            return None
        if target is not None:
            await self.adapter().delete_request(target, missing_ok=True)
        await self._note(saga_id, CREATE_UNDONE, {"overseerr_id": target}, meta)
        return target


def _result(found: MediaRequest, title: str, *, created: bool) -> dict[str, Any]:
    status = found.status if isinstance(found.status, RequestStatus) else RequestStatus.UNKNOWN
    return {
        "overseerr_id": found.id,
        "created": created,
        "title": title,
        "status": status.value,
    }
