"""The identity provider's signing keys (JWKS), cached with a TTL, refetched on rotation.

A provider rotates keys by publishing the new one and then signing with it; a relying party
that sees an ID token with an unknown ``kid`` fetches the key set again, once. Refetches for
unknown ids are rate-limited (``refetch_interval``) and single-flight, so a stream of tokens
with forged key ids costs the provider at most one request per interval.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import JWKRegistry, Key
from joserfc.jws import JWSRegistry

from medianest.errors import AuthenticationError, UpstreamContractError, UpstreamError
from medianest.observability import get_logger
from medianest.security.oidc_provider import SERVICE

_log = get_logger("medianest.security.oidc")

UNKNOWN_KEY_MESSAGE = "the ID token is signed with a key the identity provider does not publish"


def parse_jwks(document: Any) -> list[Key]:
    """The public signing keys of a JWKS document; keys we cannot use are skipped.

    Skipped: symmetric (``oct``) keys, keys for encryption (``use: enc``), unknown key types
    and malformed entries. No usable key at all is a contract error of the provider.
    """
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise UpstreamContractError(
            "the identity provider's JWKS has no keys list", service=SERVICE, endpoint="jwks"
        )
    keys: list[Key] = []
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("kty") == "oct":
            continue
        if entry.get("use", "sig") != "sig":
            continue
        try:
            keys.append(JWKRegistry.import_key(entry))
        except (JoseError, ValueError, TypeError) as exc:
            _log.warning("ignoring unusable JWKS key", kid=entry.get("kid"), error=str(exc))
    if not keys:
        raise UpstreamContractError(
            "the identity provider's JWKS has no usable signing key",
            service=SERVICE,
            endpoint="jwks",
        )
    return keys


def fits(key: Key, alg: str) -> bool:
    """Whether ``key`` may verify signatures made with ``alg`` (type, curve, its ``alg``)."""
    model = JWSRegistry.algorithms.get(alg)
    if model is None or model.key_type != key.key_type:
        return False
    if key.get("alg") not in (None, alg):
        return False
    curve = getattr(model, "curve", None)
    if key.key_type == "EC" and curve is not None and key.get("crv") != curve:
        return False
    if key.key_type == "OKP":
        allowed = {"EdDSA": ("Ed25519", "Ed448"), "Ed25519": ("Ed25519",), "Ed448": ("Ed448",)}
        return key.get("crv") in allowed.get(alg, ())
    return True


class JwksCache:
    """Keys from ``fetch``, kept ``ttl`` seconds. An unknown ``kid`` refetches them, but at
    most once per ``refetch_interval`` seconds (counted from the last such refetch, so a
    rotation right after a routine fetch is still seen). ``fetches`` counts fetches done."""

    def __init__(
        self,
        fetch: Callable[[], Awaitable[list[Key]]],
        *,
        ttl: float,
        refetch_interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self.ttl = ttl
        self.refetch_interval = refetch_interval
        self._clock = clock
        self._keys: list[Key] | None = None
        self._fetched_at = 0.0
        self._last_miss = -float("inf")
        self._generation = 0
        self._lock = asyncio.Lock()
        self.fetches = 0

    def invalidate(self) -> None:
        """Forget the keys: the next lookup fetches them."""
        self._keys = None

    async def key_for(self, kid: str | None, alg: str) -> Key:
        """The published key named ``kid`` (or the only one that fits ``alg`` when the token
        names none) that can verify ``alg``; AuthenticationError when there is none."""
        keys = await self._current()
        found = _select(keys, kid, alg)
        if found is None:
            keys = await self._refresh(stale_generation=self._generation, unknown=True)
            found = _select(keys, kid, alg)
        if found is None:
            raise AuthenticationError(UNKNOWN_KEY_MESSAGE, reason="unknown_key")
        if not fits(found, alg):
            raise AuthenticationError(
                "the ID token's algorithm does not match the key it names", reason="key_mismatch"
            )
        return found

    async def _current(self) -> list[Key]:
        keys = self._keys
        if keys is not None and self._clock() - self._fetched_at < self.ttl:
            return keys
        try:
            return await self._refresh(stale_generation=self._generation)
        except UpstreamError:
            if keys is None:
                raise
            _log.warning("JWKS refetch failed, keeping the expired keys for now")
            return keys

    async def _refresh(self, *, stale_generation: int, unknown: bool = False) -> list[Key]:
        """Fetch the keys unless another task did since ``stale_generation`` was current.

        ``unknown`` marks a refetch asked for by an unknown key: it is skipped, keeping the
        current keys, within ``refetch_interval`` of the last such refetch.
        """
        async with self._lock:
            if self._generation != stale_generation and self._keys is not None:
                return self._keys  # another task fetched while this one waited
            if unknown and self._keys is not None:
                if self._clock() - self._last_miss < self.refetch_interval:
                    return self._keys
                self._last_miss = self._clock()
                _log.info("unknown signing key, refetching the JWKS")
            keys = await self._fetch()
            self.fetches += 1
            self._keys = keys
            self._fetched_at = self._clock()
            self._generation += 1
            return keys


def _select(keys: list[Key], kid: str | None, alg: str) -> Key | None:
    if kid is not None:
        return next((key for key in keys if key.kid == kid), None)
    candidates = [key for key in keys if fits(key, alg)]
    if len(candidates) > 1:
        raise AuthenticationError(
            "the ID token names no key and the identity provider publishes several",
            reason="ambiguous_key",
        )
    return candidates[0] if candidates else None
