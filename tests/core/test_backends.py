"""Backends are chosen by URL through a table; unknown schemes and missing drivers explain."""

from __future__ import annotations

import pytest

from medianest.backends import BackendEntry, BackendTable, mask_url, url_scheme
from medianest.errors import ConfigurationError


class Dummy:
    def __init__(self, url: str, **options: object) -> None:
        self.url = url
        self.options = options

    @classmethod
    def from_url(cls, url: str, **options: object) -> Dummy:
        return cls(url, **options)


TABLE: BackendTable[Dummy] = BackendTable(
    "widget",
    {
        "memory": "tests.core.test_backends:Dummy",
        "mem": "tests.core.test_backends:Dummy",
        "fancy": BackendEntry("medianest_no_such_driver.mod:Fancy", extra="fancy"),
    },
)


def test_scheme_selects_class_and_options_pass_through() -> None:
    backend = TABLE.create("memory://", size=3)
    assert isinstance(backend, Dummy)
    assert backend.options == {"size": 3}
    assert TABLE.load("MEM://x") is Dummy


def test_unknown_scheme_names_it_and_the_known_ones() -> None:
    with pytest.raises(ConfigurationError) as info:
        TABLE.create("redis://h")
    assert "unknown widget backend redis://" in info.value.message
    assert "fancy://, mem://, memory://" in info.value.message


def test_missing_driver_names_the_extra() -> None:
    with pytest.raises(ConfigurationError) as info:
        TABLE.load("fancy://u:secret@h")
    assert "pip install 'medianest[fancy]'" in info.value.message
    assert "secret" not in str(info.value.problems)


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://:hunter2@h:6379/0", "redis://:***@h:6379/0"),
        ("amqp://guest:guest@h/", "amqp://guest:***@h/"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("http://h/x?token=abc&page=2", "http://h/x?token=***&page=2"),
        ("nats://h:4222", "nats://h:4222"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_url_scheme() -> None:
    assert url_scheme("Redis://x") == "redis"
    assert url_scheme("no scheme") == ""
    assert mask_url("http://[::1") == "***"
