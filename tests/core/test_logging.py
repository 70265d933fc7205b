"""Secrets never reach a log line, whoever logs them and however."""

from __future__ import annotations

import logging

import pytest

from medianest.observability import get_logger
from medianest.observability.logging import redact_text
from tests.conftest import LogCapture


@pytest.mark.parametrize(
    ("text", "hidden"),
    [
        ("connect postgresql://mn:s3cret-pw@db/x failed", "s3cret-pw"),
        ("GET /library?X-Plex-Token=plexTOKEN123&x=1", "plexTOKEN123"),
        ('{"apiKey": "ovs-KEY-999"}', "ovs-KEY-999"),
        ("Authorization: Bearer eyJhbGciOi.payload.sig", "eyJhbGciOi.payload.sig"),
        ("password=hunter2 user=bob", "hunter2"),
        ("x-api-key: abcdef0123", "abcdef0123"),
    ],
)
def test_redact_text(text: str, hidden: str) -> None:
    assert hidden not in redact_text(text)
    assert "***" in redact_text(text)


def test_structlog_and_stdlib_lines_are_redacted(logs: LogCapture) -> None:
    log = get_logger("medianest.test")
    log.info(
        "calling upstream",
        token="tok-ABC",
        headers={"X-Plex-Token": "tok-DEF", "Accept": "application/json"},
        url="redis://:redispw@127.0.0.1:6379/0",
        attempts=3,
        verified=True,
    )
    logging.getLogger("some.library").warning("retrying amqp://guest:rabbitpw@mq/ with apikey=K42")
    text = logs.text
    for secret in ("tok-ABC", "tok-DEF", "redispw", "rabbitpw", "K42"):
        assert secret not in text
    first, second = logs.records[-2:]
    assert first["attempts"] == 3
    assert first["verified"] is True
    assert first["headers"]["Accept"] == "application/json"
    assert first["url"] == "redis://:***@127.0.0.1:6379/0"
    assert second["logger"] == "some.library"
    assert second["level"] == "warning"
