"""The ``[requests]`` section: media requests made through the hub (the ``request-media``
saga of :mod:`medianest.media_requests`)."""

from __future__ import annotations

from pydantic import Field

from medianest.config.section import Section


class RequestsSettings(Section):
    """How many requests people may make, and who is exempt."""

    quota_per_week: int = Field(
        10,
        ge=0,
        le=10_000,
        description="Media requests one person may make in any 7 days; a request whose saga "
        "was compensated gives its place back. 0: no limit.",
    )
    quota_exempt_admins: bool = Field(
        True, description="Admins (and API keys with the `admin` scope) have no quota."
    )


def requests_settings(settings: object) -> RequestsSettings:
    """The ``[requests]`` section of ``settings`` (defaults for objects without one); the
    one place the saga and the API read it, so tests can substitute it."""
    found = getattr(settings, "requests", None)
    return found if isinstance(found, RequestsSettings) else RequestsSettings()
