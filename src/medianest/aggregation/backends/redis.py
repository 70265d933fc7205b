"""Redis answer cache: shared by every hub instance, expiry by Redis itself (``SET ... PX``)."""

from __future__ import annotations

import json
import time
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from medianest.aggregation.cache import CachedValue
from medianest.backends import BackendBase, mask_url
from medianest.errors import BackendUnavailable


class RedisAnswerCache(BackendBase):
    """Entries are JSON ``{"v": value, "t": stored_at}`` under ``<prefix><key>``."""

    def __init__(self, url: str, *, prefix: str = "medianest:answers:") -> None:
        self.url = url
        self.prefix = prefix
        self._client: aioredis.Redis | None = None

    def __repr__(self) -> str:
        return f"RedisAnswerCache({mask_url(self.url)!r})"

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisAnswerCache:
        return cls(url, **options)

    async def start(self) -> None:
        if self._client is None:
            self._client = aioredis.Redis.from_url(
                self.url, socket_connect_timeout=2, socket_timeout=2
            )

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    @property
    def client(self) -> aioredis.Redis:
        if self._client is None:
            raise BackendUnavailable("redis cache is not started", backend=mask_url(self.url))
        return self._client

    def _unavailable(self, exc: Exception) -> BackendUnavailable:
        return BackendUnavailable(
            f"redis cache unavailable: {type(exc).__name__}: {exc}", backend=mask_url(self.url)
        )

    async def ping(self) -> None:
        try:
            await self.client.ping()
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from exc

    async def get(self, key: str) -> CachedValue | None:
        try:
            raw = await self.client.get(self.prefix + key)
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from exc
        if raw is None:
            return None
        entry = json.loads(raw)
        return CachedValue(entry["v"], float(entry["t"]))

    async def set(self, key: str, value: Any, ttl: float) -> None:
        payload = json.dumps({"v": value, "t": time.time()}, separators=(",", ":"))
        try:
            await self.client.set(self.prefix + key, payload, px=max(1, int(ttl * 1000)))
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from exc

    async def delete(self, key: str) -> None:
        try:
            await self.client.delete(self.prefix + key)
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from exc
