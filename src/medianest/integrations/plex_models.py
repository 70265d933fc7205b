"""Models of things only Plex Media Server and plex.tv have.

Media itself is a :class:`~medianest.integrations.models.MediaItem` like every other
service's; these cover the server's identity, playback sessions, and the plex.tv sign-in
objects. Every token is a :class:`~pydantic.SecretStr`, so it never shows in a repr, a log
line or a serialised model unless asked for with ``get_secret_value()``.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import Field, SecretStr

from medianest.integrations.models import MediaItem, Model


class PlexIdentity(Model):
    """What ``GET /identity`` says about a Plex Media Server (no token needed)."""

    machine_identifier: str
    version: str
    claimed: bool


class PlaybackSession(Model):
    """One active playback from ``/status/sessions``."""

    session_key: str
    item: MediaItem
    user: str | None = Field(None, description="Plex account title of the viewer.")
    user_id: str | None = None
    player: str | None = Field(None, description="Player title, e.g. the device's name.")
    product: str | None = Field(None, description="Client app, e.g. Plex Web.")
    platform: str | None = None
    state: str = Field("unknown", description="playing, paused, buffering (as Plex says).")
    address: str | None = None
    local: bool | None = None
    location: str | None = Field(None, description="lan or wan.")
    bandwidth_kbps: int | None = None
    view_offset_ms: int | None = None
    duration_ms: int | None = None
    transcoding: bool = False


class PlexPin(Model):
    """A plex.tv sign-in PIN; ``auth_token`` is set once the user has approved it."""

    id: int
    code: str
    client_identifier: str
    expires_at: datetime | None = None
    expires_in: int | None = Field(None, description="Seconds of life left when fetched.")
    auth_token: SecretStr | None = None
    trusted: bool = False

    @property
    def claimed(self) -> bool:
        return self.auth_token is not None


class PlexAccount(Model):
    """A plex.tv account, as ``GET /api/v2/user`` describes the owner of a token."""

    id: int
    uuid: str
    username: str
    title: str | None = None
    email: str | None = None
    thumb: str | None = None
    auth_token: SecretStr
    subscription_active: bool = False
    home: bool = False
    joined_at: datetime | None = None


class PlexConnection(Model):
    """One way to reach a server: ``uri`` plus whether it is on the LAN or a relay."""

    uri: str
    protocol: str | None = None
    address: str | None = None
    port: int | None = None
    local: bool = False
    relay: bool = False
    ipv6: bool = False


class PlexServer(Model):
    """A Plex Media Server an account can use (``GET /api/v2/resources``).

    ``access_token`` is the token to use *on that server*; for a server shared with the
    account it differs from the account's own token. ``connections`` are ordered best first:
    local, then direct remote, then relay.
    """

    client_identifier: str = Field(description="The server's machineIdentifier.")
    name: str
    product: str | None = None
    version: str | None = None
    owned: bool = False
    owner_id: int | None = None
    source_title: str | None = Field(None, description="Who shared it, for a shared server.")
    access_token: SecretStr | None = None
    presence: bool = False
    https_required: bool = False
    connections: list[PlexConnection] = Field(default_factory=list)
