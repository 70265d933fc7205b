"""Builders the hub's wiring uses: each turns settings into one part (or a list of them).

Kept apart from :mod:`medianest.app` so that module stays the readable order of start-up and
shutdown; like it, this module may know every part.
"""

from __future__ import annotations

import os
import re
import socket
from typing import Any

import aiohttp

from medianest import __version__
from medianest.aggregation import Source
from medianest.backends import mask_url
from medianest.config import Settings, UpstreamSettings
from medianest.database import Database
from medianest.discovery import ServiceInstance
from medianest.integrations.registry import Integrations
from medianest.security import ApiKeyService
from medianest.security.identity import Identity


def build_identity(
    settings: Settings, database: Database, api_keys: ApiKeyService, secret: bytes
) -> Identity:
    """People, sessions, access tokens and single sign-on, from the settings."""
    from medianest.security.oidc import OidcClient
    from medianest.security.sessions import SessionService
    from medianest.security.tokens import TokenIssuer
    from medianest.security.users import UserService
    from medianest.security.vault import Vault

    identity = settings.identity
    base = settings.server.base_url
    vault = Vault.from_config(identity.encryption_keys, secret)
    users = UserService.from_settings(database, vault, identity)
    sessions = SessionService.from_settings(database, users, identity)
    tokens = TokenIssuer.from_settings(database, vault, identity, base)
    oidc = None
    if settings.oidc is not None:
        redirect = settings.oidc.redirect_uri or f"{base}/api/v1/auth/oidc/callback"
        oidc = OidcClient(settings.oidc, secret=secret, redirect_uri=redirect)
    return Identity(users, sessions, tokens, api_keys, oidc=oidc)


_HEALTH_PATHS = {"plex": "/identity", "overseerr": "/api/v1/status", "jellyseerr": "/api/v1/status"}


def hub_instances(settings: Settings) -> list[ServiceInstance]:
    """What this process registers: one instance per role it runs, and each configured
    upstream (as the instance its URL names, health-checked where the kind has a cheap
    unauthenticated endpoint)."""
    node = re.sub(r"[^A-Za-z0-9._:-]", "-", f"{socket.gethostname()}-{os.getpid()}")[:100]
    base = settings.server.base_url
    meta = {"host": socket.gethostname(), "pid": str(os.getpid())}
    found = [
        ServiceInstance(
            id=f"{node}-{role}",
            name=f"medianest-{role}",
            version=__version__,
            endpoints=(base,),
            health_check_url=f"{base}/health",
            tags=("medianest", role),
            metadata=meta,
        )
        for role in settings.server.roles
    ]
    for name, upstream in settings.upstreams.items():
        if not upstream.enabled or not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", name):
            continue
        url = str(upstream.url).rstrip("/")
        path = _HEALTH_PATHS.get(settings.upstream_kind(name))
        found.append(
            ServiceInstance(
                id=f"upstream-{name}",
                name=name,
                endpoints=(url,),
                health_check_url=f"{url}{path}" if path else None,
                tags=("upstream", settings.upstream_kind(name)),
            )
        )
    return found


def search_sources(integrations: Integrations) -> list[Source]:
    """What unified search asks: every Plex server and every Overseerr/Jellyseerr."""
    from medianest.integrations.overseerr import OverseerrAdapter
    from medianest.integrations.plex import PlexAdapter

    plex = [Source(a.name, a.kind, a.search) for a in integrations.all_of(PlexAdapter)]
    requests = [
        Source(a.name, a.kind, a.search_items) for a in integrations.all_of(OverseerrAdapter)
    ]
    return plex + requests


def reachability(upstream: UpstreamSettings) -> Any:
    async def probe() -> str:
        timeout = aiohttp.ClientTimeout(total=5)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(str(upstream.url), allow_redirects=False) as response,
            ):
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RuntimeError(f"unreachable: {type(exc).__name__} {exc}".strip()) from exc
        if status >= 500:
            raise RuntimeError(f"answered HTTP {status}")
        return f"HTTP {status} from {mask_url(str(upstream.url))}"

    return probe
