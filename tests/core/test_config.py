"""Settings come from flags, environment and TOML, in that order, and bad ones are explained."""

from __future__ import annotations

from pathlib import Path

import pytest

from medianest.config import load_settings
from medianest.errors import ConfigurationError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("MEDIANEST_") and key != "MEDIANEST_REQUIRE_SERVICES":
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_need_nothing_installed() -> None:
    settings = load_settings()
    assert settings.server.host == "127.0.0.1"
    assert settings.server.port == 8080
    assert settings.server.roles == ("gateway", "api", "realtime", "workers")
    assert settings.database_url == "sqlite+aiosqlite:///data/medianest.db"


def test_environment_beats_file_and_flags_beat_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = write(tmp_path / "m.toml", "[server]\nport = 9001\nhost = '0.0.0.0'\n")
    assert load_settings(cfg).server.port == 9001
    monkeypatch.setenv("MEDIANEST_SERVER__PORT", "9002")
    settings = load_settings(cfg)
    assert settings.server.port == 9002
    assert settings.server.host == "0.0.0.0"  # the file still supplies what env does not
    assert load_settings(cfg, {"server": {"port": 9003}}).server.port == 9003


def test_config_path_from_environment_and_default_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "medianest.toml", "[server]\nport = 9100\n")
    assert load_settings().server.port == 9100
    other = write(tmp_path / "other.toml", "[server]\nport = 9200\n")
    monkeypatch.setenv("MEDIANEST_CONFIG", str(other))
    assert load_settings().server.port == 9200


def test_database_urls_get_the_async_driver() -> None:
    pg = load_settings(overrides={"database": {"url": "postgresql://u:pw@db:5432/mn"}})
    assert pg.database_url == "postgresql+asyncpg://u:pw@db:5432/mn"
    lite = load_settings(overrides={"database": {"url": "sqlite:////var/lib/mn.db"}})
    assert lite.database_url == "sqlite+aiosqlite:////var/lib/mn.db"
    custom_dir = load_settings(overrides={"data_dir": "/srv/mn"})
    assert custom_dir.database_url == "sqlite+aiosqlite:////srv/mn/medianest.db"


def test_roles_from_a_comma_separated_string(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDIANEST_SERVER__ROLES", "api, workers,api")
    assert load_settings().server.roles == ("api", "workers")


def test_every_bad_key_is_named_with_value_and_expectation(tmp_path: Path) -> None:
    cfg = write(
        tmp_path / "bad.toml",
        "[server]\nport = 70000\nroles = ['api', 'chef']\n[database]\nurl = 'mysql://x/y'\n"
        "[log]\nlevle = 'info'\n",
    )
    with pytest.raises(ConfigurationError) as info:
        load_settings(cfg)
    problems = {key: (value, why) for key, value, why in info.value.problems}
    assert problems["server.port"][0] == "70000"
    assert "less than or equal to 65535" in problems["server.port"][1]
    assert "server.roles.1" in problems
    assert "'chef'" in problems["server.roles.1"][0]
    assert "unsupported database scheme 'mysql'" in problems["database.url"][1]
    assert problems["log.levle"][1].startswith("unknown key")
    assert str(cfg) in info.value.message


def test_secrets_are_masked_in_errors_and_reprs(tmp_path: Path) -> None:
    cfg = write(
        tmp_path / "up.toml",
        "[upstreams.plex]\nurl = 'not a url'\ntoken = 'tok-SUPERSECRET'\n"
        "[upstreams.kuma]\nurl = 'http://kuma:3001'\npassword = 12345\n",
    )
    with pytest.raises(ConfigurationError) as info:
        load_settings(cfg)
    assert "SUPERSECRET" not in info.value.message
    assert "12345" not in info.value.message
    assert "upstreams.plex.url" in info.value.message
    good = write(
        tmp_path / "ok.toml", "[upstreams.plex]\nurl='http://plex:32400'\ntoken='tok-SECRET'\n"
    )
    settings = load_settings(good)
    assert "tok-SECRET" not in repr(settings)
    assert settings.upstreams["plex"].token is not None
    assert settings.upstreams["plex"].token.get_secret_value() == "tok-SECRET"


def test_database_password_masked_in_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as info:
        load_settings(overrides={"database": {"url": "oracle://scott:tiger-pw@db/x"}})
    assert "tiger-pw" not in info.value.message
    assert "scott:***@db" in info.value.message


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("[server\nport=1", "not valid TOML"),
        ("[upstreams.Bad-Name]\nurl='http://x'\n", "upstreams.Bad-Name"),
        ("[upstreams.plex]\ntoken='x'\n", "upstreams.plex.url"),
    ],
)
def test_file_problems_are_explained(tmp_path: Path, content: str, expected: str) -> None:
    cfg = write(tmp_path / "c.toml", content)
    with pytest.raises(ConfigurationError) as info:
        load_settings(cfg)
    assert expected in info.value.message


def test_missing_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read configuration file"):
        load_settings(tmp_path / "nope.toml")


def test_upstream_policy_is_validated(tmp_path: Path) -> None:
    cfg = write(
        tmp_path / "p.toml",
        "[upstreams.overseerr]\nurl='http://o:5055'\n[upstreams.overseerr.policy]\nbogus = 1\n",
    )
    with pytest.raises(ConfigurationError) as info:
        load_settings(cfg)
    assert "upstreams.overseerr.policy.bogus" in info.value.message
