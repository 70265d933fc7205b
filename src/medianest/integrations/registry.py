"""Which adapter serves which kind of upstream, and the set of adapters a hub runs.

``ADAPTERS`` maps an upstream kind (``plex``, ``plextv``, ``overseerr``, ``jellyseerr``,
``kuma``) to its adapter class, imported lazily. :class:`Integrations` holds the adapters
built from ``[upstreams.*]``, starts and closes them together, and hands out the one for a
feature, raising :class:`~medianest.errors.ServiceNotConfigured` when there is none.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from medianest.config import Settings, UpstreamSettings
from medianest.errors import ServiceNotConfigured
from medianest.integrations.base import HttpAdapter
from medianest.integrations.models import ServiceHealth

if TYPE_CHECKING:
    from medianest.integrations.kuma import KumaAdapter
    from medianest.integrations.overseerr import OverseerrAdapter
    from medianest.integrations.plex import PlexAdapter
    from medianest.integrations.plextv import PlexTvAdapter

ADAPTERS: dict[str, str] = {
    "plex": "medianest.integrations.plex:PlexAdapter",
    "plextv": "medianest.integrations.plextv:PlexTvAdapter",
    "overseerr": "medianest.integrations.overseerr:OverseerrAdapter",
    "jellyseerr": "medianest.integrations.overseerr:OverseerrAdapter",
    "kuma": "medianest.integrations.kuma:KumaAdapter",
}

A = TypeVar("A", bound=HttpAdapter)


def adapter_class(kind: str) -> type[HttpAdapter]:
    module, _, attr = ADAPTERS[kind].partition(":")
    return cast(type[HttpAdapter], getattr(importlib.import_module(module), attr))


def build_adapter(name: str, kind: str, upstream: UpstreamSettings, **context: Any) -> HttpAdapter:
    """Build the adapter of upstream ``name``; ``context`` carries shared things such as the
    ``client_identifier`` sent to Plex, the Prometheus ``registry`` and a ``clock``."""
    cls: Any = adapter_class(kind)
    return cast(HttpAdapter, cls.from_settings(name, upstream, kind=kind, **context))


class Integrations:
    """The adapters of one hub, by upstream name."""

    def __init__(self, adapters: Iterable[HttpAdapter] = ()) -> None:
        self.adapters: dict[str, HttpAdapter] = {a.name: a for a in adapters}

    @classmethod
    def from_settings(cls, settings: Settings, **context: Any) -> Integrations:
        return cls(
            build_adapter(name, settings.upstream_kind(name), upstream, **context)
            for name, upstream in settings.upstreams.items()
            if upstream.enabled
        )

    async def start(self) -> None:
        for adapter in self.adapters.values():
            await adapter.start()

    async def close(self) -> None:
        await asyncio.gather(*(a.close() for a in self.adapters.values()), return_exceptions=True)

    def all_of(self, cls: type[A]) -> list[A]:
        """Every adapter of class ``cls``, in configuration order."""
        return [a for a in self.adapters.values() if isinstance(a, cls)]

    def _one(self, kinds: tuple[str, ...], feature: str, cls: type[A]) -> A:
        for adapter in self.all_of(cls):
            if adapter.kind in kinds:
                return adapter
        raise ServiceNotConfigured(kinds[0], feature)

    def plex(self, feature: str = "") -> PlexAdapter:
        from medianest.integrations.plex import PlexAdapter

        return self._one(("plex",), feature, PlexAdapter)

    def plextv(self, feature: str = "") -> PlexTvAdapter:
        from medianest.integrations.plextv import PlexTvAdapter

        return self._one(("plextv",), feature, PlexTvAdapter)

    def overseerr(self, feature: str = "") -> OverseerrAdapter:
        from medianest.integrations.overseerr import OverseerrAdapter

        return self._one(("overseerr", "jellyseerr"), feature, OverseerrAdapter)

    def kuma(self, feature: str = "") -> KumaAdapter:
        from medianest.integrations.kuma import KumaAdapter

        return self._one(("kuma",), feature, KumaAdapter)

    async def health(self) -> list[ServiceHealth]:
        """Probe every adapter concurrently (each through its own policy)."""
        return list(await asyncio.gather(*(a.health() for a in self.adapters.values())))
