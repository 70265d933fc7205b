"""The configuration model: one :class:`Settings` value for the whole hub.

Sources, strongest first: explicit overrides (command-line flags), environment variables
``MEDIANEST_*`` (nested keys joined with ``__``, e.g. ``MEDIANEST_DATABASE__URL``), then the
optional TOML file (``--config`` or ``MEDIANEST_CONFIG``). Every model forbids unknown keys so
a typo is an error, not a silently ignored setting. Secrets are ``SecretStr``: their value
never appears in a repr, a log line or an error message.

``docs/configuration.md`` documents every key; ``tests/test_config_docs.py`` keeps it in step
with these models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AnyHttpUrl,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from medianest.config.discovery import DiscoverySettings
from medianest.config.events import EventsSettings
from medianest.config.gateway import GatewaySettings
from medianest.config.identity import IdentitySettings
from medianest.config.messaging import MessagingSettings
from medianest.config.oidc import OidcSettings
from medianest.config.requests import RequestsSettings
from medianest.config.section import Section
from medianest.resilience.config import PolicyConfig

Role = Literal["gateway", "api", "realtime", "workers"]
ROLES: tuple[Role, ...] = ("gateway", "api", "realtime", "workers")

_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}


class ServerSettings(Section):
    """How ``medianest serve`` listens."""

    host: str = Field("127.0.0.1", description="Interface to bind. `0.0.0.0` for all.")
    port: int = Field(8080, ge=1, le=65535, description="TCP port to listen on.")
    roles: Annotated[tuple[Role, ...], NoDecode] = Field(
        ROLES,
        description="Roles this process runs: any of gateway, api, realtime, workers "
        "(comma-separated in the environment). All of them by default.",
    )
    graceful_timeout: float = Field(
        5.0, gt=0, le=300, description="Seconds in-flight requests get to finish on SIGTERM."
    )
    proxy_headers: bool = Field(
        False, description="Trust X-Forwarded-* from `forwarded_allow_ips` (behind nginx)."
    )
    forwarded_allow_ips: str = Field(
        "127.0.0.1", description="Comma-separated proxy addresses whose X-Forwarded-* count."
    )
    public_url: AnyHttpUrl | None = Field(
        None,
        description="The address people use to reach the hub (`https://media.example.com`): "
        "issuer of its access tokens, base of the OIDC redirect URI, the origin that cookie "
        "sign-ins accept. Default: `http://<host>:<port>`.",
    )

    @property
    def base_url(self) -> str:
        """``public_url`` without a trailing slash, else ``http://<host>:<port>``."""
        if self.public_url is not None:
            return str(self.public_url).rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host  # noqa: S104
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    @field_validator("roles", mode="before")
    @classmethod
    def _split_roles(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("roles")
    @classmethod
    def _roles_not_empty(cls, value: tuple[Role, ...]) -> tuple[Role, ...]:
        if not value:
            raise ValueError("at least one role is needed")
        return tuple(dict.fromkeys(value))


class DatabaseSettings(Section):
    """The main database: SQLite by default, PostgreSQL by URL."""

    url: str | None = Field(
        None,
        description="SQLAlchemy URL. `sqlite:///path.db` or `postgresql://user@host/db`; the "
        "async driver (aiosqlite / asyncpg) is chosen for you. Default: "
        "`sqlite+aiosqlite:///<data_dir>/medianest.db`.",
        examples=["postgresql://medianest:secret@127.0.0.1:5432/medianest"],
    )
    migrate_on_start: bool = Field(
        True, description="Apply pending migrations when `serve` starts (safe with many processes)."
    )
    pool_size: int = Field(10, ge=1, le=200, description="PostgreSQL connection pool size.")
    echo: bool = Field(False, description="Log every SQL statement (debugging only).")

    @field_validator("url")
    @classmethod
    def _async_driver(cls, value: str | None) -> str | None:
        if value is None:
            return None
        scheme, sep, rest = value.partition("://")
        if not sep:
            raise ValueError("expected a URL such as sqlite:///data/medianest.db")
        driver = _DRIVERS.get(scheme.lower())
        if driver is None:
            known = ", ".join(sorted(_DRIVERS))
            raise ValueError(f"unsupported database scheme {scheme!r}; use one of {known}")
        return f"{driver}://{rest}"


class LogSettings(Section):
    """Logging: JSON lines when not on a terminal, readable console output on one."""

    level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Minimum level."
    )
    format: Literal["auto", "json", "console"] = Field(
        "auto", description="`auto` picks console on a TTY and JSON otherwise."
    )

    @field_validator("level", "format", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value


class SearchSettings(Section):
    """Unified search over Plex and Overseerr."""

    deadline: float = Field(
        2.0, gt=0, le=60, description="Seconds each source gets before it is reported `timeout`."
    )
    cache_url: str = Field(
        "memory://",
        description="Where last good answers are kept: `memory://` or `redis://host:6379/0`.",
    )
    stale_ttl: float = Field(
        86400.0, gt=0, description="Seconds a last good answer may still serve as `stale`."
    )


class SecuritySettings(Section):
    """API keys and, later, sign-in."""

    secret_key: SecretStr | None = Field(
        None,
        description="Server secret keying the API key HMACs: at least 32 bytes, plain or "
        "`base64:`/`hex:` encoded. Default: a random secret kept in `<data_dir>/secret.key`. "
        "Every instance of a multi-machine deployment must use the same value; changing it "
        "invalidates every key.",
    )


UPSTREAM_KINDS = ("plex", "plextv", "overseerr", "jellyseerr", "kuma")
UpstreamKind = Literal["plex", "plextv", "overseerr", "jellyseerr", "kuma"]


class UpstreamSettings(Section):
    """One third-party service (Plex, plex.tv, Overseerr, Jellyseerr, Uptime Kuma...)."""

    kind: UpstreamKind | None = Field(
        None,
        description="Which service this is: plex, plextv, overseerr, jellyseerr or kuma. "
        "Defaults to the upstream's name when that is one of them.",
    )
    url: AnyHttpUrl = Field(description="Base URL of the service.")
    token: SecretStr | None = Field(None, description="Access token (Plex: X-Plex-Token).")
    api_key: SecretStr | None = Field(None, description="API key (Overseerr: X-Api-Key).")
    username: str | None = Field(None, description="Basic-auth user (Uptime Kuma metrics).")
    password: SecretStr | None = Field(None, description="Basic-auth password.")
    enabled: bool = Field(True, description="Set false to keep the entry but not use it.")
    options: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="Service-specific options (e.g. Kuma `slug`, Overseerr `flavour`).",
    )
    policy: PolicyConfig = Field(
        default_factory=PolicyConfig, description="Resilience policy for every call to it."
    )


UpstreamName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,39}$")]


class Settings(BaseSettings):
    """Everything the hub can be told. See docs/configuration.md for each key."""

    model_config = SettingsConfigDict(
        env_prefix="MEDIANEST_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        validate_default=True,
    )

    data_dir: Path = Field(Path("data"), description="Where the hub keeps its files.")
    allow_anonymous: bool = Field(
        False,
        description="Let callers who did not sign in use the API as guests (read the catalog "
        "and service status). Off: every `/api/v1` endpoint but sign-in needs a credential.",
    )
    server: ServerSettings = Field(default_factory=ServerSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    search: SearchSettings = Field(default_factory=SearchSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    identity: IdentitySettings = Field(default_factory=IdentitySettings)
    discovery: DiscoverySettings = Field(default_factory=DiscoverySettings)
    messaging: MessagingSettings = Field(default_factory=MessagingSettings)
    events: EventsSettings = Field(default_factory=EventsSettings)
    requests: RequestsSettings = Field(default_factory=RequestsSettings)
    oidc: OidcSettings | None = Field(
        None, description="Single sign-on with an OpenID provider: `[oidc]`, off when absent."
    )
    upstreams: dict[UpstreamName, UpstreamSettings] = Field(
        default_factory=dict, description="Third-party services by name: `[upstreams.plex]`..."
    )

    @model_validator(mode="after")
    def _upstream_kinds(self) -> Settings:
        for name, upstream in self.upstreams.items():
            if upstream.kind is None and name not in UPSTREAM_KINDS:
                kinds = ", ".join(UPSTREAM_KINDS)
                raise ValueError(
                    f"upstreams.{name}: set kind (one of {kinds}); the name does not say it"
                )
        return self

    @model_validator(mode="after")
    def _default_database(self) -> Settings:
        if self.database.url is None:
            url = f"sqlite+aiosqlite:///{self.data_dir / 'medianest.db'}"
            object.__setattr__(self, "database", self.database.model_copy(update={"url": url}))
        return self

    def upstream_kind(self, name: str) -> str:
        """The kind of upstream ``name`` (its ``kind``, else its name)."""
        return self.upstreams[name].kind or name

    @property
    def database_url(self) -> str:
        """The resolved async database URL (never ``None`` after validation)."""
        assert self.database.url is not None
        return self.database.url

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = settings_cls.model_config.get("toml_file")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml))
        return tuple(sources)
