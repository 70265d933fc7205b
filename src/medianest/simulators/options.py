"""Options shared by every simulator.

One :class:`SimulatorOptions` value can build all of them, and they then agree with each
other: the Plex simulator's ``machineIdentifier`` is the ``clientIdentifier`` plex.tv lists
in ``/resources``, the per-server ``accessToken`` plex.tv hands a shared user is a token the
Plex simulator accepts, and Plex and Overseerr serve the same generated catalogue (same seed
and size, hence the same titles with the same TMDB/IMDb/TVDB ids).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from medianest.simulators.faults import FaultRule

PlexAccess = Literal["owner", "shared", "none"]


class PlexAccount(BaseModel):
    """A plex.tv account and what it may do on the simulated Plex server.

    ``access``: ``owner`` owns the server (its account token works on it and on admin
    endpoints), ``shared`` has the server shared with it (it must use ``server_token``, the
    per-server ``accessToken`` from ``/resources``), ``none`` cannot see the server at all.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: int
    username: str
    email: str
    token: str
    access: PlexAccess = "shared"
    server_token: str | None = None

    @property
    def plex_server_token(self) -> str | None:
        """The token this account uses against the simulated Plex server, if any."""
        if self.access == "owner":
            return self.server_token or self.token
        if self.access == "shared":
            return self.server_token or f"{self.token}-server"
        return None


class SimulatorOptions(BaseModel):
    """How to build a simulator (all fields have working defaults)."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    seed: int = Field(1, description="seed of every generated thing (catalogue, ids, faults)")
    size: int = Field(200, ge=0, description="titles in the Plex library (movies and shows)")
    token: str = Field("plex-owner-token", description="Plex owner token (PMS and plex.tv)")
    accounts: tuple[PlexAccount, ...] | None = Field(
        None, description="plex.tv accounts; default: owner, a shared friend, an outsider"
    )
    machine_identifier: str | None = Field(None, description="PMS id; derived from seed")
    friendly_name: str = "MediaNest Plex"
    plex_url: str = Field("http://127.0.0.1:32400", description="PMS URL plex.tv advertises")
    sessions: int = Field(1, ge=0, description="active playback sessions on PMS")
    max_page_size: int | None = Field(
        None, ge=1, description="PMS answers at most this many items per page if set"
    )
    pin_claim_after: int | None = Field(
        2, ge=0, description="a PIN is claimed on this poll number; never when None"
    )
    pin_lifetime: float | None = Field(
        None, gt=0, description="PIN life in seconds; default 1800 strong, 900 short"
    )
    pin_token: str | None = Field(None, description="token a claimed PIN holds; default token")
    api_key: str = Field("overseerr-api-key", description="Overseerr/Jellyseerr X-Api-Key")
    flavour: Literal["overseerr", "jellyseerr"] = "overseerr"
    request_available_after: int | None = Field(
        3, ge=0, description="polls of an approved request before its media is available"
    )
    kuma_version: Literal[1, 2] = 2
    kuma_slug: str = "home"
    kuma_silent_slugs: tuple[str, ...] = Field((), description="status pages that never answer")
    kuma_username: str = "admin"
    kuma_password: str = "kuma-password"  # noqa: S105 - a simulator's fake credential
    kuma_api_key: str | None = Field(None, description="Kuma API key accepted by /metrics")
    faults: tuple[FaultRule, ...] = Field((), description="fault rules installed at start")
    hang_limit: float = Field(300.0, gt=0, description="longest a request is held unanswered")
    record_requests: int = Field(500, ge=1, description="requests kept in the request log")
    clock: Callable[[], float] = Field(time.time, description="epoch-seconds time source")

    def plex_accounts(self) -> tuple[PlexAccount, ...]:
        if self.accounts is not None:
            return self.accounts
        return (
            PlexAccount(
                id=1001,
                username="owner",
                email="owner@example.com",
                token=self.token,
                access="owner",
            ),
            PlexAccount(
                id=1002,
                username="friend",
                email="friend@example.com",
                token="plex-friend-token",  # noqa: S106 - fake credential
                access="shared",
                server_token="plex-friend-server-token",  # noqa: S106 - fake credential
            ),
            PlexAccount(
                id=1003,
                username="outsider",
                email="outsider@example.com",
                token="plex-outsider-token",  # noqa: S106 - fake credential
                access="none",
            ),
        )

    def plex_machine_identifier(self) -> str:
        if self.machine_identifier:
            return self.machine_identifier
        return hashlib.sha1(
            f"medianest-plex-{self.seed}".encode(), usedforsecurity=False
        ).hexdigest()
