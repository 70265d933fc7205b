"""Backends chosen by URL.

Every capability with more than one implementation (discovery, messaging, events, rate-limit
storage, caches...) declares one :class:`BackendTable` that maps a URL scheme to the
``"module:Class"`` implementing it and to the package extra that provides its driver. The
module is imported only when that scheme is used, so ``memory://`` never imports a Redis
driver, and a missing driver becomes a :class:`~medianest.errors.ConfigurationError` that
names the scheme and the extra to install instead of an ``ImportError`` at some later call.

A backend class is built with ``Class.from_url(url, **options)`` and follows the
:class:`Backend` protocol: ``start`` / ``close`` / ``ping``, usable as ``async with``.

URLs may carry passwords: :func:`mask_url` is what goes into every repr and log line.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Generic, Protocol, Self, TypeVar, cast
from urllib.parse import SplitResult, urlsplit, urlunsplit

from medianest.errors import ConfigurationError

MASK = "***"


def mask_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***`` (user names are kept).

    Query parameters that look like secrets (``password``, ``token``, ``apikey``...) are
    masked too, since some drivers accept credentials there.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, sep, _password = userinfo.partition(":")
        netloc = f"{user}{':' + MASK if sep else ''}@{hostport}"
    query = _mask_query(parts.query)
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit(SplitResult(parts.scheme, netloc, parts.path, query, parts.fragment))


_SECRET_PARAMS = ("password", "passwd", "pass", "token", "secret", "apikey", "api_key", "key")


def _mask_query(query: str) -> str:
    if not query:
        return query
    out = []
    for pair in query.split("&"):
        name, sep, _value = pair.partition("=")
        if sep and name.lower().replace("-", "_") in _SECRET_PARAMS:
            pair = f"{name}={MASK}"
        out.append(pair)
    return "&".join(out)


def url_scheme(url: str) -> str:
    """The scheme of ``url`` in lower case (``"redis"`` for ``redis://...``), or ``""``."""
    head, sep, _ = url.partition("://")
    return head.lower() if sep else ""


class Backend(Protocol):
    """What every URL-chosen backend provides, whatever its capability."""

    async def start(self) -> None:
        """Open connections and create what the backend needs; idempotent."""

    async def close(self) -> None:
        """Release every resource; idempotent, safe after a failed ``start``."""

    async def ping(self) -> None:
        """Raise :class:`~medianest.errors.BackendUnavailable` when the backend cannot serve."""


class BackendBase:
    """Convenience base: ``async with`` support on top of ``start``/``close``."""

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def aclose(self) -> None:
        """Alias of :meth:`close`, for ``contextlib.aclosing`` and friends."""
        await self.close()


T_co = TypeVar("T_co", covariant=True)


@dataclass(frozen=True, slots=True)
class BackendEntry:
    """Where a scheme's implementation lives and which extra installs its driver."""

    target: str
    extra: str | None = None


@dataclass(frozen=True)
class BackendTable(Generic[T_co]):
    """Scheme → implementation table of one capability.

    ``entries`` values are ``"module:Class"`` strings or :class:`BackendEntry` values (to
    name the extra). Aliases are just two schemes naming the same target.
    """

    capability: str
    entries: Mapping[str, str | BackendEntry]
    _cache: dict[str, type[Any]] = field(default_factory=dict, compare=False, repr=False)

    @property
    def schemes(self) -> list[str]:
        return sorted(self.entries)

    def entry(self, url: str) -> BackendEntry:
        scheme = url_scheme(url)
        raw = self.entries.get(scheme)
        if raw is None:
            known = ", ".join(f"{s}://" for s in self.schemes)
            shown = f"{scheme}://" if scheme else repr(mask_url(url))
            raise ConfigurationError(
                f"unknown {self.capability} backend {shown}; known schemes: {known}",
                problems=[(self.capability, mask_url(url), f"a URL starting with one of {known}")],
            )
        return raw if isinstance(raw, BackendEntry) else BackendEntry(raw)

    def load(self, url: str) -> type[T_co]:
        """Import and return the class serving ``url``'s scheme."""
        entry = self.entry(url)
        if entry.target in self._cache:
            return cast(type[T_co], self._cache[entry.target])
        module_name, _, attr = entry.target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            hint = (
                f"; install it with: pip install 'medianest[{entry.extra}]'" if entry.extra else ""
            )
            raise ConfigurationError(
                f"the {self.capability} backend for {url_scheme(url)}:// needs a driver that is "
                f"not installed ({exc.name or exc}){hint}",
                problems=[(self.capability, mask_url(url), f"the '{entry.extra}' extra installed")],
            ) from exc
        cls = cast(type[T_co], getattr(module, attr))
        self._cache[entry.target] = cls
        return cls

    def create(self, url: str, **options: Any) -> T_co:
        """Build the backend for ``url`` via its class's ``from_url``."""
        cls: Any = self.load(url)
        return cast(T_co, cls.from_url(url, **options))
