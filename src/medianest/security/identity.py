"""Identity: who a request acts for, and the sign-in flows that open sessions.

:class:`Identity` ties together the parts of :mod:`medianest.security`: the people
(:class:`~medianest.security.users.UserService`), their sessions
(:class:`~medianest.security.sessions.SessionService`), the hub's signed access tokens
(:class:`~medianest.security.tokens.TokenIssuer`), API keys, the vault that keeps Plex
tokens, and single sign-on (:class:`~medianest.security.oidc.OidcClient`) when configured.

Credentials a request may carry, and what each becomes (a :class:`Principal`):

* ``Authorization: Bearer mn_...`` / ``X-Api-Key`` — an API key: its own scopes;
* ``Authorization: Bearer <JWT>`` — an access token issued here (15 minutes by default): the
  *current* role of its user, read through the session named by its ``sid``, so logging out,
  disabling a user or changing their role takes effect at once, not when the token expires;
* the session cookie — the same, for browsers.

Sign-in paths: a claimed plex.tv PIN (the account must reach this hub's Plex server), an
OIDC authorization code, a local password (``medianest admin create``). Each opens a
session; ``bearer`` sessions also get an access token, their session token serving as the
refresh token for :meth:`Identity.refresh`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from medianest.errors import AuthenticationError, AuthorizationError, UpstreamError
from medianest.observability import get_logger
from medianest.security.apikeys import ApiKeyService
from medianest.security.roles import Principal
from medianest.security.sessions import TOKEN_PREFIX, Session, SessionKind, SessionService
from medianest.security.tokens import TokenIssuer
from medianest.security.users import UserService
from medianest.security.users_store import User

_log = get_logger("medianest.security.identity")
_NO_ACCESS = (
    "this Plex account cannot reach this hub's Plex server: ask the server's owner to share "
    "a library with it, then sign in again"
)


@dataclass(frozen=True)
class SignIn:
    """A new session: ``session_token`` is the cookie value or the refresh token (shown
    once); ``access_token`` is set for bearer sessions."""

    user: User
    session: Session
    session_token: str
    access_token: str | None = None
    access_expires_at: datetime | None = None


class Identity:
    """Resolve credentials to principals; open, refresh and close sessions."""

    def __init__(
        self,
        users: UserService,
        sessions: SessionService,
        tokens: TokenIssuer,
        api_keys: ApiKeyService,
        *,
        oidc: Any = None,
    ) -> None:
        self.users = users
        self.sessions = sessions
        self.tokens = tokens
        self.api_keys = api_keys
        self.oidc = oidc

    async def start(self) -> None:
        await self.tokens.start()
        if self.oidc is not None:
            await self.oidc.start()

    async def close(self) -> None:
        if self.oidc is not None:
            await self.oidc.close()
        await self.tokens.close()

    # --- credentials -> principals ---------------------------------------------------------

    async def from_api_key(self, presented: str) -> Principal:
        info = await self.api_keys.verify(presented)
        return Principal.for_api_key(info.key_id, info.name, info.scopes, info.owner)

    async def from_access_token(self, token: str) -> tuple[Principal, User]:
        """The person behind a hub access token (refused: any token problem, a closed
        session, a disabled user)."""
        if token.startswith(TOKEN_PREFIX):
            raise AuthenticationError("a session token is not an access token: use /auth/token")
        claims = await self.tokens.verify(token)
        session, user = await self.sessions.resolve_id(str(claims.get("sid", "")))
        if user.id != claims.get("sub"):
            raise AuthenticationError("invalid or expired token")
        return Principal.for_user(user.id, user.username, user.role, session.id), user

    async def from_session_token(self, token: str) -> tuple[Principal, User]:
        session, user = await self.sessions.resolve(token)
        return Principal.for_user(user.id, user.username, user.role, session.id), user

    # --- sessions ----------------------------------------------------------------------------

    async def open_session(
        self, user: User, kind: SessionKind, *, user_agent: str | None, ip: str | None
    ) -> SignIn:
        token, session = await self.sessions.create(user, kind, user_agent=user_agent, ip=ip)
        if kind == "cookie":
            return SignIn(user, session, token)
        access, expires = await self.tokens.issue(user, session.id)
        return SignIn(user, session, token, access, expires)

    async def refresh(self, refresh_token: str) -> SignIn:
        """A new access token for a bearer session (its refresh token stays the same)."""
        session, user = await self.sessions.resolve(refresh_token)
        if session.kind != "bearer":
            raise AuthenticationError("invalid or expired session")
        access, expires = await self.tokens.issue(user, session.id)
        return SignIn(user, session, refresh_token, access, expires)

    async def sign_out(self, principal: Principal) -> bool:
        if principal.session_id is None:
            return False
        return await self.sessions.revoke(principal.session_id)

    # --- sign-in flows -----------------------------------------------------------------------

    async def plex_user(self, account_token: str, plextv: Any, plex: Any) -> User:
        """The local user for a plex.tv account token, once the account is known to reach
        the configured Plex server (its resources list names that server)."""
        try:
            account = await plextv.user(account_token)
            servers = await plextv.resources(account_token)
            machine = (await plex.identity()).machine_identifier
        except UpstreamError as exc:
            _log.warning("plex sign-in check failed", error=exc.message)
            raise
        if not any(server.client_identifier == machine for server in servers):
            _log.info("plex sign-in refused: no access to the server", plex_id=account.id)
            raise AuthorizationError(_NO_ACCESS, reason="no_server_access")
        user, created = await self.users.upsert_plex(
            account.id,
            account.username,
            email=account.email,
            display_name=account.title or account.username,
            token=account.auth_token.get_secret_value(),
        )
        if user.disabled:
            raise AuthenticationError("this account is disabled")
        _log.info("plex sign-in", user_id=user.id, created=created)
        return user

    async def oidc_user(self, params: dict[str, str], sealed_state: str) -> tuple[User, str]:
        """The local user for a completed OIDC authorization code flow, and where to go."""
        if self.oidc is None:
            raise AuthenticationError("single sign-on is not configured on this hub")
        found = await self.oidc.complete(params, sealed_state)
        claims = dict(found.claims)
        if found.username:
            claims["preferred_username"] = found.username
        user, created = await self.users.upsert_oidc(
            found.issuer, found.subject, claims, role=found.role
        )
        if user.disabled:
            raise AuthenticationError("this account is disabled")
        _log.info("oidc sign-in", user_id=user.id, created=created)
        return user, found.return_to

    async def disable_user(self, user_id: str, *, actor_id: str | None) -> User:
        """Disable a person: their sessions and API keys stop working at once."""
        user = await self.users.disable(user_id, actor_id=actor_id)
        await self.sessions.revoke_all(user.id)
        revoked = await self._revoke_keys(user)
        _log.info("user disabled", user_id=user.id, actor_id=actor_id, keys_revoked=revoked)
        return user

    async def delete_user(self, user_id: str, *, actor_id: str | None) -> User:
        """Delete a person: their sessions go with them, their API keys are revoked."""
        user = await self.users.delete(user_id, actor_id=actor_id)
        self.sessions.invalidate_user(user.id)
        revoked = await self._revoke_keys(user)
        _log.info("user deleted", user_id=user.id, actor_id=actor_id, keys_revoked=revoked)
        return user

    async def _revoke_keys(self, user: User) -> int:
        revoked = 0
        for owner in {user.id, user.username}:
            for key in await self.api_keys.list(owner=owner):
                await self.api_keys.revoke(key.key_id)
                revoked += 1
        return revoked
