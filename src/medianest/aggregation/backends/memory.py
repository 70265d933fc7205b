"""In-process answer cache: a bounded dict with expiry, for one-process deployments."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

from medianest.aggregation.cache import CachedValue
from medianest.backends import BackendBase


class MemoryAnswerCache(BackendBase):
    """Least-recently-stored entries are evicted past ``max_entries``."""

    def __init__(self, *, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self._data: OrderedDict[str, tuple[Any, float, float]] = OrderedDict()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> MemoryAnswerCache:
        return cls(**options)

    async def ping(self) -> None:
        return None

    async def get(self, key: str) -> CachedValue | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        value, stored_at, expires_at = entry
        if time.time() >= expires_at:
            del self._data[key]
            return None
        return CachedValue(value, stored_at)

    async def set(self, key: str, value: Any, ttl: float) -> None:
        now = time.time()
        self._data.pop(key, None)
        self._data[key] = (value, now, now + ttl)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)

    async def delete(self, key: str) -> None:
        self._data.pop(key, None)
