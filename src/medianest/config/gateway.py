"""Gateway configuration: the route table as validated models.

Routes are declared under ``[[gateway.routes]]`` in ``medianest.toml`` or in a separate
routes file (``gateway.routes_file``, a TOML file with top-level ``[[routes]]``). A table is
validated as a whole (unique names, no route shadowing the hub's own paths, regexes that
compile, rewrites that only use groups the match defines) before it may serve; a reload
builds and validates the new table, then swaps it in one assignment.

A route::

    [[gateway.routes]]
    name = "plex"
    match = { path_prefix = "/plex/", methods = ["GET", "HEAD"] }
    target = { instances = [{ url = "http://127.0.0.1:32400" }], balance = "least_outstanding" }
    strip_prefix = true
    auth = { required = true, scopes = ["media:read"] }
    rate_limits = [{ limit = "100/minute", per = "key" }]
    cache = { ttl = 30, stale_if_error = 300 }
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, field_validator, model_validator

from medianest.resilience.config import PolicyConfig

RESERVED_PREFIXES = (
    "/api/",
    "/health",
    "/ready",
    "/metrics",
    "/docs",
    "/redoc",
    "/openapi.json",
    "/problems/",
    "/admin/",
)
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
RouteName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")]
HeaderName = Annotated[str, Field(pattern=r"^[A-Za-z0-9-]{1,100}$")]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Match(Model):
    """Which requests a route takes. Exactly one of ``path_prefix`` and ``path_regex``."""

    path_prefix: str | None = Field(None, description="Path prefix, e.g. `/plex/`.")
    path_regex: str | None = Field(
        None, description="Full-path regex with named groups, e.g. `^/media/(?P<id>[0-9]+)$`."
    )
    methods: tuple[str, ...] = Field(HTTP_METHODS, description="Methods accepted.")
    host: str | None = Field(None, description="Host header to match (exact, port ignored).")
    headers: dict[HeaderName, str] = Field(
        default_factory=dict, description="Headers that must be present with these values."
    )

    @field_validator("methods", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        if isinstance(value, list | tuple):
            return tuple(str(v).upper() for v in value)
        return value

    @field_validator("methods")
    @classmethod
    def _known(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [m for m in value if m not in HTTP_METHODS]
        if unknown or not value:
            raise ValueError(f"methods must be some of {', '.join(HTTP_METHODS)}")
        return value

    @field_validator("path_prefix")
    @classmethod
    def _prefix(cls, value: str | None) -> str | None:
        if value is not None and (not value.startswith("/") or ".." in value or "//" in value):
            raise ValueError("path_prefix must start with / and contain no '..' or '//'")
        return value

    @field_validator("path_regex")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regex: {exc}") from None
            if not value.startswith("^/"):
                raise ValueError("path_regex must be anchored: start with ^/")
        return value

    @model_validator(mode="after")
    def _one_path(self) -> Match:
        if (self.path_prefix is None) == (self.path_regex is None):
            raise ValueError("set exactly one of path_prefix and path_regex")
        return self


class Instance(Model):
    """One upstream instance."""

    url: AnyHttpUrl = Field(description="Base URL: scheme, host, port and optional base path.")
    weight: int = Field(1, ge=1, le=1000, description="Share of traffic for weighted balancing.")


class HashOn(Model):
    """What consistent hashing keys on: one of a header, a cookie or the client."""

    header: HeaderName | None = Field(None, description="Hash on this request header.")
    cookie: str | None = Field(None, description="Hash on this cookie.")
    client: Literal["ip", "key"] | None = Field(
        None, description="`ip` (client address) or `key` (the API key id / user)."
    )

    @model_validator(mode="after")
    def _one(self) -> HashOn:
        if sum(v is not None for v in (self.header, self.cookie, self.client)) != 1:
            raise ValueError("hash_on needs exactly one of header, cookie, client")
        return self


Balance = Literal["round_robin", "weighted_round_robin", "least_outstanding", "consistent_hash"]


class Outlier(Model):
    """Passive outlier detection: eject an instance after consecutive failures."""

    consecutive_failures: int = Field(5, ge=1, description="Failures in a row that eject.")
    base_ejection: float = Field(30.0, gt=0, description="Seconds of the first ejection.")
    max_ejection: float = Field(300.0, gt=0, description="Cap on a grown ejection, seconds.")
    max_ejected_percent: int = Field(
        50, ge=0, le=100, description="Never eject more than this share of instances."
    )


class Target(Model):
    """Where a route sends requests: a service name or instance URLs, and how to balance."""

    service: str | None = Field(None, description="A service name (resolved by discovery).")
    instances: tuple[Instance, ...] = Field((), description="Instance URLs with weights.")
    balance: Balance = Field("round_robin", description="Balancing method.")
    hash_on: HashOn | None = Field(None, description="Key for `consistent_hash`.")
    outlier: Outlier = Field(default_factory=Outlier)

    @model_validator(mode="after")
    def _where(self) -> Target:
        if not self.instances and self.service is None:
            raise ValueError("target needs instances (or a service name)")
        if self.balance == "consistent_hash" and self.hash_on is None:
            raise ValueError("balance = consistent_hash needs hash_on")
        return self


class Rewrite(Model):
    """Rewrite the path with a regex: groups captured by ``pattern`` fill ``replacement``."""

    pattern: str = Field(description="Regex matched against the request path.")
    replacement: str = Field(description="Uses `\\1` or `\\g<name>` for captured groups.")

    @model_validator(mode="after")
    def _compiles(self) -> Rewrite:
        try:
            compiled = re.compile(self.pattern)
            compiled.sub(self.replacement, "")
        except (re.error, IndexError) as exc:
            raise ValueError(f"invalid rewrite: {exc}") from None
        return self


class HeaderEdits(Model):
    add: dict[HeaderName, str] = Field(default_factory=dict, description="Appended headers.")
    set: dict[HeaderName, str] = Field(default_factory=dict, description="Replaced headers.")
    remove: tuple[HeaderName, ...] = Field((), description="Removed headers.")


class JsonEdits(Model):
    """Edits of JSON response bodies (dotted paths), for bodies up to ``max_bytes``."""

    rename: dict[str, str] = Field(
        default_factory=dict, description="Dotted path (`*` over lists) to its new name."
    )
    remove: tuple[str, ...] = Field((), description="Dotted paths removed from the body.")
    max_bytes: int = Field(
        1_048_576, ge=1, le=64 * 1_048_576, description="Larger bodies pass unedited."
    )


class Transforms(Model):
    request_headers: HeaderEdits = Field(default_factory=HeaderEdits)
    response_headers: HeaderEdits = Field(default_factory=HeaderEdits)
    json_body: JsonEdits | None = Field(None, description="Edits of JSON response bodies.")
    plex_xml_to_json: bool = Field(
        False, description="Turn Plex XML answers into Plex's own JSON shape."
    )


class Auth(Model):
    """Who may use a route: ``required = false`` lets anyone through."""

    required: bool = Field(
        True, description="Whether a credential (API key or hub access token) is needed."
    )
    scopes: tuple[str, ...] = Field((), description="Scopes the API key or user must all hold.")


class RateLimit(Model):
    limit: str = Field(description="`limits` syntax: `100/minute`, `10/second;1000/hour`.")
    per: Literal["key", "user", "ip", "route"] = Field(
        "ip", description="Whose requests share a counter (anonymous key/user falls to ip)."
    )
    strategy: Literal["fixed_window", "moving_window", "sliding_window_counter"] = Field(
        "sliding_window_counter", description="The `limits` strategy counting the window."
    )

    @field_validator("limit")
    @classmethod
    def _parses(cls, value: str) -> str:
        from limits import parse_many

        try:
            parse_many(value)
        except ValueError as exc:
            raise ValueError(f"invalid rate limit {value!r}: {exc}") from None
        return value


class Cache(Model):
    ttl: float = Field(gt=0, description="Seconds a GET answer is served from the cache.")
    stale_if_error: float = Field(
        0, ge=0, description="Seconds an expired answer may still serve when the upstream fails."
    )
    max_bytes: int = Field(1_048_576, ge=1, description="Larger answers are not cached.")


class Route(Model):
    """One route of the gateway (see the module docstring for an example)."""

    name: RouteName = Field(description="Unique name, used in metrics, logs and problems.")
    match: Match
    target: Target
    strip_prefix: bool = Field(False, description="Remove `path_prefix` before forwarding.")
    rewrite: Rewrite | None = None
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    retry_unsafe: bool = Field(
        False, description="Also retry/fail over POST/PATCH after a timeout or 5xx (unsafe)."
    )
    auth: Auth = Field(default_factory=Auth)
    rate_limits: tuple[RateLimit, ...] = ()
    transforms: Transforms = Field(default_factory=Transforms)
    cache: Cache | None = None

    @model_validator(mode="after")
    def _coherent(self) -> Route:
        if self.strip_prefix and self.match.path_prefix is None:
            raise ValueError("strip_prefix needs match.path_prefix")
        if self.strip_prefix and self.rewrite is not None:
            raise ValueError("use strip_prefix or rewrite, not both")
        prefix = self.match.path_prefix
        if prefix is not None and any(
            prefix.startswith(r) or r.startswith(prefix) for r in RESERVED_PREFIXES
        ):
            raise ValueError(f"path_prefix {prefix!r} overlaps the hub's own paths")
        return self


class GatewaySettings(Model):
    """The gateway role: proxying declared routes to upstream instances."""

    routes: tuple[Route, ...] = Field((), description="Inline routes (`[[gateway.routes]]`).")
    routes_file: str | None = Field(
        None, description="TOML file with `[[routes]]`; watched and reloaded on change."
    )
    watch_interval: float = Field(
        1.0, ge=0, description="Seconds between checks of the routes file for changes (0: off)."
    )
    max_body_bytes: int = Field(
        10 * 1_048_576, ge=0, description="Largest request body accepted (413 above)."
    )
    max_header_bytes: int = Field(16_384, ge=1024, description="Largest request headers (431).")
    trusted_proxies: tuple[str, ...] = Field(
        ("127.0.0.1/32", "::1/128"),
        description="Networks whose X-Forwarded-For is believed for the client address.",
    )
    rate_limit_storage: str = Field(
        "memory://", description="`memory://` or `redis://host:6379/0` for rate-limit counters."
    )
    server_timing: bool = Field(
        False, description="Add a Server-Timing header (upstream, gateway)."
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        import ipaddress

        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP network such as 10.0.0.0/8") from None
        return value

    @model_validator(mode="after")
    def _unique(self) -> GatewaySettings:
        names = [r.name for r in self.routes]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"route names must be unique: {', '.join(duplicates)}")
        return self


class RouteFile(Model):
    """A routes file: top-level ``[[routes]]``."""

    routes: tuple[Route, ...] = ()

    @model_validator(mode="after")
    def _unique(self) -> RouteFile:
        GatewaySettings(routes=self.routes)
        return self
