"""Load :class:`~medianest.config.settings.Settings` and explain what is wrong with it.

A bad configuration never surfaces as a traceback: :func:`load_settings` turns every
pydantic error, TOML syntax error and unreadable file into one
:class:`~medianest.errors.ConfigurationError` whose ``problems`` list names each key, the bad
value (masked when it is a secret) and what was expected. The CLI prints that and exits 2.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pydantic
from pydantic_settings import SettingsConfigDict, SettingsError

from medianest.backends import MASK, mask_url
from medianest.config.settings import Settings
from medianest.errors import ConfigurationError

CONFIG_ENV = "MEDIANEST_CONFIG"
_SECRET_WORDS = ("token", "password", "secret", "api_key", "apikey", "key")


def config_path(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The TOML file to read: the explicit path, else ``$MEDIANEST_CONFIG``, else none.

    ``./medianest.toml`` is used when it exists and nothing else was named.
    """
    chosen = explicit if explicit is not None else os.environ.get(CONFIG_ENV) or None
    if chosen is None:
        default = Path("medianest.toml")
        return default if default.is_file() else None
    return Path(chosen)


def load_settings(
    config_file: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build the settings from overrides, environment and the TOML file, or raise.

    ``overrides`` are nested dicts as produced by command-line flags
    (``{"server": {"port": 9000}}``); they win over the environment, which wins over the file.
    """
    path = config_path(config_file)
    if path is not None:
        _check_toml(path)
    cls: type[Settings] = Settings
    if path is not None:
        cls = type(
            "FileSettings",
            (Settings,),
            {"model_config": SettingsConfigDict(**{**Settings.model_config, "toml_file": path})},
        )
    try:
        return cls(**dict(overrides or {}))
    except pydantic.ValidationError as exc:
        raise _explain(exc, path) from None
    except SettingsError as exc:
        raise ConfigurationError(
            f"invalid configuration: {exc}",
            problems=[("environment", "MEDIANEST_*", str(exc))],
        ) from None


def _check_toml(path: Path) -> None:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read configuration file {path}: {exc.strerror or exc}",
            problems=[("--config", str(path), "a readable TOML file")],
        ) from None
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(
            f"configuration file {path} is not valid TOML: {exc}",
            problems=[("--config", str(path), f"valid TOML ({exc})")],
        ) from None


def _explain(exc: pydantic.ValidationError, path: Path | None) -> ConfigurationError:
    problems = []
    for err in exc.errors(include_url=False):
        key = ".".join(str(part) for part in err["loc"]) or "(root)"
        value = _show_value(key, err.get("input"), err["type"])
        problems.append((key, value, _expectation(err)))
    where = f" (from {path}, environment MEDIANEST_* and flags)" if path else ""
    lines = [f"  {key} = {value}: {why}" for key, value, why in problems]
    message = f"invalid configuration{where}:\n" + "\n".join(lines)
    return ConfigurationError(message, problems=problems)


def _show_value(key: str, value: object, err_type: str) -> str:
    if err_type == "missing":
        return "(missing)"
    last = key.rsplit(".", 1)[-1].lower()
    if any(word in last for word in _SECRET_WORDS):
        return MASK
    if isinstance(value, str):
        return repr(mask_url(value)) if "://" in value else repr(value)
    if isinstance(value, Mapping):
        return "{...}"
    return repr(value)


def _expectation(err: Any) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown key (check the spelling; see docs/configuration.md)"
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ")
