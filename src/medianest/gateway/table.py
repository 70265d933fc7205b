"""The compiled route table: match a request to a route, compare two tables, load a file.

Matching is first-match in declaration order (Envoy's rule: put specific routes first).
Paths are matched in a canonical form that cannot smuggle a different target past a
route: :func:`canonical_path` percent-decodes the path and refuses encoded slashes and
backslashes, dot segments, NUL and other control characters, so ``/plex/%2e%2e/admin`` or
``/plex/..%2fsecret`` never reach an upstream. The upstream path is re-encoded from the
canonical one; the client never chooses the upstream host.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pydantic

from medianest.config.gateway import Route, RouteFile
from medianest.errors import ConfigurationError, ValidationError

_PATH_SAFE = "/:@!$&'()*+,;=-._~"


def canonical_path(raw_path: str) -> str:
    """Decode ``raw_path`` (as sent, percent-encoded) or raise ``ValidationError``."""
    lowered = raw_path.lower()
    if "%2f" in lowered or "%5c" in lowered or "\\" in raw_path:
        raise ValidationError("encoded slashes and backslashes are not allowed in paths")
    path = unquote(raw_path, errors="strict")
    if not path.startswith("/"):
        raise ValidationError("the path must start with /")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in path):
        raise ValidationError("control characters are not allowed in paths")
    segments = path.split("/")
    if any(seg in (".", "..") for seg in segments):
        raise ValidationError("dot segments are not allowed in paths")
    return path


def encode_path(path: str) -> str:
    """Percent-encode a canonical path for the upstream request line."""
    return quote(path, safe=_PATH_SAFE)


@dataclass(frozen=True, slots=True)
class RouteMatch:
    route: Route
    upstream_path: str
    """The canonical path to send upstream (after strip_prefix / rewrite)."""
    params: Mapping[str, str]


@dataclass(frozen=True)
class CompiledRoute:
    route: Route
    regex: re.Pattern[str] | None
    rewrite: re.Pattern[str] | None
    methods: frozenset[str]
    headers: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, route: Route) -> CompiledRoute:
        m = route.match
        return cls(
            route=route,
            regex=re.compile(m.path_regex) if m.path_regex else None,
            rewrite=re.compile(route.rewrite.pattern) if route.rewrite else None,
            methods=frozenset(m.methods),
            headers=tuple((k.lower(), v) for k, v in m.headers.items()),
        )

    def match(
        self, method: str, host: str | None, path: str, headers: Mapping[str, str]
    ) -> RouteMatch | None:
        m = self.route.match
        if method not in self.methods:
            return None
        if m.host is not None and (host or "").split(":", 1)[0].lower() != m.host.lower():
            return None
        if any(headers.get(name) != value for name, value in self.headers):
            return None
        params: dict[str, str] = {}
        if self.regex is not None:
            found = self.regex.match(path)
            if found is None:
                return None
            params = {k: v for k, v in found.groupdict().items() if v is not None}
        elif m.path_prefix is not None and not _has_prefix(path, m.path_prefix):
            return None
        return RouteMatch(self.route, self._upstream_path(path), params)

    def _upstream_path(self, path: str) -> str:
        prefix = self.route.match.path_prefix
        if self.route.strip_prefix and prefix is not None:
            rest = path[len(prefix.rstrip("/")) :]
            return rest if rest.startswith("/") else "/" + rest
        if self.rewrite is not None and self.route.rewrite is not None:
            rewritten = self.rewrite.sub(self.route.rewrite.replacement, path, count=1)
            return canonical_path(
                encode_path(rewritten if rewritten.startswith("/") else "/" + rewritten)
            )
        return path


def _has_prefix(path: str, prefix: str) -> bool:
    if prefix.endswith("/"):
        return path.startswith(prefix) or path == prefix.rstrip("/")
    return path == prefix or path.startswith(prefix + "/") or path.startswith(prefix)


@dataclass(frozen=True)
class TableDiff:
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def lines(self) -> list[str]:
        return (
            [f"+ {n}" for n in self.added]
            + [f"- {n}" for n in self.removed]
            + [f"~ {n}" for n in self.changed]
        )


@dataclass(frozen=True)
class RouteTable:
    """An immutable, validated table; a reload replaces the whole object."""

    routes: tuple[Route, ...] = ()
    compiled: tuple[CompiledRoute, ...] = field(default=(), repr=False)

    @classmethod
    def of(cls, routes: Sequence[Route]) -> RouteTable:
        return cls(tuple(routes), tuple(CompiledRoute.of(r) for r in routes))

    def match(
        self, method: str, host: str | None, path: str, headers: Mapping[str, str]
    ) -> RouteMatch | None:
        for compiled in self.compiled:
            found = compiled.match(method, host, path, headers)
            if found is not None:
                return found
        return None

    def route(self, name: str) -> Route | None:
        return next((r for r in self.routes if r.name == name), None)

    def diff(self, new: RouteTable) -> TableDiff:
        old_by = {r.name: r for r in self.routes}
        new_by = {r.name: r for r in new.routes}
        return TableDiff(
            added=tuple(n for n in new_by if n not in old_by),
            removed=tuple(n for n in old_by if n not in new_by),
            changed=tuple(n for n in new_by if n in old_by and new_by[n] != old_by[n]),
        )


def parse_routes(data: Any, source: str) -> RouteTable:
    """Validate a ``{"routes": [...]}`` mapping into a table, or raise with every problem."""
    try:
        parsed = RouteFile.model_validate(data)
    except pydantic.ValidationError as exc:
        problems = [
            (".".join(str(p) for p in err["loc"]), repr(err.get("input"))[:80], err["msg"])
            for err in exc.errors(include_url=False)
        ]
        lines = "\n".join(f"  {key}: {why}" for key, _, why in problems)
        raise ConfigurationError(
            f"invalid route table in {source}:\n{lines}", problems=problems
        ) from None
    return RouteTable.of(parsed.routes)


def load_routes_file(path: str | Path) -> RouteTable:
    """Read and validate a routes TOML file (top-level ``[[routes]]``)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError(f"cannot read routes file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"routes file {path} is not valid TOML: {exc}") from None
    return parse_routes(data, str(path))
