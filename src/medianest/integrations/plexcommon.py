"""What the Plex Media Server and plex.tv adapters share: who we say we are, and lenient reading.

* :func:`identification_headers` is the full ``X-Plex-*`` set sent on every request to PMS
  and to plex.tv (NOTES.md 1.1 and 2). ``X-Plex-Client-Identifier`` is the hub's stable
  identifier (persisted in its database): plex.tv ties a PIN to it and lists the hub under
  the user's Authorized Devices by it, so a new value per start would pile up devices.
* :func:`parse_guid` and :func:`external_ids` turn Plex's ``Guid[]`` entries
  (``imdb://tt0133093``, ``tmdb://603``, ``tvdb://81189``) and legacy-agent ``guid`` strings
  (``com.plexapp.agents.imdb://tt0080339?lang=en``) into :class:`ExternalIds`.
* :func:`as_int`, :func:`as_str`, :func:`as_bool` and :func:`epoch` read values that Plex
  sends as a string in one endpoint and as a number in another (``librarySectionID``).
* :class:`ContractViolation` is raised by the parsers; :func:`decode` turns it into an
  :class:`~medianest.errors.UpstreamContractError` naming the service and endpoint.
"""

from __future__ import annotations

import platform
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import ValidationError

from medianest import __version__, errors
from medianest.config import UpstreamSettings
from medianest.integrations.http import HttpResponse, UpstreamHttp, http_for
from medianest.integrations.models import ExternalIds

PRODUCT = "MediaNest"
T = TypeVar("T")


def identification_headers(
    client_identifier: str, *, device_name: str = PRODUCT, language: str = "en"
) -> dict[str, str]:
    """The ``X-Plex-*`` headers that identify this hub, plus ``Accept: application/json``."""
    if not client_identifier.strip():
        raise errors.ConfigurationError(
            "a Plex client identifier is required (the hub's persisted instance id)",
            problems=[("client_identifier", repr(client_identifier), "a non-empty string")],
        )
    system = platform.system() or "Linux"
    return {
        "Accept": "application/json",
        "X-Plex-Client-Identifier": client_identifier,
        "X-Plex-Product": PRODUCT,
        "X-Plex-Version": __version__,
        "X-Plex-Platform": system,
        "X-Plex-Platform-Version": platform.release() or "unknown",
        "X-Plex-Device": system,
        "X-Plex-Device-Name": device_name,
        "X-Plex-Model": "hub",
        "X-Plex-Provides": "controller",
        "X-Plex-Language": language,
    }


class ContractViolation(ValueError):
    """A response lacks something its contract promises; the message says what."""


def decode(response: HttpResponse, parse: Callable[[Any], T]) -> T:
    """``parse(response.json())``, with any contract breach raised as UpstreamContractError."""
    data = response.json()
    try:
        return parse(data)
    except ContractViolation as exc:
        what = str(exc)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "value"
        what = f"{exc.title} has an unusable {where}: {first['msg']}"
    raise errors.UpstreamContractError(
        f"{response.service} answered {response.endpoint} without what its contract "
        f"promises: {what}",
        service=response.service,
        endpoint=response.endpoint,
        status=response.status,
    )


def as_int(value: Any) -> int | None:
    """An int from an int, an integral float or a decimal string; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"[+-]?\d+", text):
            return int(text)
    return None


def as_str(value: Any) -> str | None:
    """A non-empty string from a string or a number (ids come as either); None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        return value or None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        number = as_int(value)
        return str(value if number is None else number)
    return None


def as_bool(value: Any, default: bool = False) -> bool:
    """A bool from ``true``/``false``, ``1``/``0`` or ``"1"``/``"0"``/``"true"``."""
    if isinstance(value, bool):
        return value
    number = as_int(value)
    if number is not None:
        return number != 0
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return default


def epoch(value: Any) -> datetime | None:
    """A UTC datetime from epoch seconds (int or numeric string)."""
    seconds = as_int(value)
    if seconds is None or seconds <= 0:
        return None
    return datetime.fromtimestamp(seconds, UTC)


def iso_time(value: Any) -> datetime | None:
    """A datetime from an ISO-8601 string such as ``2024-07-16T17:18:05Z``."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


_PROVIDERS = {
    "imdb": "imdb",
    "tmdb": "tmdb",
    "themoviedb": "tmdb",
    "tvdb": "tvdb",
    "thetvdb": "tvdb",
}
_LEGACY_PREFIX = "com.plexapp.agents."
_IMDB = re.compile(r"tt\d+")
_GUID = re.compile(r"^(?P<scheme>[A-Za-z0-9._-]+)://(?P<rest>[^?#]*)")


@dataclass(frozen=True, slots=True)
class PlexGuid:
    """One parsed guid: ``provider`` (imdb, tmdb, tvdb, plex, or the agent's own name), the
    ``id`` it gives, and for legacy TV guids the ``season``/``episode`` below that id."""

    provider: str
    id: str
    season: int | None = None
    episode: int | None = None
    legacy: bool = False

    @property
    def ids(self) -> ExternalIds:
        """The ids of the thing the guid names; empty for ``plex://`` and unknown agents.

        A legacy guid with a season or episode (``thetvdb://81189/1/3``) names the *show* by
        its id, not the season or episode, so it yields no ids for that item: merging an
        episode with its show by a shared id would be wrong. :attr:`show_ids` has them.
        """
        if self.season is not None or self.episode is not None:
            return ExternalIds()
        return self.show_ids

    @property
    def show_ids(self) -> ExternalIds:
        """The ids of the top-level title the guid points into (the show, for TV guids)."""
        if _IMDB.fullmatch(self.id):
            return ExternalIds(imdb=self.id)
        number = as_int(self.id)
        if number is None:
            return ExternalIds()
        if self.provider == "tmdb":
            return ExternalIds(tmdb=number)
        if self.provider == "tvdb":
            return ExternalIds(tvdb=number)
        return ExternalIds()


def parse_guid(guid: Any) -> PlexGuid | None:
    """Parse ``imdb://tt0133093``, ``plex://movie/5d77...`` or a legacy agent guid.

    Legacy forms: ``com.plexapp.agents.imdb://tt0080339?lang=en``,
    ``com.plexapp.agents.themoviedb://603?lang=en``,
    ``com.plexapp.agents.thetvdb://81189/1/3?lang=en`` (show 81189, season 1, episode 3).
    Returns None for anything that is not ``scheme://value``.
    """
    if not isinstance(guid, str):
        return None
    match = _GUID.match(guid.strip())
    if match is None:
        return None
    scheme, rest = match.group("scheme"), match.group("rest").strip("/")
    legacy = scheme.startswith(_LEGACY_PREFIX)
    agent = scheme[len(_LEGACY_PREFIX) :] if legacy else scheme
    provider = _PROVIDERS.get(agent.lower(), agent.lower())
    if provider == "plex":
        return PlexGuid("plex", rest, legacy=legacy)
    first, *below = rest.split("/")
    if not first:
        return None
    season = as_int(below[0]) if below else None
    episode = as_int(below[1]) if len(below) > 1 else None
    return PlexGuid(provider, first, season, episode, legacy)


def external_ids(guid_entries: Any, guid: Any) -> ExternalIds:
    """The ids of an item: its ``Guid[]`` entries (new agents), else its legacy ``guid``."""
    found = ExternalIds()
    for entry in _entries(guid_entries):
        parsed = parse_guid(entry.get("id"))
        if parsed is not None:
            found = found.merged(parsed.ids)
    if found.keys():
        return found
    parsed = parse_guid(guid)
    return parsed.ids if parsed is not None else found


def _entries(value: Any) -> Iterable[Mapping[str, Any]]:
    if isinstance(value, list):
        return [entry for entry in value if isinstance(entry, Mapping)]
    return []


def plex_http(
    name: str,
    upstream: UpstreamSettings,
    *,
    client_identifier: str | None,
    base_url: str | None = None,
    registry: Any = None,
    clock: Any = None,
) -> tuple[UpstreamHttp, str]:
    """The pooled client of a Plex-family upstream sending the full identification set.

    Returns ``(UpstreamHttp, client identifier)``; the identifier comes from the hub (its
    persisted instance id) or ``options.client_identifier``; ``options.device_name`` sets
    ``X-Plex-Device-Name``.
    """
    identifier = client_identifier or str(upstream.options.get("client_identifier", ""))
    device = str(upstream.options.get("device_name", PRODUCT))
    http = http_for(
        name,
        base_url or str(upstream.url),
        upstream.policy,
        headers=identification_headers(identifier, device_name=device),
        registry=registry,
        clock=clock,
    )
    return http, identifier
