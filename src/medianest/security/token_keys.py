"""The ring of P-256 keys that sign the hub's access tokens, kept in ``signing_keys``.

A key signs from ``created_at`` until ``not_after_sign`` (``created_at`` + the rotation
period) and verifies until ``not_after_verify`` = ``not_after_sign`` + the longest token
lifetime + the leeway, so every token it signed stays verifiable until that token expires.
The private half is stored encrypted by the :class:`~medianest.security.vault.Vault`
(context ``signing_key:<kid>``); the public half as a JWK. Key ids are RFC 7638
thumbprints.

The newest key able to sign a token to its end signs. When none can, a process makes one:
it inserts it and rereads the table. Two processes may each make one at the same moment;
both are published and both verify. The ring is reread once a minute (a key retired
elsewhere stops verifying here within a minute) and when a token names an unknown key.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from joserfc.jwk import ECKey
from sqlalchemy import insert, select, update

from medianest.database import Database
from medianest.database.schema import signing_keys
from medianest.errors import AuthenticationError, ConfigurationError
from medianest.observability import get_logger
from medianest.security.apikeys_store import utc
from medianest.security.users_store import connection
from medianest.security.vault import Vault

_log = get_logger("medianest.security.tokens")

ALGORITHM = "ES256"
_STORE = "signing key store"


def _utcnow() -> datetime:
    return datetime.now(UTC)


def key_context(kid: str) -> str:
    """The vault context binding a private signing key to its key id."""
    return f"signing_key:{kid}"


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One key of the ring; ``private`` is ``None`` when this process cannot sign with it."""

    kid: str
    public: ECKey
    private: ECKey | None
    created_at: datetime
    not_after_sign: datetime
    not_after_verify: datetime

    def __repr__(self) -> str:
        return f"SigningKey({self.kid!r}, until={self.not_after_verify.isoformat()})"


class SigningKeys:
    """The key ring of one process (see the module docstring)."""

    def __init__(
        self,
        db: Database,
        vault: Vault,
        *,
        rotation: timedelta,
        max_ttl: timedelta,
        leeway: timedelta,
        reload_interval: timedelta = timedelta(minutes=1),
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._db, self._vault = db, vault
        self.rotation, self.max_ttl, self.leeway = rotation, max_ttl, leeway
        self._reload_interval = reload_interval
        self._clock = clock or _utcnow
        self._keys: dict[str, SigningKey] = {}
        self._loaded_at: datetime | None = None
        self._reloads = 0
        self._reload_lock = asyncio.Lock()
        self._create_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"SigningKeys({list(self._keys)!r})"

    def _now(self) -> datetime:
        return self._clock().astimezone(UTC)

    def get(self, kid: str) -> SigningKey | None:
        """The key ``kid`` as last read (``None`` if unknown here)."""
        return self._keys.get(kid)

    async def find(self, kid: str) -> SigningKey | None:
        """The key ``kid``, rereading the table once when it is not known here."""
        await self.fresh()
        key = self._keys.get(kid)
        if key is None:
            await self.reload(self._reloads)
            key = self._keys.get(kid)
        return key

    async def reload(self, arrived: int | None = None) -> None:
        """Reread the table, unless a reread that began after ``arrived`` (a count of
        rereads) has finished meanwhile: a burst of unknown key ids costs one query."""
        async with self._reload_lock:
            if arrived is not None and self._reloads > arrived:
                return
            self._reloads += 1
            now = self._now()
            query = select(signing_keys).where(signing_keys.c.not_after_verify > now)
            async with connection(self._db, what=_STORE) as conn:
                rows = (await conn.execute(query)).mappings().all()
            self._keys = {row["kid"]: self._key_of(row, now) for row in rows}
            self._loaded_at = now

    def _key_of(self, row: Any, now: datetime) -> SigningKey:
        kid = row["kid"]
        known = self._keys.get(kid)
        private = known.private if known is not None else None
        not_after_sign: datetime = utc(row["not_after_sign"])  # type: ignore[assignment]
        if private is None and now < not_after_sign:
            private = self._private_key(kid, row["private_key_enc"])
        return SigningKey(
            kid=kid,
            public=ECKey.import_key(row["public_jwk"]),
            private=private,
            created_at=utc(row["created_at"]),  # type: ignore[arg-type]
            not_after_sign=not_after_sign,
            not_after_verify=utc(row["not_after_verify"]),  # type: ignore[arg-type]
        )

    def _private_key(self, kid: str, sealed: str) -> ECKey | None:
        try:
            return ECKey.import_key(json.loads(self._vault.decrypt(sealed, key_context(kid))))
        except (ConfigurationError, AuthenticationError) as exc:
            _log.error("signing key cannot be decrypted; verify only", kid=kid, error=str(exc))
            return None

    async def fresh(self) -> None:
        """Reread the table when the last read is older than the reload interval."""
        loaded, now = self._loaded_at, self._now()
        if loaded is None or not timedelta(0) <= now - loaded < self._reload_interval:
            await self.reload(self._reloads)

    def _usable(self, key: SigningKey, now: datetime, ttl: timedelta) -> bool:
        return (
            key.private is not None
            and key.created_at <= now + self.leeway
            and now < key.not_after_sign
            and now + ttl + self.leeway <= key.not_after_verify
        )

    async def signing_key(self, ttl: timedelta) -> SigningKey:
        """The newest key that can sign a token living ``ttl``; made when there is none."""
        await self.fresh()
        for attempt in range(2):
            now = self._now()
            usable = [k for k in self._keys.values() if self._usable(k, now, ttl)]
            if usable:
                return max(usable, key=lambda k: (k.created_at, k.kid))
            if attempt == 0:
                async with self._create_lock:
                    await self.reload(self._reloads)
                    if not any(self._usable(k, self._now(), ttl) for k in self._keys.values()):
                        await self.create()
        raise ConfigurationError("no token signing key could be made")

    async def create(self) -> str:
        """Make, store and load a new key that signs from now on; its key id."""
        private = ECKey.generate_key("P-256", private=True)
        kid = private.thumbprint()
        now = self._now()
        not_after_sign = now + self.rotation
        public = private.as_dict(private=False, kid=kid, alg=ALGORITHM, use="sig")
        sealed = self._vault.encrypt(json.dumps(private.as_dict(private=True)), key_context(kid))
        async with connection(self._db, write=True, what=_STORE) as conn:
            await conn.execute(
                insert(signing_keys).values(
                    kid=kid,
                    algorithm=ALGORITHM,
                    private_key_enc=sealed,
                    public_jwk=public,
                    created_at=now,
                    not_after_sign=not_after_sign,
                    not_after_verify=not_after_sign + self.max_ttl + self.leeway,
                )
            )
            expired = signing_keys.c.not_after_verify < now - timedelta(days=1)
            await conn.execute(signing_keys.delete().where(expired))
        _log.info("token signing key created", kid=kid, signs_until=not_after_sign.isoformat())
        await self.reload()
        return kid

    async def retire(self, kid: str) -> None:
        """Stop signing and verifying with ``kid`` at once (a compromised key)."""
        now = self._now()
        async with connection(self._db, write=True, what=_STORE) as conn:
            await conn.execute(
                update(signing_keys)
                .where(signing_keys.c.kid == kid)
                .values(not_after_sign=now, not_after_verify=now)
            )
        _log.warning("token signing key retired", kid=kid)
        await self.reload()

    async def jwks(self) -> dict[str, Any]:
        """The public keys that verify tokens now, newest first."""
        await self.fresh()
        now = self._now()
        keys = sorted(self._keys.values(), key=lambda k: k.created_at, reverse=True)
        return {
            "keys": [
                k.public.as_dict(private=False, kid=k.kid, alg=ALGORITHM, use="sig")
                for k in keys
                if now < k.not_after_verify
            ]
        }

    async def reencrypt(self, vault: Vault | None = None) -> int:
        """Re-encrypt private keys not under ``vault``'s (default: this ring's) first key;
        how many were. Safe to run in several processes at once, and again."""
        vault = vault or self._vault
        async with connection(self._db, what=_STORE) as conn:
            query = select(signing_keys.c.kid, signing_keys.c.private_key_enc)
            rows = (await conn.execute(query)).all()
        done = 0
        for kid, old in rows:
            if not vault.needs_reencrypt(old):
                continue
            new = vault.reencrypt(old, key_context(kid))
            async with connection(self._db, write=True, what=_STORE) as conn:
                result = await conn.execute(
                    update(signing_keys)
                    .where(signing_keys.c.kid == kid, signing_keys.c.private_key_enc == old)
                    .values(private_key_enc=new)
                )
            done += result.rowcount
        return done
