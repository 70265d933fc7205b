"""The hub's short-lived bearer access tokens: ES256 JWTs under rotating keys (joserfc).

A token (header ``{"alg": "ES256", "kid": ..., "typ": "at+jwt"}``, RFC 9068's type for access
tokens) carries ``iss`` (the hub), ``aud`` (``medianest``), ``sub`` (the user id), ``sid``
(the session it was issued for), ``role``, ``iat``, ``exp`` and a random ``jti``. It lives
15 minutes by default; the session's refresh token gets a new one. The keys and their
rotation are :mod:`medianest.security.token_keys`.

**Verification** refuses, with the one message "invalid or expired token" (the reason goes
to a debug log, never the token): a token over 8 KB (before parsing), anything but a
three-part compact JWS, a header other than exactly ``alg`` ES256 + ``kid`` + ``typ``
at+jwt (so ``none``, HS256 signed with the public key, embedded ``jwk``/``jku``, ``crit``,
``b64`` are all refused), an unknown or retired key id (after rereading the keys once,
since another instance may have rotated), a bad signature, and claims that are wrong:
issuer, audience, expiry and not-before (30 s leeway), issue time in the future or outside
the key's signing window, a lifetime longer than allowed, a missing ``sub``/``sid``/``jti``,
an unknown role.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from joserfc import jws, jwt
from joserfc.errors import JoseError

from medianest.config.identity import IdentitySettings
from medianest.database import Database
from medianest.errors import AuthenticationError, ConfigurationError, ValidationError
from medianest.observability import get_logger
from medianest.security.roles import Principal, Role
from medianest.security.token_keys import ALGORITHM, SigningKey, SigningKeys, key_context
from medianest.security.users_store import User
from medianest.security.vault import Vault

__all__ = [
    "ALGORITHM",
    "AUDIENCE",
    "MAX_TOKEN_BYTES",
    "TOKEN_TYPE",
    "SigningKey",
    "SigningKeys",
    "TokenIssuer",
    "key_context",
]

_log = get_logger("medianest.security.tokens")

AUDIENCE = "medianest"
TOKEN_TYPE = "at+jwt"  # noqa: S105 - the JWT "typ" of access tokens (RFC 9068)
MAX_TOKEN_BYTES = 8192
_HEADER = frozenset({"alg", "kid", "typ"})
_REJECTED = "invalid or expired token"


def _utcnow() -> datetime:
    return datetime.now(UTC)


class TokenIssuer:
    """Issue and verify access tokens; see the module docstring.

    ``issuer`` is the ``iss`` (the hub's public URL); ``ttl`` the default lifetime and
    ``max_ttl`` (default ``ttl``) the longest :meth:`issue` grants; ``rotation`` how long a
    key signs; ``clock`` returns aware UTC datetimes (tests move it).
    """

    def __init__(
        self,
        db: Database,
        vault: Vault,
        *,
        issuer: str,
        audience: str = AUDIENCE,
        ttl: timedelta = timedelta(minutes=15),
        max_ttl: timedelta | None = None,
        rotation: timedelta = timedelta(hours=24),
        leeway: timedelta = timedelta(seconds=30),
        reload_interval: timedelta = timedelta(minutes=1),
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.max_ttl = max_ttl or ttl
        if not issuer or ttl <= timedelta(0) or ttl > self.max_ttl or rotation <= timedelta(0):
            raise ConfigurationError("token issuer: issuer, ttl <= max_ttl and rotation needed")
        self.issuer, self.audience = issuer, audience
        self.ttl, self.leeway = ttl, leeway
        self.keys = SigningKeys(
            db,
            vault,
            rotation=rotation,
            max_ttl=self.max_ttl,
            leeway=leeway,
            reload_interval=reload_interval,
            clock=clock,
        )
        self._clock = clock or _utcnow

    @classmethod
    def from_settings(
        cls,
        db: Database,
        vault: Vault,
        identity: IdentitySettings,
        issuer: str,
        *,
        clock: Callable[[], datetime] | None = None,
    ) -> TokenIssuer:
        """``issuer``: ``identity.issuer`` when set, else what the caller derived."""
        return cls(
            db,
            vault,
            issuer=identity.issuer or issuer,
            ttl=timedelta(minutes=identity.access_token_minutes),
            rotation=timedelta(hours=identity.signing_key_rotation_hours),
            clock=clock,
        )

    def __repr__(self) -> str:
        return f"TokenIssuer(issuer={self.issuer!r}, {self.keys!r})"

    def _now(self) -> datetime:
        return self._clock().astimezone(UTC)

    async def start(self) -> None:
        """Load the keys and make one when none can sign."""
        await self.keys.reload()
        await self.keys.signing_key(self.ttl)

    async def close(self) -> None:
        """Nothing to release; for symmetry with the hub's other parts."""

    async def rotate(self) -> str:
        """Make a new key that signs from now on (older keys keep verifying); its id."""
        return await self.keys.create()

    async def retire(self, kid: str) -> None:
        """Stop signing and verifying with ``kid`` at once (a compromised key); other
        instances follow when they next reread the keys (within a minute)."""
        await self.keys.retire(kid)

    async def jwks(self) -> dict[str, Any]:
        """The public keys that verify tokens now, for ``/.well-known/jwks.json``."""
        return await self.keys.jwks()

    async def reencrypt_keys(self, vault: Vault | None = None) -> int:
        """Re-encrypt private keys not under ``vault``'s first key; how many were."""
        return await self.keys.reencrypt(vault)

    # --- tokens ---------------------------------------------------------------------------

    async def issue(
        self,
        subject: User | Principal,
        session_id: str | None = None,
        *,
        ttl: timedelta | None = None,
    ) -> tuple[str, datetime]:
        """An access token for ``subject`` acting through ``session_id`` (a principal's own
        session by default), and when it expires."""
        ttl = ttl or self.ttl
        if not timedelta(seconds=1) <= ttl <= self.max_ttl:
            raise ValidationError(f"an access token lives 1 s to {self.max_ttl}")
        if isinstance(subject, Principal):
            session_id = session_id or subject.session_id
        if subject.role is None or not session_id or getattr(subject, "kind", "user") != "user":
            raise ValidationError("access tokens are issued to people, for a session")
        key = await self.keys.signing_key(ttl)
        now = self._now()
        expires_at = now + ttl
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject.id,
            "sid": session_id,
            "role": Role(subject.role).value,
            "iat": int(now.timestamp()),
            "exp": int(expires_at.timestamp()),
            "jti": secrets.token_urlsafe(16),
        }
        header = {"alg": ALGORITHM, "kid": key.kid, "typ": TOKEN_TYPE}
        assert key.private is not None
        token = jwt.encode(header, claims, key.private, algorithms=[ALGORITHM])
        return token, datetime.fromtimestamp(claims["exp"], UTC)  # type: ignore[arg-type]

    async def verify(self, token: str) -> dict[str, Any]:
        """The claims of a valid token, else :class:`AuthenticationError`."""
        if not isinstance(token, str) or len(token.encode("utf-8", "replace")) > MAX_TOKEN_BYTES:
            raise self._rejected("too long or not text")
        try:
            header = jws.extract_compact(token.encode("ascii")).headers()
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            raise self._rejected(f"malformed: {type(exc).__name__}") from None
        kid = header.get("kid")
        if (
            set(header) != _HEADER
            or header.get("alg") != ALGORITHM
            or header.get("typ") != TOKEN_TYPE
            or not isinstance(kid, str)
            or not 1 <= len(kid) <= 64
        ):
            raise self._rejected("header not allowed")
        key = await self.keys.find(kid)
        now = self._now()
        if key is None or now >= key.not_after_verify:
            raise self._rejected("unknown or retired key")
        try:
            claims = jwt.decode(token, key.public, algorithms=[ALGORITHM]).claims
            self._claims_registry(now).validate(claims)
        except (JoseError, ValueError, TypeError) as exc:
            raise self._rejected(f"{type(exc).__name__}: {exc}") from None
        return self._checked(claims, key)

    def _claims_registry(self, now: datetime) -> jwt.JWTClaimsRegistry:
        essential: Any = {"essential": True}
        return jwt.JWTClaimsRegistry(
            now=int(now.timestamp()),
            leeway=int(self.leeway.total_seconds()),
            iss={"essential": True, "value": self.issuer},
            aud={"essential": True, "value": self.audience},
            sub=essential,
            sid=essential,
            jti=essential,
            iat=essential,
            exp=essential,
            role={"essential": True, "values": [role.value for role in Role]},
        )

    def _checked(self, claims: dict[str, Any], key: SigningKey) -> dict[str, Any]:
        try:
            issued = datetime.fromtimestamp(claims["iat"], UTC)
            lifetime = timedelta(seconds=claims["exp"] - claims["iat"])
        except (ValueError, OverflowError, OSError) as exc:
            raise self._rejected(f"times out of range: {type(exc).__name__}") from None
        if not key.created_at - self.leeway <= issued <= key.not_after_sign + self.leeway:
            raise self._rejected("issued outside the key's signing window")
        if lifetime > self.max_ttl + self.leeway or not isinstance(claims["sid"], str):
            raise self._rejected("lifetime too long or bad sid")
        return claims

    def _rejected(self, reason: str) -> AuthenticationError:
        _log.debug("access token rejected", reason=reason)
        return AuthenticationError(_REJECTED)
