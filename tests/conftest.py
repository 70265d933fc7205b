"""Shared fixtures: real servers by name, fresh databases, captured JSON logs."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from medianest.observability import configure_logging
from medianest.observability.logging import flush_logs
from tests.support.postgres import fresh_database
from tests.support.services import require_service


@pytest.fixture
def postgres_url() -> str:
    return require_service("postgres")


@pytest.fixture
def redis_url() -> str:
    return require_service("redis")


@pytest.fixture
async def postgres_db(postgres_url: str) -> AsyncIterator[str]:
    """URL of an empty PostgreSQL database created for this test and dropped after it."""
    async with fresh_database(postgres_url) as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'medianest.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """Each embedded and server database the hub supports, empty."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'medianest.db'}"
        return
    async with fresh_database(require_service("postgres")) as url:
        yield url


class LogCapture:
    """JSON log lines written by the hub during a test."""

    def __init__(self) -> None:
        self.stream = io.StringIO()

    @property
    def text(self) -> str:
        flush_logs()
        return self.stream.getvalue()

    @property
    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text.splitlines() if line.strip()]


@pytest.fixture
def logs() -> Iterator[LogCapture]:
    capture = LogCapture()
    configure_logging("debug", "json", stream=capture.stream)
    yield capture
    configure_logging("warning", "json")
