"""etcd for tests: Debian's ``/usr/bin/etcd`` on two free ports, stopped and restarted at will.

DESIGN.md: etcd comes from the Debian package (``etcd-server``) and tests start their own
instance. Each instance is a single-member cluster with its data in a temporary directory
that outlives :meth:`RunningEtcd.stop`, so a restart keeps keys, leases and revisions (what
a watch that resumes needs). Heartbeat and election timeouts are short so that etcd's minimum
lease TTL is one second. Readiness is polled on ``/health``, never assumed after a sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from tests.support.servers import free_port
from tests.support.services import services_required

ETCD = "/usr/bin/etcd"


def etcd_binary() -> str:
    """The etcd executable; skips when absent (fails under MEDIANEST_REQUIRE_SERVICES=1)."""
    found = ETCD if os.access(ETCD, os.X_OK) else shutil.which("etcd")
    if found is None:
        reason = "etcd is not installed (apt-get install -y etcd-server)"
        if services_required():
            pytest.fail(f"{reason} and MEDIANEST_REQUIRE_SERVICES=1", pytrace=False)
        pytest.skip(reason)
    return found


@dataclass
class RunningEtcd:
    """One etcd member: ``url`` is its client URL, ``http://127.0.0.1:PORT``."""

    binary: str
    directory: Path
    client_port: int
    peer_port: int
    process: asyncio.subprocess.Process | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    def registry_url(self, prefix: str = "/test", query: str = "") -> str:
        """An ``etcd://`` registry URL for this member (``query`` without the ``?``)."""
        return f"etcd://127.0.0.1:{self.client_port}{prefix}" + (f"?{query}" if query else "")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def log(self) -> str:
        path = self.directory / "etcd.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    async def start(self, *, deadline: float = 30.0) -> None:
        """Start (or restart, same ports and data) the member and wait until it is healthy."""
        if self.running:
            return
        peer = f"http://127.0.0.1:{self.peer_port}"
        log = (self.directory / "etcd.log").open("ab")
        try:
            self.process = await asyncio.create_subprocess_exec(
                self.binary,
                "--name=test",
                f"--data-dir={self.directory / 'data'}",
                f"--listen-client-urls={self.url}",
                f"--advertise-client-urls={self.url}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=test={peer}",
                "--heartbeat-interval=10",
                "--election-timeout=100",
                "--log-level=warn",
                stdout=log,
                stderr=log,
            )
        finally:
            log.close()
        await self._wait_healthy(deadline)

    async def _wait_healthy(self, deadline: float) -> None:
        limit = time.monotonic() + deadline
        timeout = aiohttp.ClientTimeout(total=1)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                assert self.process is not None
                if self.process.returncode is not None:
                    raise RuntimeError(f"etcd exited with {self.process.returncode}: {self.log()}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                    async with session.get(f"{self.url}/health") as response:
                        if (await response.json(content_type=None)).get("health") == "true":
                            return
                if time.monotonic() > limit:
                    raise RuntimeError(f"etcd did not become healthy on {self.url}: {self.log()}")
                await asyncio.sleep(0.02)

    async def stop(self) -> None:
        """Stop the member (SIGTERM, then SIGKILL); its data stays for :meth:`start`."""
        process, self.process = self.process, None
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()

    async def restart(self) -> None:
        await self.stop()
        await self.start()


@contextlib.asynccontextmanager
async def etcd_server(directory: Path | None = None) -> AsyncIterator[RunningEtcd]:
    """A fresh single-member etcd on free client and peer ports, stopped when the block exits.

    Yields a :class:`RunningEtcd`: ``.url`` is ``http://127.0.0.1:PORT``, ``.registry_url()``
    an ``etcd://`` URL, and ``await .stop()`` / ``await .start()`` / ``await .restart()``
    take it down and bring it back with the same ports and data. Its files go to
    ``directory`` (e.g. pytest's ``tmp_path``, left in place) or to a temporary directory
    removed at the end.
    """
    binary = etcd_binary()
    owned = directory is None
    where = Path(tempfile.mkdtemp(prefix="medianest-etcd-")) if directory is None else directory
    client_port = free_port()
    peer_port = free_port()
    while peer_port == client_port:
        peer_port = free_port()
    server = RunningEtcd(binary, where, client_port, peer_port)
    try:
        await server.start()
        yield server
    finally:
        await server.stop()
        if owned:
            shutil.rmtree(where, ignore_errors=True)
