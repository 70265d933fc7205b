"""The plex.tv adapter: PIN sign-in, the account behind a token, and its servers (NOTES.md 2).

The sign-in flow: :meth:`PlexTvAdapter.create_pin` (``POST /api/v2/pins?strong=true``,
answered **201**), send the user to :meth:`PlexTvAdapter.auth_url`, then
:meth:`PlexTvAdapter.poll_pin` until the PIN carries an ``authToken`` (a 404 means it expired).
With the token, :meth:`PlexTvAdapter.user` says who signed in and
:meth:`PlexTvAdapter.resources` lists the servers they may use, each with its own
``accessToken`` (for a shared server it is not the account token).

Every request carries the hub's ``X-Plex-*`` identification; plex.tv ties a PIN to
``X-Plex-Client-Identifier`` and refuses requests without it. Tokens handed to a method are
sent only as the ``X-Plex-Token`` header and come back only as :class:`~pydantic.SecretStr`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from pydantic import SecretStr

from medianest import errors
from medianest.config import UpstreamSettings
from medianest.integrations.base import HttpAdapter
from medianest.integrations.http import UpstreamHttp
from medianest.integrations.plex_models import PlexAccount, PlexConnection, PlexPin, PlexServer
from medianest.integrations.plexcommon import (
    PRODUCT,
    ContractViolation,
    as_bool,
    as_int,
    as_str,
    decode,
    epoch,
    iso_time,
    plex_http,
)

__all__ = ["PlexAccount", "PlexConnection", "PlexPin", "PlexServer", "PlexTvAdapter"]

AUTH_APP_URL = "https://app.plex.tv/auth"
PINS = "/api/v2/pins"
PIN = "/api/v2/pins/{pinId}"
USER = "/api/v2/user"
RESOURCES = "/api/v2/resources"


class PlexTvAdapter(HttpAdapter):
    """plex.tv's account API for one hub (one client identifier).

    Not resolved through the service registry: plex.tv is one public service at one address.
    """

    kind = "plextv"
    discoverable = False

    def __init__(
        self,
        name: str,
        http: UpstreamHttp,
        *,
        client_identifier: str,
        token: SecretStr | None = None,
        auth_app_url: str = AUTH_APP_URL,
    ) -> None:
        super().__init__(name, http)
        self.client_identifier = client_identifier
        self.auth_app_url = auth_app_url
        self._token = token

    def __repr__(self) -> str:
        return f"PlexTvAdapter({self.name!r}, {self.http.base_url!r})"

    @classmethod
    def from_settings(
        cls,
        name: str,
        upstream: UpstreamSettings,
        *,
        client_identifier: str | None = None,
        registry: Any = None,
        clock: Any = None,
        **context: Any,
    ) -> PlexTvAdapter:
        """Build from ``[upstreams.<name>]`` (``url`` is ``https://plex.tv`` in production).

        ``client_identifier`` is the hub's stable id. Options: ``device_name``
        (``X-Plex-Device-Name``), ``auth_app_url`` (where :meth:`auth_url` sends users).
        A URL ending in ``/api/v2`` is accepted too. Other keyword context is ignored.
        """
        http, identifier = plex_http(
            name,
            upstream,
            client_identifier=client_identifier,
            base_url=str(upstream.url).rstrip("/").removesuffix("/api/v2"),
            registry=registry,
            clock=clock,
        )
        app = str(upstream.options.get("auth_app_url", AUTH_APP_URL))
        return cls(name, http, client_identifier=identifier, token=upstream.token, auth_app_url=app)

    async def create_pin(self, *, strong: bool = True) -> PlexPin:
        """A new PIN; ``strong`` gives the long code of the browser flow (the default)."""
        response = await self.http.request(
            "POST", PINS, query={"strong": "true" if strong else "false"}, ok=(201,)
        )
        return decode(response, parse_pin)

    def auth_url(self, pin: PlexPin, *, forward_url: str | None = None) -> str:
        """Where to send the user to approve ``pin``: parameters in the fragment after ``#?``,
        the nested ``context[device][product]`` key bracket-encoded; ``forward_url`` is where
        plex.tv sends the browser back to afterwards."""
        params = [
            ("clientID", pin.client_identifier or self.client_identifier),
            ("code", pin.code),
            ("context[device][product]", PRODUCT),
        ]
        if forward_url:
            params.append(("forwardUrl", forward_url))
        fragment = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in params)
        return f"{self.auth_app_url}#?{fragment}"

    async def poll_pin(self, pin_id: int) -> PlexPin:
        """The PIN now; ``auth_token`` is None until approved. Expired: UpstreamNotFound."""
        try:
            response = await self.http.request("GET", PIN, path={"pinId": pin_id})
        except errors.UpstreamNotFound as exc:
            raise errors.UpstreamNotFound(
                f"plex.tv PIN {pin_id} expired (or was never created by this client)",
                service=self.name,
                endpoint=PIN,
                status=exc.status,
                method="GET",
            ) from exc
        return decode(response, parse_pin)

    async def user(self, token: str) -> PlexAccount:
        """The account ``token`` belongs to; UpstreamAuthError when plex.tv refuses it."""
        try:
            response = await self.http.request("GET", USER, headers=_token(token))
        except errors.UpstreamAuthError as exc:
            raise errors.UpstreamAuthError(
                "plex.tv refused the token (invalid, expired or revoked)",
                service=self.name,
                endpoint=USER,
                status=exc.status,
                method="GET",
            ) from exc
        return decode(response, lambda data: parse_account(data, token))

    async def resources(self, token: str) -> list[PlexServer]:
        """The servers the account of ``token`` may use, each with its own access token and
        its connections ordered local, then direct remote, then relay."""
        response = await self.http.request(
            "GET",
            RESOURCES,
            query={"includeHttps": 1, "includeRelay": 1, "includeIPv6": 1},
            headers=_token(token),
        )
        return decode(response, parse_servers)

    async def probe(self) -> str | None:
        """Checks the configured token if there is one, else only that plex.tv answers.

        plex.tv tells no version, so this returns None.
        """
        if self._token is not None:
            await self.user(self._token.get_secret_value())
        else:
            await self.http.request("GET", USER, ok=(200, 401))
        return None


def _token(token: str) -> dict[str, str]:
    if not token:
        raise errors.ValidationError("a plex.tv token is required", errors={"token": "empty"})
    return {"X-Plex-Token": token}


def _object(data: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise ContractViolation(f"the {what} is a JSON {type(data).__name__}, not an object")
    return data


def parse_pin(data: Any) -> PlexPin:
    """A PIN object (``POST /pins``, ``GET /pins/{id}``)."""
    pin = _object(data, "PIN")
    pin_id, code = as_int(pin.get("id")), as_str(pin.get("code"))
    if pin_id is None:
        raise ContractViolation("the PIN has no id")
    if code is None:
        raise ContractViolation(f"PIN {pin_id} has no code")
    client = as_str(pin.get("clientIdentifier"))
    if client is None:
        raise ContractViolation(f"PIN {pin_id} has no clientIdentifier")
    token = as_str(pin.get("authToken"))
    return PlexPin(
        id=pin_id,
        code=code,
        client_identifier=client,
        expires_at=iso_time(pin.get("expiresAt")),
        expires_in=as_int(pin.get("expiresIn")),
        auth_token=SecretStr(token) if token else None,
        trusted=as_bool(pin.get("trusted")),
    )


def parse_account(data: Any, token: str) -> PlexAccount:
    """``GET /user``; the token asked with stands in when the answer omits ``authToken``."""
    user = _object(data, "user")
    user_id = as_int(user.get("id"))
    if user_id is None:
        raise ContractViolation("the user has no id")
    uuid, username = as_str(user.get("uuid")), as_str(user.get("username"))
    if uuid is None:
        raise ContractViolation(f"user {user_id} has no uuid")
    if username is None:
        raise ContractViolation(f"user {user_id} has no username")
    subscription = user.get("subscription")
    active = isinstance(subscription, Mapping) and as_bool(subscription.get("active"))
    return PlexAccount(
        id=user_id,
        uuid=uuid,
        username=username,
        title=as_str(user.get("title")),
        email=as_str(user.get("email")),
        thumb=as_str(user.get("thumb")),
        auth_token=SecretStr(as_str(user.get("authToken")) or token),
        subscription_active=active,
        home=as_bool(user.get("home")),
        joined_at=epoch(user.get("joinedAt")),
    )


def parse_servers(data: Any) -> list[PlexServer]:
    """``GET /resources``: a bare array of devices, of which the servers are kept."""
    if not isinstance(data, list):
        raise ContractViolation(f"the resources body is a JSON {type(data).__name__}, not an array")
    servers = []
    for index, raw in enumerate(data):
        device = _object(raw, f"resource [{index}]")
        provides = as_str(device.get("provides")) or ""
        if "server" in (part.strip() for part in provides.split(",")):
            servers.append(parse_server(device, index))
    return servers


def parse_server(device: Mapping[str, Any], index: int) -> PlexServer:
    ident, name = as_str(device.get("clientIdentifier")), as_str(device.get("name"))
    if ident is None:
        raise ContractViolation(f"server resource [{index}] has no clientIdentifier")
    if name is None:
        raise ContractViolation(f"server {ident} has no name")
    raw_connections = device.get("connections") or []
    if not isinstance(raw_connections, list):
        raise ContractViolation(f"server {ident} has connections that are not an array")
    connections = [parse_connection(c, ident, i) for i, c in enumerate(raw_connections)]
    token = as_str(device.get("accessToken"))
    return PlexServer(
        client_identifier=ident,
        name=name,
        product=as_str(device.get("product")),
        version=as_str(device.get("productVersion")),
        owned=as_bool(device.get("owned")),
        owner_id=as_int(device.get("ownerId")),
        source_title=as_str(device.get("sourceTitle")),
        access_token=SecretStr(token) if token else None,
        presence=as_bool(device.get("presence")),
        https_required=as_bool(device.get("httpsRequired")),
        connections=sorted(connections, key=connection_rank),
    )


def parse_connection(raw: Any, server: str, index: int) -> PlexConnection:
    conn = _object(raw, f"connection [{index}] of server {server}")
    uri = as_str(conn.get("uri"))
    if uri is None:
        raise ContractViolation(f"connection [{index}] of server {server} has no uri")
    return PlexConnection(
        uri=uri,
        protocol=as_str(conn.get("protocol")),
        address=as_str(conn.get("address")),
        port=as_int(conn.get("port")),
        local=as_bool(conn.get("local")),
        relay=as_bool(conn.get("relay")),
        ipv6=as_bool(conn.get("IPv6")),
    )


def connection_rank(connection: PlexConnection) -> int:
    """0 for local, 1 for direct remote, 2 for relay (sorting is stable within each)."""
    if connection.local and not connection.relay:
        return 0
    return 2 if connection.relay else 1
