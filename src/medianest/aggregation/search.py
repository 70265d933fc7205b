"""Unified search: ask every source at once, merge what they say about the same title.

The seed's Integration Aggregation Service. :meth:`IntegrationAggregator.search` queries
each :class:`Source` (the Plex library, Overseerr's catalogue...) concurrently, each under
its own deadline, and never lets one source fail the whole answer: every source reports how
it went (:class:`SourceState`) and a source that fails answers from the last good result
for the same query when there is one, marked ``stale``.

Titles are merged when they share an external id (``tmdb``, ``imdb`` or ``tvdb``, in that
order of trust); items with no ids at all merge on type, normalized title and year. A merged
hit says whether the title is in the library, requested (with the request's status) or
requestable.
"""

from __future__ import annotations

import asyncio
import time
import unicodedata
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field

from medianest import errors
from medianest.aggregation.cache import AnswerCache
from medianest.integrations.models import ExternalIds, MediaItem, MediaType
from medianest.observability import get_logger

_log = get_logger("medianest.aggregation")
T = TypeVar("T")


class SourceState(StrEnum):
    OK = "ok"
    ERROR = "error"
    TIMEOUT = "timeout"
    CIRCUIT_OPEN = "circuit_open"
    STALE = "stale"


class Availability(StrEnum):
    AVAILABLE = "available"
    PARTIAL = "partial"
    REQUESTED = "requested"
    REQUESTABLE = "requestable"
    BLOCKED = "blocked"


@dataclass(frozen=True, slots=True)
class Source:
    """One place to search: a name, its kind and the call that searches it."""

    name: str
    kind: str
    fetch: Callable[[str], Awaitable[Sequence[MediaItem]]]


class SourceReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    status: SourceState
    count: int = 0
    latency_ms: float
    detail: str | None = None
    stale_age_s: float | None = Field(None, description="Age of a stale answer, in seconds.")


class SearchHit(BaseModel):
    model_config = ConfigDict(frozen=True)

    type: MediaType
    title: str
    year: int | None = None
    ids: ExternalIds
    availability: Availability
    media_status: str | None = Field(None, description="Overseerr's status for the title.")
    rating_key: str | None = None
    poster: str | None = None
    summary: str | None = None
    sources: list[str]


class SearchResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    query: str
    items: list[SearchHit]
    sources: dict[str, SourceReport]
    partial: bool = Field(description="True when at least one source did not answer fresh.")


class IntegrationAggregator:
    """Fan-out search over ``sources`` with a per-source ``deadline`` (seconds)."""

    def __init__(
        self,
        sources: Sequence[Source],
        *,
        cache: AnswerCache | None = None,
        deadline: float = 2.0,
        stale_ttl: float = 24 * 3600,
    ) -> None:
        self.sources = list(sources)
        self.cache = cache
        self.deadline = deadline
        self.stale_ttl = stale_ttl
        self._abandoned: set[asyncio.Future[Sequence[MediaItem]]] = set()

    async def search(self, query: str) -> SearchResult:
        """Search every source; the answer is complete for those that made it in time."""
        query = " ".join(query.split())
        if not query:
            raise errors.ValidationError("empty search", errors={"query.q": "must not be empty"})
        outcomes = await asyncio.gather(*(self._ask(source, query) for source in self.sources))
        reports = {
            source.name: report for source, (report, _) in zip(self.sources, outcomes, strict=True)
        }
        items = [item for _, found in outcomes for item in found]
        hits = merge(items)
        partial = any(report.status is not SourceState.OK for report in reports.values())
        return SearchResult(query=query, items=hits, sources=reports, partial=partial)

    async def _ask(self, source: Source, query: str) -> tuple[SourceReport, list[MediaItem]]:
        started = time.perf_counter()
        task = asyncio.ensure_future(source.fetch(query))
        try:
            done, _ = await asyncio.wait((task,), timeout=self.deadline)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if not done:
            self._abandon(task)
            state, detail = SourceState.TIMEOUT, f"no answer within {self.deadline:g}s"
        else:
            try:
                found = list(task.result())
            except errors.CircuitOpenError as exc:
                state, detail = SourceState.CIRCUIT_OPEN, str(exc)
            except errors.MediaNestError as exc:
                timed_out = isinstance(exc, TimeoutError)
                state = SourceState.TIMEOUT if timed_out else SourceState.ERROR
                detail = str(exc)
            except Exception as exc:
                _log.exception("search source failed", source=source.name)
                state, detail = SourceState.ERROR, type(exc).__name__
            else:
                await self._remember(source, query, found)
                report = SourceReport(
                    status=SourceState.OK, count=len(found), latency_ms=_ms(started)
                )
                return report, found
        stale = await self._recall(source, query)
        elapsed = _ms(started)
        if stale is None:
            return SourceReport(status=state, latency_ms=elapsed, detail=detail), []
        items, age = stale
        report = SourceReport(
            status=SourceState.STALE,
            count=len(items),
            latency_ms=elapsed,
            detail=f"{state.value}: {detail}",
            stale_age_s=round(age, 1),
        )
        return report, items

    def _abandon(self, task: asyncio.Future[Sequence[MediaItem]]) -> None:
        """Cancel a late source call without waiting for it to unwind.

        The answer goes out at the deadline; the cancelled call's clean-up (closing its
        connection, its policy's bookkeeping) finishes in the background.
        """
        task.cancel()
        self._abandoned.add(task)
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Future[Sequence[MediaItem]]) -> None:
        self._abandoned.discard(task)
        if not task.cancelled() and task.exception() is not None:
            _log.debug("late search source failed", error=repr(task.exception()))

    def _key(self, source: Source, query: str) -> str:
        return f"search:{source.name}:{query.casefold()}"

    async def _remember(self, source: Source, query: str, items: list[MediaItem]) -> None:
        if self.cache is None:
            return
        payload = [item.model_dump(mode="json") for item in items]
        try:
            await self.cache.set(self._key(source, query), payload, self.stale_ttl)
        except errors.BackendError as exc:
            _log.warning("search cache write failed", source=source.name, reason=str(exc))

    async def _recall(self, source: Source, query: str) -> tuple[list[MediaItem], float] | None:
        if self.cache is None:
            return None
        try:
            cached = await self.cache.get(self._key(source, query))
        except errors.BackendError as exc:
            _log.warning("search cache read failed", source=source.name, reason=str(exc))
            return None
        if cached is None:
            return None
        items = [MediaItem.model_validate(raw) for raw in cached.value]
        return items, max(0.0, time.time() - cached.stored_at)


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


_REQUESTED = {"pending", "processing"}
_AVAILABILITY = {
    "available": Availability.AVAILABLE,
    "partially_available": Availability.PARTIAL,
    "blacklisted": Availability.BLOCKED,
    "blocklisted": Availability.BLOCKED,
}


def _title_key(item: MediaItem) -> str:
    text = unicodedata.normalize("NFKD", item.title).encode("ascii", "ignore").decode()
    words = "".join(ch if ch.isalnum() else " " for ch in text.casefold()).split()
    return f"title:{item.type.value}:{' '.join(words)}:{item.year or ''}"


class _Group:
    __slots__ = ("items", "keys")

    def __init__(self) -> None:
        self.items: list[MediaItem] = []
        self.keys: set[str] = set()


def merge(items: Sequence[MediaItem]) -> list[SearchHit]:
    """Group items that share an id (or, without ids, a title+year) into hits, in order."""
    groups: list[_Group] = []
    index: dict[str, _Group] = {}
    for item in items:
        keys = item.ids.keys() or [_title_key(item)]
        found = [index[k] for k in keys if k in index]
        group = found[0] if found else _Group()
        if not found:
            groups.append(group)
        for other in found[1:]:
            if other is not group:
                group.items.extend(other.items)
                group.keys |= other.keys
                groups.remove(other)
        group.items.append(item)
        group.keys.update(keys)
        for key in group.keys:
            index[key] = group
    return [_hit(group.items) for group in groups]


def _first(values: Iterable[T | None]) -> T | None:
    return next((v for v in values if v is not None), None)


def _hit(items: list[MediaItem]) -> SearchHit:
    """One hit from the items of a group.

    Built with ``model_construct``: every value comes from already validated models, and
    validating again costs more than the rest of a search's work after its deadline.
    """
    library = next((i for i in items if i.rating_key), None)
    status = _first(i.media_status for i in items)
    first = library or items[0]
    ids = ExternalIds.model_construct(
        tmdb=_first(i.ids.tmdb for i in items),
        imdb=_first(i.ids.imdb or None for i in items),
        tvdb=_first(i.ids.tvdb for i in items),
    )
    if library is not None:
        availability = Availability.AVAILABLE
    elif status in _AVAILABILITY:
        availability = _AVAILABILITY[status]
    elif status in _REQUESTED:
        availability = Availability.REQUESTED
    else:
        availability = Availability.REQUESTABLE
    return SearchHit.model_construct(
        type=first.type,
        title=first.title,
        year=first.year or _first(i.year for i in items),
        ids=ids,
        availability=availability,
        media_status=status,
        rating_key=library.rating_key if library else None,
        poster=_first(i.poster or None for i in items),
        summary=_first(i.summary or None for i in items),
        sources=sorted({i.source for i in items}),
    )
