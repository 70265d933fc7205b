"""Identity settings: who may sign in, how long sessions and tokens live, secrets at rest.

Wired into :class:`~medianest.config.settings.Settings` as ``settings.identity``
(``[identity]`` in ``medianest.toml``, ``MEDIANEST_IDENTITY__*`` in the environment).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from medianest.config.section import Section


class IdentitySettings(Section):
    """People, sessions, hub-issued access tokens and the vault of per-user secrets."""

    encryption_keys: Annotated[tuple[SecretStr, ...], NoDecode] = Field(
        (),
        description="Keys (32 bytes each, plain or `base64:`/`hex:` encoded; comma-separated "
        "in the environment) encrypting secrets at rest such as users' Plex tokens. The first "
        "encrypts, all decrypt: to rotate, put a new key first, keep the old one until "
        "re-encryption has run. Default: one key derived from the server secret.",
    )
    admin_plex_username: str | None = Field(
        None,
        description="The plex.tv account made admin whenever it signs in: its numeric account "
        "id (all digits; the safer choice) or else its username (any case). Without it the "
        "first person to sign in becomes admin.",
    )
    default_role: Literal["user", "guest"] = Field(
        "user", description="Role of a person signing in for the first time (not the first)."
    )
    session_idle_days: float = Field(
        14.0,
        gt=0,
        le=365,
        description="A session unused for this many days expires; each use extends it.",
    )
    session_max_days: float = Field(
        90.0,
        gt=0,
        le=3650,
        description="A session expires this many days after sign-in however much it is used.",
    )
    access_token_minutes: int = Field(
        15, ge=1, le=1440, description="Lifetime of the hub's bearer access tokens (JWT)."
    )
    signing_key_rotation_hours: float = Field(
        24.0,
        ge=1,
        le=24 * 365,
        description="A new token signing key is made this often; old keys keep verifying "
        "until the last token they signed has expired.",
    )
    issuer: str | None = Field(
        None,
        min_length=1,
        max_length=500,
        description="The `iss` of the hub's access tokens, normally its public base URL. "
        "Default: derived from the server address.",
    )
    password_min_length: int = Field(
        12, ge=8, le=128, description="Shortest password accepted for local accounts."
    )
    sign_in_rate_limit: str = Field(
        "10/minute;100/hour",
        description="Sign-in attempts (passwords, PINs, single sign-on, token refresh) allowed "
        "per client address, in `limits` notation; counted where the gateway counts "
        "(`gateway.rate_limit_storage`).",
    )

    @field_validator("sign_in_rate_limit")
    @classmethod
    def _rate_limit(cls, value: str) -> str:
        from limits import parse_many

        try:
            parse_many(value)
        except ValueError as exc:
            raise ValueError(f"not a rate limit such as '10/minute;100/hour': {value!r}") from exc
        return value

    @field_validator("encryption_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @model_validator(mode="after")
    def _max_covers_idle(self) -> IdentitySettings:
        if self.session_max_days < self.session_idle_days:
            raise ValueError("session_max_days must be at least session_idle_days")
        return self
