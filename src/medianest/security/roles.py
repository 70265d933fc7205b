"""Roles of people, the permission scopes of the hub, and who is asking (:class:`Principal`).

One vocabulary serves sessions and API keys alike. A person has a :class:`Role`, which grants
the scopes in :data:`ROLE_SCOPES`; an API key carries its scopes itself (see
:mod:`medianest.security.apikeys`). Either way a request ends up with a :class:`Principal`,
and the API asks it ``principal.has("requests:write")``.

Scopes are lower-case names; ``admin`` grants every scope, including scopes added later.

=================  ===========================================================
scope              allows
=================  ===========================================================
catalog:read       search and browse the unified catalog
services:read      see which services are up
requests:read      see media requests (one's own, or all with ``can_see_all``)
requests:write     make and cancel media requests
downloads:read     see YouTube downloads
downloads:write    start and cancel YouTube downloads
users:admin        manage people: roles, disable, reset passwords
keys:admin         manage every API key
gateway:admin      read and reload the gateway's routes
admin              everything above and anything added later
=================  ===========================================================
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

ADMIN = "admin"
CATALOG_READ = "catalog:read"
SERVICES_READ = "services:read"
REQUESTS_READ = "requests:read"
REQUESTS_WRITE = "requests:write"
DOWNLOADS_READ = "downloads:read"
DOWNLOADS_WRITE = "downloads:write"
USERS_ADMIN = "users:admin"
KEYS_ADMIN = "keys:admin"
GATEWAY_ADMIN = "gateway:admin"

SCOPES: dict[str, str] = {
    CATALOG_READ: "search and browse the unified catalog",
    SERVICES_READ: "see which services are up",
    REQUESTS_READ: "see media requests",
    REQUESTS_WRITE: "make and cancel media requests",
    DOWNLOADS_READ: "see YouTube downloads",
    DOWNLOADS_WRITE: "start and cancel YouTube downloads",
    USERS_ADMIN: "manage people: roles, disable, reset passwords",
    KEYS_ADMIN: "manage every API key",
    GATEWAY_ADMIN: "read and reload the gateway's routes",
    ADMIN: "everything, including scopes added later",
}
"""The catalogue of scopes the hub checks, with what each allows (for UIs and docs)."""


class Role(StrEnum):
    """What a person may do: ``admin`` everything, ``user`` the portal, ``guest`` look only."""

    ADMIN = "admin"
    USER = "user"
    GUEST = "guest"


ROLE_SCOPES: dict[Role, frozenset[str]] = {
    Role.ADMIN: frozenset({ADMIN}),
    Role.USER: frozenset(
        {
            CATALOG_READ,
            SERVICES_READ,
            REQUESTS_READ,
            REQUESTS_WRITE,
            DOWNLOADS_READ,
            DOWNLOADS_WRITE,
        }
    ),
    Role.GUEST: frozenset({CATALOG_READ, SERVICES_READ}),
}


def scopes_of(role: Role | str) -> frozenset[str]:
    """The scopes ``role`` grants (``ValueError`` for a name that is not a role)."""
    return ROLE_SCOPES[Role(role)]


def grants(granted: Iterable[str], scope: str) -> bool:
    """Whether the scopes ``granted`` include ``scope`` (``admin`` includes every scope)."""
    have = granted if isinstance(granted, (set, frozenset)) else set(granted)
    return ADMIN in have or scope in have


PrincipalKind = Literal["user", "api_key"]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts for: a signed-in person or an API key.

    ``id`` is the user id or the key id; ``credential_id`` the session id (people) or the key
    id (API keys), so audit lines can say which credential was used. ``role`` is ``None`` for
    API keys, whose ``scopes`` are their own. ``owner`` is whose data this principal works
    on when data is owner-scoped: the user id for people, the key's owner for API keys.
    """

    kind: PrincipalKind
    id: str
    name: str
    role: Role | None
    scopes: frozenset[str] = field(default_factory=frozenset)
    credential_id: str | None = None
    owner: str | None = None

    @classmethod
    def for_user(
        cls, user_id: str, name: str, role: Role | str, session_id: str | None = None
    ) -> Principal:
        """A person acting through a session: the scopes of their role."""
        role = Role(role)
        return cls("user", user_id, name, role, ROLE_SCOPES[role], session_id, user_id)

    @classmethod
    def for_api_key(cls, key_id: str, name: str, scopes: Iterable[str], owner: str) -> Principal:
        """An API key (named ``name``, owned by ``owner``): its own scopes, no role."""
        return cls("api_key", key_id, name, None, frozenset(scopes), key_id, owner)

    @property
    def session_id(self) -> str | None:
        """The session a person acts through (``None`` for API keys)."""
        return self.credential_id if self.kind == "user" else None

    @property
    def key_id(self) -> str | None:
        """The API key used (``None`` for people)."""
        return self.credential_id if self.kind == "api_key" else None

    def has(self, scope: str) -> bool:
        """Whether this principal may do what ``scope`` allows (``admin`` allows all)."""
        return grants(self.scopes, scope)

    @property
    def is_admin(self) -> bool:
        """Holds the ``admin`` scope (an admin person, or an API key with ``admin``)."""
        return ADMIN in self.scopes

    @property
    def can_see_all(self) -> bool:
        """Whether owner-scoped data (requests, downloads, keys) of everyone is visible,
        not only this principal's own: admins only."""
        return self.is_admin
