"""The gateway's response cache for GET routes that declare ``cache = {ttl, stale_if_error}``.

An in-process LRU map from a request key to a stored answer. The route decides the
freshness: an answer is *fresh* for ``ttl`` seconds after it was stored (less the ``Age`` it
already had upstream) and is served without asking the upstream; after that, for
``stale_if_error`` more seconds, it is *usable stale*: served only when the upstream fails
(RFC 5861 ``stale-if-error``), marked with ``Warning: 110`` and ``X-MediaNest-Cache: STALE``.
An entry past both is dropped when next looked up.

What is stored, kept simple and on the safe side of RFC 9111: statuses 200, 203, 204, 301
and 404; bodies up to the route's ``max_bytes``; never an answer carrying ``Set-Cookie``,
``Cache-Control: no-store``, ``private`` or ``no-cache``, or ``Vary: *``. Personalised
requests are kept apart by the ``vary`` part of the key (the caller passes the credentials,
cookies and ``Accept`` it varies on).

Memory is bounded twice: at most ``max_entries`` answers and ``max_total_bytes`` of bodies;
the least recently used go first. The cache is used from one event loop and never awaits.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from medianest.config.gateway import Cache
from medianest.resilience.clock import SYSTEM_CLOCK, Clock

__all__ = ["CACHEABLE_STATUSES", "CachedResponse", "ResponseCache"]

CACHEABLE_STATUSES = frozenset({200, 203, 204, 301, 404})
_REFUSED_DIRECTIVES = frozenset({"no-store", "private", "no-cache"})
_SERVED_HEADERS = frozenset({"age", "warning", "x-medianest-cache"})
STALE_WARNING = '110 - "Response is Stale"'


@dataclass(frozen=True, slots=True)
class CachedResponse:
    """One stored answer: what to replay, when it was stored and how long it lives."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    stored_at: float
    ttl: float
    stale_if_error: float = 0.0
    initial_age: float = 0.0

    def age(self, now: float) -> float:
        """Seconds since the upstream produced it: its ``Age`` when stored plus time here."""
        return self.initial_age + max(0.0, now - self.stored_at)

    def fresh(self, now: float) -> bool:
        """Whether it may be served without asking the upstream."""
        return self.age(now) < self.ttl

    def usable_stale(self, now: float) -> bool:
        """Whether it may still be served when the upstream fails (also true while fresh)."""
        return self.age(now) < self.ttl + self.stale_if_error


class ResponseCache:
    """An LRU cache of upstream answers, keyed by :meth:`key`."""

    def __init__(
        self,
        *,
        max_entries: int = 10_000,
        max_total_bytes: int = 256 * 1_048_576,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.max_entries = max_entries
        self.max_total_bytes = max_total_bytes
        self.clock = clock
        self._entries: OrderedDict[str, CachedResponse] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def total_bytes(self) -> int:
        """Bytes of bodies held."""
        return self._bytes

    @staticmethod
    def key(route_name: str, method: str, host: str, path: str, query: str, vary: str = "") -> str:
        """The cache key of a request: the route name, then a digest of everything else.

        Host names are compared case-insensitively; path and query exactly as sent.
        """
        material = "\0".join((method.upper(), host.lower(), path, query, vary))
        digest = hashlib.blake2b(material.encode("utf-8", "surrogatepass"), digest_size=20)
        return f"{route_name}:{digest.hexdigest()}"

    def get(self, key: str) -> CachedResponse | None:
        """The entry under ``key`` if it is fresh or still usable stale, else None."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if not entry.usable_stale(self.clock.monotonic()):
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry

    def put(
        self,
        key: str,
        status: int,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        cache: Cache,
    ) -> bool:
        """Store an answer if it may be cached (see the module docstring); True if stored."""
        if not cacheable(status, headers, len(body), cache.max_bytes):
            return False
        if len(body) > self.max_total_bytes:
            return False
        kept = [(k, v) for k, v in headers if k.lower() not in _SERVED_HEADERS]
        entry = CachedResponse(
            status=status,
            headers=kept,
            body=body,
            stored_at=self.clock.monotonic(),
            ttl=cache.ttl,
            stale_if_error=cache.stale_if_error,
            initial_age=_initial_age(headers),
        )
        self._drop(key)
        self._entries[key] = entry
        self._bytes += len(body)
        while len(self._entries) > self.max_entries or self._bytes > self.max_total_bytes:
            oldest = next(iter(self._entries))
            self._drop(oldest)
        return True

    def response_headers(
        self, cached: CachedResponse, now: float, stale: bool
    ) -> list[tuple[str, str]]:
        """The stored headers plus ``Age``, ``X-MediaNest-Cache`` and, if stale, ``Warning``."""
        out = list(cached.headers)
        out.append(("age", str(int(cached.age(now)))))
        if stale:
            out.append(("warning", STALE_WARNING))
        out.append(("x-medianest-cache", "STALE" if stale else "HIT"))
        return out

    def clear(self, route_name: str | None = None) -> int:
        """Drop every entry, or those of one route (after its reload); returns how many."""
        prefix = None if route_name is None else f"{route_name}:"
        doomed = [k for k in self._entries if prefix is None or k.startswith(prefix)]
        for key in doomed:
            self._drop(key)
        return len(doomed)

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= len(entry.body)


def cacheable(status: int, headers: Sequence[tuple[str, str]], size: int, max_bytes: int) -> bool:
    """Whether an answer may be stored at all."""
    if status not in CACHEABLE_STATUSES or size > max_bytes:
        return False
    for name, value in headers:
        lowered = name.lower()
        if lowered == "set-cookie":
            return False
        if lowered == "vary" and "*" in value:
            return False
        if lowered == "cache-control":
            directives = {d.strip().split("=", 1)[0].lower() for d in value.split(",")}
            if directives & _REFUSED_DIRECTIVES:
                return False
    return True


def _initial_age(headers: Sequence[tuple[str, str]]) -> float:
    for name, value in headers:
        if name.lower() == "age":
            try:
                return max(0.0, float(int(value.strip())))
            except ValueError:
                return 0.0
    return 0.0
