"""Who may call ``/api/v1`` until sign-in exists: loopback callers only.

Until the identity layer lands, the API answers only requests from the machine itself
(127.0.0.0/8, ::1) unless ``allow_anonymous`` (``MEDIANEST_ALLOW_ANONYMOUS=1``) is set.
Behind a proxy, the client address is the one uvicorn derives from ``X-Forwarded-For`` when
``server.proxy_headers`` trusts that proxy.
"""

from __future__ import annotations

import ipaddress

from fastapi import Request

from medianest.errors import AuthenticationError


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


async def local_or_anonymous(request: Request) -> None:
    """Dependency: refuse remote callers unless anonymous access is allowed."""
    if getattr(request.app.state, "allow_anonymous", False):
        return
    client = request.client.host if request.client else None
    if not is_loopback(client):
        raise AuthenticationError(
            "sign-in is not available yet: the API answers only on loopback unless "
            "MEDIANEST_ALLOW_ANONYMOUS=1 is set"
        )
