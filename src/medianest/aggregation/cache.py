"""The last-good-answer cache behind unified search: ``memory://`` or ``redis://`` by URL.

Values are JSON-able; each entry remembers when it was stored so a stale answer can say
how old it is. Entries expire after ``ttl`` seconds (the window in which a stale answer is
still better than none).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from medianest.backends import BackendEntry, BackendTable


@dataclass(frozen=True, slots=True)
class CachedValue:
    value: Any
    stored_at: float
    """Unix time when it was stored."""


class AnswerCache(Protocol):
    """Last good answers by key (``start``/``close``/``ping`` like every backend)."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise ``BackendUnavailable`` when the cache cannot serve."""
        ...

    async def get(self, key: str) -> CachedValue | None:
        """The value stored under ``key`` and when, or ``None`` (absent or expired)."""
        ...

    async def set(self, key: str, value: Any, ttl: float) -> None:
        """Store ``value`` (JSON-able) under ``key`` for ``ttl`` seconds."""
        ...

    async def delete(self, key: str) -> None: ...


CACHES: BackendTable[AnswerCache] = BackendTable(
    "cache",
    {
        "memory": "medianest.aggregation.backends.memory:MemoryAnswerCache",
        "redis": BackendEntry("medianest.aggregation.backends.redis:RedisAnswerCache", "redis"),
        "rediss": BackendEntry("medianest.aggregation.backends.redis:RedisAnswerCache", "redis"),
    },
)


def create_cache(url: str, **options: Any) -> AnswerCache:
    """The cache backend for ``url`` (``memory://``, ``redis://host:6379/0``...)."""
    return CACHES.create(url, **options)
