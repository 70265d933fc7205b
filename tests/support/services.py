"""Real servers for tests: find them, or skip — or fail when they are required.

DESIGN.md: a test that needs a server skips with a clear reason when the server is absent,
except when ``MEDIANEST_REQUIRE_SERVICES=1`` (set by ``make test`` under CI), where it fails.
"""

from __future__ import annotations

import os
import socket

import pytest

SERVICES: dict[str, tuple[str, int]] = {
    "postgres": ("127.0.0.1", 5432),
    "redis": ("127.0.0.1", 6379),
    "rabbitmq": ("127.0.0.1", 5672),
    "nats": ("127.0.0.1", 4222),
}

URLS: dict[str, str] = {
    "postgres": os.environ.get(
        "MEDIANEST_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
    ),
    "redis": os.environ.get("MEDIANEST_TEST_REDIS_URL", "redis://127.0.0.1:6379/15"),
    "rabbitmq": os.environ.get("MEDIANEST_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
    "nats": os.environ.get("MEDIANEST_TEST_NATS_URL", "nats://127.0.0.1:4222"),
}


def services_required() -> bool:
    return os.environ.get("MEDIANEST_REQUIRE_SERVICES", "") == "1"


def reachable(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def require_service(name: str) -> str:
    """Return the test URL of server ``name``; skip (or fail when required) if it is down."""
    host, port = SERVICES[name]
    if not reachable(host, port):
        reason = f"{name} is not reachable at {host}:{port}"
        if services_required():
            pytest.fail(f"{reason} and MEDIANEST_REQUIRE_SERVICES=1", pytrace=False)
        pytest.skip(reason)
    return URLS[name]
