"""Broker servers a test may restart: private Redis and NATS instances, the shared RabbitMQ.

Redis and NATS run from the machine's own binaries (``redis-server``, ``nats-server``) on a
free port with their data in the test's directory, so a restart disturbs no other test and
only ends a process the test started. Redis runs with an append-only file fsynced on every
write: an acknowledged write survives a restart (the shared instance runs without
persistence, where a restart empties every stream and no broker could keep a message).
NATS keeps JetStream on file in the same way. RabbitMQ cannot be started privately in a
test; the shared one is restarted with ``rabbitmqctl stop_app`` / ``start_app`` (durable
queues and persistent messages survive), and ``start_app`` always runs afterwards.

Readiness is polled (a TCP connect), never assumed after a sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.servers import free_port
from tests.support.services import require_service, services_required

STARTUP_DEADLINE = 30.0


def binary(name: str) -> str:
    """The path of a server binary; skips (or fails when required) when it is missing."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if found is None:
        reason = f"{name} is not installed"
        if services_required():
            pytest.fail(f"{reason} and MEDIANEST_REQUIRE_SERVICES=1", pytrace=False)
        pytest.skip(reason)
    return found


async def wait_until_listening(port: int, deadline: float = STARTUP_DEADLINE) -> None:
    async with asyncio.timeout(deadline):
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return
            except OSError:
                await asyncio.sleep(0.02)


@dataclass
class PrivateServer:
    """A server process this test started: ``stop`` ends it (SIGTERM: a clean shutdown
    that flushes its data), ``start`` runs it again with the same data."""

    argv: list[str]
    port: int
    url: str
    process: asyncio.subprocess.Process | None = field(default=None, repr=False)

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *self.argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        await wait_until_listening(self.port)

    async def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                async with asyncio.timeout(STARTUP_DEADLINE):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()


@contextlib.asynccontextmanager
async def private_redis(tmp_path: Path) -> AsyncIterator[PrivateServer]:
    """``redis-server`` on a free port, AOF fsynced always, data in ``tmp_path/redis``."""
    directory = tmp_path / "redis"
    directory.mkdir()
    port = free_port()
    argv = [binary("redis-server"), "--port", str(port), "--bind", "127.0.0.1"]
    argv += ["--save", "", "--appendonly", "yes", "--appendfsync", "always"]
    argv += ["--dir", str(directory), "--daemonize", "no"]
    server = PrivateServer(argv, port, f"redis://127.0.0.1:{port}/0")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@contextlib.asynccontextmanager
async def private_nats(tmp_path: Path) -> AsyncIterator[PrivateServer]:
    """``nats-server -js`` on a free port, JetStream on file in ``tmp_path/nats``."""
    directory = tmp_path / "nats"
    directory.mkdir()
    port = free_port()
    argv = [binary("nats-server"), "-a", "127.0.0.1", "-p", str(port), "-js"]
    argv += ["-sd", str(directory)]
    server = PrivateServer(argv, port, f"nats://127.0.0.1:{port}")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def _rabbitmqctl(*args: str) -> None:
    process = await asyncio.create_subprocess_exec(
        binary("rabbitmqctl"), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {(out + err).decode()}")


@dataclass
class SharedRabbit:
    """The shared RabbitMQ, whose application a test stops and starts again."""

    url: str
    port: int = 5672

    async def stop(self) -> None:
        await _rabbitmqctl("stop_app")

    async def start(self) -> None:
        await _rabbitmqctl("start_app")
        await wait_until_listening(self.port)


@contextlib.asynccontextmanager
async def shared_rabbitmq() -> AsyncIterator[SharedRabbit]:
    """The shared RabbitMQ; whatever happens in the block, it runs again afterwards."""
    server = SharedRabbit(require_service("rabbitmq"))
    binary("rabbitmqctl")
    try:
        yield server
    finally:
        await server.start()
