"""plex.tv account and device shapes (legacy spec ``UserPlexAccount`` and ``PlexDevice``).

``/resources`` is what ties plex.tv to the simulated PMS: the server device's
``clientIdentifier`` is the PMS ``machineIdentifier``, its ``connections`` point at
``options.plex_url``, and its ``accessToken`` is the token *this account* must use on that
server (the owner's own token, a shared user's distinct per-server token). An account with
no access sees only an unrelated server of its own, plus a web client (devices that do not
``provide`` ``server`` are listed too, as on the real plex.tv).
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import urlsplit

from medianest.simulators.options import PlexAccount, SimulatorOptions
from medianest.simulators.plex_state import PMS_VERSION
from medianest.simulators.seeds import hex24, mix

_JOINED = 1_500_000_000  # 2017-07-14


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(int(epoch), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def user_json(account: PlexAccount, options: SimulatorOptions) -> dict[str, Any]:
    uuid = hex24(mix(options.seed, account.id))[:16]
    return {
        "id": account.id,
        "uuid": uuid,
        "username": account.username,
        "title": account.username,
        "email": account.email,
        "friendlyName": account.username.title(),
        "locale": None,
        "confirmed": True,
        "joinedAt": _JOINED + account.id,
        "emailOnlyAuth": False,
        "hasPassword": True,
        "protected": False,
        "thumb": f"https://plex.tv/users/{uuid}/avatar?c=1",
        "authToken": account.token,
        "mailingListStatus": "active",
        "mailingListActive": False,
        "scrobbleTypes": "",
        "country": "US",
        "subscription": {
            "active": account.access == "owner",
            "subscribedAt": _iso(_JOINED) if account.access == "owner" else None,
            "status": "Active" if account.access == "owner" else "Inactive",
            "paymentService": None,
            "plan": "lifetime" if account.access == "owner" else None,
            "features": ["pass", "sync"] if account.access == "owner" else [],
        },
        "subscriptionDescription": None,
        "restricted": False,
        "anonymous": None,
        "home": False,
        "guest": False,
        "homeSize": 1,
        "homeAdmin": False,
        "maxHomeSize": 15,
        "rememberExpiresAt": _JOINED + 10**8,
        "profile": {
            "autoSelectAudio": True,
            "defaultAudioLanguage": "en",
            "defaultSubtitleLanguage": None,
            "autoSelectSubtitle": 0,
            "defaultSubtitleAccessibility": 0,
            "defaultSubtitleForced": 0,
            "watchedIndicator": 1,
            "mediaReviewsVisibility": 0,
        },
        "entitlements": [],
        "roles": [],
        "services": [],
        "adsConsent": None,
        "adsConsentSetAt": None,
        "adsConsentReminderAt": None,
        "experimentalFeatures": False,
        "twoFactorEnabled": False,
        "backupCodesCreated": False,
        "attributionPartner": None,
    }


def _connections(url: str, machine: str, *, https: bool, relay: bool) -> list[dict[str, Any]]:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if parts.scheme == "https" else 32400)
    out: list[dict[str, Any]] = [
        {
            "protocol": parts.scheme or "http",
            "address": host,
            "port": port,
            "uri": f"{parts.scheme or 'http'}://{host}:{port}",
            "local": True,
            "relay": False,
            "IPv6": False,
        }
    ]
    if https:
        out.append(
            {
                "protocol": "https",
                "address": "203.0.113.10",
                "port": 32400,
                "uri": f"https://203-0-113-10.{machine}.plex.direct:32400",
                "local": False,
                "relay": False,
                "IPv6": False,
            }
        )
    if relay:
        out.append(
            {
                "protocol": "https",
                "address": "198.51.100.7",
                "port": 8443,
                "uri": f"https://198-51-100-7.{machine}.plex.direct:8443",
                "local": False,
                "relay": True,
                "IPv6": False,
            }
        )
    return out


def _device(name: str, product: str, client_id: str, token: str, provides: str) -> dict[str, Any]:
    return {
        "name": name,
        "product": product,
        "productVersion": PMS_VERSION if provides == "server" else "4.120.0",
        "platform": "Linux" if provides == "server" else "Chrome",
        "platformVersion": "6.1" if provides == "server" else "120.0",
        "device": "PC" if provides == "server" else "Linux",
        "clientIdentifier": client_id,
        "createdAt": _iso(_JOINED),
        "lastSeenAt": _iso(_JOINED + 86_400),
        "provides": provides,
        "ownerId": None,
        "sourceTitle": None,
        "publicAddress": "203.0.113.10",
        "accessToken": token,
        "owned": True,
        "home": False,
        "synced": False,
        "relay": provides == "server",
        "presence": provides == "server",
        "httpsRequired": False,
        "publicAddressMatches": True,
        "dnsRebindingProtection": False,
        "natLoopbackSupported": False,
        "connections": [],
    }


def device_list(
    account: PlexAccount, options: SimulatorOptions, *, https: bool, relay: bool
) -> list[dict[str, Any]]:
    """``GET /api/v2/resources`` for ``account`` (``includeHttps``, ``includeRelay`` flags).

    The local connection is always ``options.plex_url``; ``https`` adds the remote
    ``plex.direct`` address and ``relay`` the relay, neither of which resolves in tests, so a
    client that prefers local connections (as it should) reaches the simulated PMS.
    """
    machine = options.plex_machine_identifier()
    devices = []
    token = account.plex_server_token
    if token is not None:
        server = _device(options.friendly_name, "Plex Media Server", machine, token, "server")
        server["connections"] = _connections(options.plex_url, machine, https=https, relay=relay)
        if account.access == "shared":
            owner = next((a for a in options.plex_accounts() if a.access == "owner"), None)
            server.update(owned=False, ownerId=owner.id if owner else None)
            server["sourceTitle"] = owner.username if owner else None
        devices.append(server)
    else:
        other = hex24(mix(options.seed, account.id, 5)) + "0" * 16
        server = _device(
            f"{account.username}'s server", "Plex Media Server", other, account.token, "server"
        )
        server["connections"] = _connections(
            "http://192.0.2.50:32400", other, https=False, relay=False
        )
        devices.append(server)
    web = f"web-{hex24(mix(options.seed, account.id, 6))}"
    devices.append(_device("Chrome", "Plex Web", web, account.token, "client,player,pubsub-player"))
    return devices
