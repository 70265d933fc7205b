"""Configuration: the :class:`Settings` model and :func:`load_settings`."""

from medianest.config.loader import CONFIG_ENV, config_path, load_settings
from medianest.config.settings import (
    ROLES,
    DatabaseSettings,
    LogSettings,
    SearchSettings,
    ServerSettings,
    Settings,
    UpstreamSettings,
)

__all__ = [
    "CONFIG_ENV",
    "ROLES",
    "DatabaseSettings",
    "LogSettings",
    "SearchSettings",
    "ServerSettings",
    "Settings",
    "UpstreamSettings",
    "config_path",
    "load_settings",
]
