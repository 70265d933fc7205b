"""API keys: issued once, stored as an HMAC, verified in constant time behind a small cache.

Format (GitHub-token style, 65 characters)::

    mn_<key id>_<secret><checksum>
    mn_k3v9x0q2m7ab_4Zq...43 chars...Yb1x9Qe   e.g.

* ``mn_`` says what the string is, for people and for secret scanners;
* the **key id**, 12 characters of ``[0-9a-z]``, is public: it names the key in lists, logs
  and the CLI, and is the primary key the verifier looks up;
* the **secret**, 32 bytes from :func:`secrets.token_bytes` in base62 (43 characters);
* the **checksum**, the CRC32 of everything before it in base62 (6 characters), lets
  :func:`looks_like_api_key` and :func:`find_api_keys` recognise a leaked key offline, without
  the database, and lets :meth:`ApiKeyService.verify` refuse a mistyped or corrupted key
  before any lookup.

The plaintext is returned once by :meth:`ApiKeyService.create` / :meth:`~ApiKeyService.rotate`
and never stored: the table keeps ``HMAC-SHA-256(server secret, key)``, so a copy of the
database alone cannot be used to check guesses. Keys and their HMACs are never logged; the
key id is.

Verification compares HMACs with :func:`hmac.compare_digest` and remembers successful
verifications for ``cache_ttl`` seconds (never past the key's expiry or rotation overlap),
keyed by a SHA-256 fingerprint of the presented key, so a busy client costs one hash and a
dict lookup, no HMAC and no query. When an entry lapses, concurrent requests with that key
share one database read (single flight) rather than each running its own. Revocation and
rotation on this instance drop the entry at once; other instances notice within
``cache_ttl`` (or at once when a message calls :meth:`ApiKeyService.invalidate`).
``last_used_at`` is written at most once a minute per key, in the background: a request
never waits for that write.

Scopes are lower-case names such as ``catalog:read``; the scope ``admin`` grants every scope.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import hmac
import re
import secrets
import string
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from medianest.database import Database
from medianest.errors import (
    AuthenticationError,
    AuthorizationError,
    BackendError,
    ConfigurationError,
    NotFoundError,
    ValidationError,
)
from medianest.observability import get_logger
from medianest.security import apikeys_store as store
from medianest.security.apikeys_store import (
    KEY_PREFIX,
    ApiKeyInfo,
    check_text,
    utc,
    validate_scopes,
)

_log = get_logger("medianest.security.apikeys")

ADMIN_SCOPE = "admin"
REALM = "medianest"
TOUCH_INTERVAL = timedelta(minutes=1)
_BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
_ID_ALPHABET = string.digits + string.ascii_lowercase
_ID_LEN, _SECRET_LEN, _CHECKSUM_LEN = 12, 43, 6
_KEY = re.compile(rf"mn_([0-9a-z]{{{_ID_LEN}}})_[0-9A-Za-z]{{{_SECRET_LEN + _CHECKSUM_LEN}}}")
_KEY_IN_TEXT = re.compile(rf"(?<![0-9A-Za-z_]){_KEY.pattern}(?![0-9A-Za-z_])")
_KEY_ID = re.compile(rf"[0-9a-z]{{{_ID_LEN}}}")
_REJECTED = "invalid API key"


def _base62(number: int, width: int) -> str:
    digits = []
    while number:
        number, digit = divmod(number, 62)
        digits.append(_BASE62[digit])
    return "".join(reversed(digits)).rjust(width, "0")


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode("ascii")), _CHECKSUM_LEN)


def generate_api_key(key_id: str | None = None) -> str:
    """A new key (for ``key_id``, else a fresh id) in the format described above."""
    key_id = key_id or "".join(secrets.choice(_ID_ALPHABET) for _ in range(_ID_LEN))
    if not _KEY_ID.fullmatch(key_id):
        raise ValueError("a key id is 12 characters of [0-9a-z]")
    secret = _base62(int.from_bytes(secrets.token_bytes(32), "big"), _SECRET_LEN)
    body = f"{KEY_PREFIX}{key_id}_{secret}"
    return body + _checksum(body)


def parse_key_id(text: str) -> str | None:
    """The key id of ``text`` if it is well formed with a valid checksum, else ``None``."""
    match = _KEY.fullmatch(text)
    if match is None or _checksum(text[:-_CHECKSUM_LEN]) != text[-_CHECKSUM_LEN:]:
        return None
    return match[1]


def looks_like_api_key(text: str) -> bool:
    """Whether ``text`` is a MediaNest API key (format and checksum; no database needed)."""
    return parse_key_id(text) is not None


def find_api_keys(text: str) -> list[str]:
    """Every MediaNest API key with a valid checksum in ``text`` (for leak scanners)."""
    return [m[0] for m in _KEY_IN_TEXT.finditer(text) if looks_like_api_key(m[0])]


def normalize_key_id(text: str) -> str | None:
    """The key id named by ``text``: a key id, a ``mn_<id>`` prefix, or a whole key."""
    text = text.strip()
    if looks_like_api_key(text):
        return parse_key_id(text)
    if text.startswith(KEY_PREFIX):
        text = text[len(KEY_PREFIX) :]
    return text if _KEY_ID.fullmatch(text) else None


def require_scopes(granted: Iterable[str], needed: Iterable[str]) -> None:
    """Raise :class:`AuthorizationError` naming the missing scopes (``admin`` grants all)."""
    have = set(granted)
    if ADMIN_SCOPE in have:
        return
    wanted = list(dict.fromkeys(needed))
    missing = [scope for scope in wanted if scope not in have]
    if missing:
        raise AuthorizationError(
            f"missing scope(s): {', '.join(missing)}", missing=missing, needed=wanted
        )


def www_authenticate(error: str | None = None, scope: str | None = None) -> str:
    """The RFC 6750 ``WWW-Authenticate`` value: no ``error`` when no key was presented,
    ``invalid_token`` for a bad key (401), ``insufficient_scope`` with ``scope`` (403)."""
    parts = [f'Bearer realm="{REALM}"']
    for name, value in (("error", error), ("scope", scope)):
        if value is not None:
            if '"' in value or "\\" in value:
                raise ValueError(f"{name} may not contain quotes or backslashes")
            parts.append(f'{name}="{value}"')
    return ", ".join(parts)


def extract_api_key(headers: Mapping[str, str]) -> str | None:
    """The ``mn_`` key in ``Authorization: Bearer`` or ``X-Api-Key``, never the query string.

    Other bearer tokens (sessions, OIDC) are left alone: only values starting with ``mn_``
    are returned, well formed or not, so that a corrupted key is refused as invalid.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    scheme, _, token = lowered.get("authorization", "").strip().partition(" ")
    candidates = [token.strip()] if scheme.lower() == "bearer" else []
    candidates.append(lowered.get("x-api-key", "").strip())
    return next((c for c in candidates if c.startswith(KEY_PREFIX)), None)


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The token of ``Authorization: Bearer <token>`` (any kind: API key, access token), or
    None. ``headers`` must look names up case-insensitively or hold them in lower case."""
    scheme, _, token = headers.get("authorization", "").strip().partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class _Verified:
    digest: str
    info: ApiKeyInfo
    at: datetime
    until: datetime

    def fresh(self, now: datetime) -> bool:
        return self.at <= now < self.until


class ApiKeyService:
    """Create, verify, list, rotate and revoke API keys stored in the main database.

    ``secret`` is the server secret (:func:`medianest.security.secret.load_or_create_secret`);
    every instance of one deployment must share it. ``clock`` returns aware UTC datetimes
    (tests move it); it also ages the verification cache.
    """

    def __init__(
        self,
        db: Database,
        secret: bytes,
        *,
        clock: Callable[[], datetime] | None = None,
        cache_ttl: float = 30.0,
        cache_size: int = 10_000,
    ) -> None:
        if len(secret) < 32:
            raise ConfigurationError("the API key secret must be at least 32 bytes")
        self._db = db
        self._secret = secret
        self._clock = clock or _utcnow
        self._ttl = timedelta(seconds=cache_ttl)
        self._cache_size = cache_size
        self._cache: dict[bytes, _Verified] = {}
        self._fingerprints: dict[str, bytes] = {}
        self._inflight: dict[bytes, asyncio.Future[ApiKeyInfo]] = {}
        self._touching: set[str] = set()
        self._background: set[asyncio.Task[None]] = set()
        self._invalidations = 0
        self.listeners: builtins.list[Callable[[str], None]] = []

    def __repr__(self) -> str:
        return f"ApiKeyService({self._db!r}, cache_ttl={self._ttl.total_seconds()})"

    def _now(self) -> datetime:
        now = utc(self._clock())
        assert now is not None
        return now

    def _digest(self, key: str) -> str:
        return hmac.new(self._secret, key.encode("utf-8"), hashlib.sha256).hexdigest()

    async def create(
        self,
        name: str,
        owner: str,
        scopes: Sequence[str],
        *,
        expires_at: datetime | None = None,
    ) -> tuple[ApiKeyInfo, str]:
        """Issue a key; the plaintext in the result is the only copy that will ever exist."""
        now = self._now()
        expires_at = utc(expires_at)
        if expires_at is not None and expires_at <= now:
            raise ValidationError("expires_at is in the past", errors={"expires_at": "past"})
        plaintext = generate_api_key()
        info = ApiKeyInfo(
            key_id=parse_key_id(plaintext) or "",
            name=check_text("name", name),
            owner=check_text("owner", owner),
            scopes=validate_scopes(scopes),
            created_at=now,
            expires_at=expires_at,
        )
        async with store.connection(self._db, write=True) as conn:
            await store.insert_key(conn, info, self._digest(plaintext))
        _log.info("api key created", key_id=info.key_id, owner=info.owner, scopes=info.scopes)
        return info, plaintext

    async def verify(self, presented: str) -> ApiKeyInfo:
        """The key's info, or :class:`AuthenticationError` (one generic message for every
        reason: malformed, bad checksum, unknown, wrong secret, expired, revoked, replaced)."""
        now = self._now()
        fingerprint = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest()
        cached = self._cache.get(fingerprint)
        if cached is not None and cached.fresh(now):
            self._touch_if_due(cached.info, now)
            return cached.info
        waiting = self._inflight.get(fingerprint)
        if waiting is not None:
            return await asyncio.shield(waiting)
        future: asyncio.Future[ApiKeyInfo] = asyncio.get_running_loop().create_future()
        self._inflight[fingerprint] = future
        try:
            info = await self._verify_stored(presented, fingerprint, now)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here, so an unawaited future does not warn
            raise
        else:
            future.set_result(info)
            return info
        finally:
            del self._inflight[fingerprint]

    async def _verify_stored(self, presented: str, fingerprint: bytes, now: datetime) -> ApiKeyInfo:
        key_id = parse_key_id(presented)
        if key_id is None:
            raise self._rejected(None, "malformed")
        digest = self._digest(presented)
        known = self._cache.get(self._fingerprints.get(key_id, b""))
        if known is not None and known.fresh(now) and not hmac.compare_digest(known.digest, digest):
            raise self._rejected(key_id, "wrong secret")
        invalidations = self._invalidations
        async with store.connection(self._db) as conn:
            stored = await store.fetch(conn, key_id)
        expected = stored.hmac if stored is not None else self._digest(presented + "?")
        if not hmac.compare_digest(expected, digest) or stored is None:
            raise self._rejected(key_id, "unknown key" if stored is None else "wrong secret")
        info = stored.info
        if not info.usable(now):
            self.invalidate(key_id)
            raise self._rejected(key_id, info.state(now))
        self._touch_if_due(info, now)
        if invalidations == self._invalidations:
            ends = [now + self._ttl, info.expires_at, info.overlap_until]
            until = min(t for t in ends if t is not None)
            self._remember(fingerprint, _Verified(digest, info, now, until))
        return info

    def _rejected(self, key_id: str | None, reason: str) -> AuthenticationError:
        _log.info("api key rejected", key_id=key_id, reason=reason)
        return AuthenticationError(_REJECTED)

    def _remember(self, fingerprint: bytes, entry: _Verified) -> None:
        key_id = entry.info.key_id
        self._cache.pop(self._fingerprints.pop(key_id, b""), None)
        while len(self._cache) >= self._cache_size:
            oldest = next(iter(self._cache))
            self._fingerprints.pop(self._cache.pop(oldest).info.key_id, None)
        self._cache[fingerprint] = entry
        self._fingerprints[key_id] = fingerprint

    def _touch_if_due(self, info: ApiKeyInfo, now: datetime) -> None:
        """Record the key's last use in the background, at most once a minute per key."""
        last = info.last_used_at
        if (last is not None and now - last < TOUCH_INTERVAL) or info.key_id in self._touching:
            return
        self._touching.add(info.key_id)
        task = asyncio.get_running_loop().create_task(self._touch(info, now))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _touch(self, info: ApiKeyInfo, now: datetime) -> None:
        try:
            async with store.connection(self._db, write=True) as conn:
                await store.touch(conn, info.key_id, now, now - TOUCH_INTERVAL)
        except BackendError as exc:
            _log.warning("api key last use not recorded", key_id=info.key_id, error=exc.message)
        finally:
            self._touching.discard(info.key_id)
        fingerprint = self._fingerprints.get(info.key_id, b"")
        entry = self._cache.get(fingerprint)
        if entry is not None:
            touched = entry.info.model_copy(update={"last_used_at": now})
            self._cache[fingerprint] = _Verified(entry.digest, touched, entry.at, entry.until)

    async def drain(self) -> None:
        """Wait for background last-used writes (on shutdown, and in tests)."""
        while self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    def _announce(self, key_id: str) -> None:
        """Tell ``listeners`` (the hub: other instances, through the broker) that
        ``key_id`` changed, so their caches drop it too."""
        for listener in self.listeners:
            listener(key_id)

    def invalidate(self, key_id: str) -> None:
        """Forget cached verifications of ``key_id`` (revoked or rotated somewhere).

        A verification that read the key before this call and finishes after it does not
        put its (now stale) result back in the cache.
        """
        self._invalidations += 1
        self._cache.pop(self._fingerprints.pop(key_id, b""), None)

    async def get(self, key_id: str) -> ApiKeyInfo:
        """The key named by ``key_id`` (or its ``mn_`` prefix); :class:`NotFoundError` if none."""
        found = normalize_key_id(key_id)
        stored = None
        if found is not None:
            async with store.connection(self._db) as conn:
                stored = await store.fetch(conn, found)
        if stored is None:
            if found is None:
                raise NotFoundError("no such API key: a key id is 12 characters of [0-9a-z]")
            raise NotFoundError(f"no API key {found!r}", key_id=found)
        return stored.info

    async def list(
        self, owner: str | None = None, include_revoked: bool = False
    ) -> builtins.list[ApiKeyInfo]:
        """Keys (of ``owner``), oldest first; revoked ones only with ``include_revoked``."""
        async with store.connection(self._db) as conn:
            return builtins.list(await store.fetch_all(conn, owner, include_revoked))

    async def rotate(
        self, key_id: str, *, overlap: timedelta = timedelta(hours=24)
    ) -> tuple[ApiKeyInfo, str]:
        """Issue a successor (same name, owner, scopes, expiry); the old key keeps working
        until now + ``overlap``. Refused for revoked, expired or already rotated keys."""
        if overlap < timedelta(0):
            raise ValidationError("overlap cannot be negative", errors={"overlap": "negative"})
        old = await self.get(key_id)
        now = self._now()
        if not old.usable(now) or old.replaced_by is not None:
            why = (
                f"was replaced by {old.replaced_by}" if old.replaced_by else f"is {old.state(now)}"
            )
            raise ValidationError(f"API key {old.key_id} cannot be rotated: it {why}")
        plaintext = generate_api_key()
        new = old.model_copy(
            update={
                "key_id": parse_key_id(plaintext),
                "created_at": now,
                "last_used_at": None,
            }
        )
        async with store.connection(self._db, write=True) as conn:
            await store.insert_key(conn, new, self._digest(plaintext))
            if not await store.mark_replaced(conn, old.key_id, new.key_id, now + overlap):
                raise ValidationError(f"API key {old.key_id} was rotated or revoked meanwhile")
        self.invalidate(old.key_id)
        self._announce(old.key_id)
        _log.info("api key rotated", key_id=old.key_id, new_key_id=new.key_id, until=now + overlap)
        return new, plaintext

    async def revoke(self, key_id: str) -> ApiKeyInfo:
        """Revoke at once (idempotent): this instance refuses the key from now on."""
        old = await self.get(key_id)
        async with store.connection(self._db, write=True) as conn:
            await store.mark_revoked(conn, old.key_id, self._now())
            stored = await store.fetch(conn, old.key_id)
        self.invalidate(old.key_id)
        self._announce(old.key_id)
        assert stored is not None
        _log.info("api key revoked", key_id=old.key_id, owner=old.owner)
        return stored.info
