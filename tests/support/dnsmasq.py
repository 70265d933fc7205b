"""dnsmasq for tests: an authoritative-enough DNS server for SRV, A and AAAA on a free port.

DESIGN.md: real servers from Debian, started by the tests. ``dnsmasq_server(records)`` writes
a configuration with ``srv-host=``, ``host-record=`` and ``address=`` lines, runs Debian's
``/usr/sbin/dnsmasq`` in the foreground on ``127.0.0.1:<free port>`` (UDP and TCP), waits
until it answers a query, and :meth:`RunningDnsmasq.reload` restarts it on the same port with
new records (SIGHUP would not re-read ``srv-host`` lines). Names under ``local_domains`` are
answered from the configuration only: a missing name is NXDOMAIN, never forwarded.

:func:`headless_service` builds the records Kubernetes publishes for a headless service:
``_<port>._<proto>.<service>.<namespace>.svc.cluster.local`` SRV records, one per pod,
pointing at per-pod A/AAAA names.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dns.asyncquery
import dns.exception
import dns.message
import pytest

from tests.support.services import services_required

DNSMASQ = "/usr/sbin/dnsmasq"


@dataclass(frozen=True)
class Srv:
    """One SRV record: ``name`` (``_http._tcp.plex.media.svc.cluster.local``) → target:port."""

    name: str
    target: str
    port: int
    priority: int = 0
    weight: int = 0


@dataclass(frozen=True)
class Host:
    """A and/or AAAA records of ``name``."""

    name: str
    addresses: tuple[str, ...]


@dataclass(frozen=True)
class Address:
    """A and/or AAAA of ``name`` through an ``address=`` line: dnsmasq answers lookups of it
    but, unlike ``host-record=``, leaves it out of SRV answers' additional section."""

    name: str
    addresses: tuple[str, ...]


Record = Srv | Host | Address


@dataclass(frozen=True)
class Pod:
    """One pod of a headless service: its hostname, addresses and SRV priority/weight."""

    hostname: str
    addresses: tuple[str, ...]
    priority: int = 0
    weight: int = 10


def headless_service(
    service: str,
    pods: Iterable[Pod],
    *,
    namespace: str = "media",
    port: int = 8080,
    port_name: str = "http",
    proto: str = "tcp",
    zone: str = "cluster.local",
) -> list[Record]:
    """The SRV and A/AAAA records of a Kubernetes headless service with ``pods``."""
    domain = f"{service}.{namespace}.svc.{zone}"
    records: list[Record] = []
    for pod in pods:
        target = f"{pod.hostname}.{domain}"
        records.append(
            Srv(f"_{port_name}._{proto}.{domain}", target, port, pod.priority, pod.weight)
        )
        records.append(Host(target, pod.addresses))
    return records


def dnsmasq_binary() -> str:
    """The dnsmasq executable; skips when absent (fails under MEDIANEST_REQUIRE_SERVICES=1)."""
    found = DNSMASQ if os.access(DNSMASQ, os.X_OK) else shutil.which("dnsmasq")
    if found is None:
        reason = "dnsmasq is not installed (apt-get install -y dnsmasq-base)"
        if services_required():
            pytest.fail(f"{reason} and MEDIANEST_REQUIRE_SERVICES=1", pytrace=False)
        pytest.skip(reason)
    return found


def free_dns_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (DNS listens on both)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket() as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no port free for both UDP and TCP")


def config_text(records: Iterable[Record], *, ttl: int, local_domains: Sequence[str]) -> str:
    lines = [f"local-ttl={ttl}", *(f"local=/{domain}/" for domain in local_domains)]
    for record in records:
        if isinstance(record, Srv):
            fields = (record.name, record.target, record.port, record.priority, record.weight)
            lines.append("srv-host=" + ",".join(map(str, fields)))
        elif isinstance(record, Host):
            lines.append(f"host-record={record.name},{','.join(record.addresses)}")
        else:
            lines.extend(f"address=/{record.name}/{address}" for address in record.addresses)
    return "\n".join(lines) + "\n"


@dataclass
class RunningDnsmasq:
    """One dnsmasq; ``nameserver`` is ``127.0.0.1:PORT``."""

    binary: str
    directory: Path
    port: int
    ttl: int = 0
    local_domains: tuple[str, ...] = ("cluster.local", "test")
    process: asyncio.subprocess.Process | None = field(default=None, repr=False)

    @property
    def nameserver(self) -> str:
        return f"127.0.0.1:{self.port}"

    def registry_url(self, query: str) -> str:
        """A ``dns+srv://`` registry URL resolving through this server."""
        return f"dns+srv://{self.nameserver}/?{query}"

    def log(self) -> str:
        path = self.directory / "dnsmasq.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    async def start(self, records: Iterable[Record], *, deadline: float = 15.0) -> None:
        config = self.directory / "dnsmasq.conf"
        text = config_text(records, ttl=self.ttl, local_domains=self.local_domains)
        config.write_text(text, encoding="utf-8")
        user = ["--user=root"] if os.geteuid() == 0 else []
        log = (self.directory / "dnsmasq.log").open("ab")
        try:
            self.process = await asyncio.create_subprocess_exec(
                self.binary,
                "--no-daemon",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
                f"--port={self.port}",
                f"--pid-file={self.directory / 'dnsmasq.pid'}",
                f"--conf-file={config}",
                *user,
                stdout=log,
                stderr=log,
            )
        finally:
            log.close()
        await self._wait_answering(deadline)

    async def _wait_answering(self, deadline: float) -> None:
        limit = time.monotonic() + deadline
        query = dns.message.make_query("ready.test.", "A")
        while True:
            assert self.process is not None
            if self.process.returncode is not None:
                raise RuntimeError(f"dnsmasq exited with {self.process.returncode}: {self.log()}")
            with contextlib.suppress(dns.exception.DNSException, OSError):
                await dns.asyncquery.udp(query, "127.0.0.1", timeout=0.2, port=self.port)
                return
            if time.monotonic() > limit:
                raise RuntimeError(f"dnsmasq did not answer on {self.nameserver}: {self.log()}")
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()

    async def reload(self, records: Iterable[Record]) -> None:
        """Serve ``records`` instead: restart on the same port with a new configuration."""
        await self.stop()
        await self.start(records)


@contextlib.asynccontextmanager
async def dnsmasq_server(
    records: Iterable[Record],
    *,
    ttl: int = 0,
    local_domains: Sequence[str] = ("cluster.local", "test"),
) -> AsyncIterator[RunningDnsmasq]:
    """dnsmasq serving ``records`` (``Srv`` / ``Host``) on a free port until the block exits.

    ``ttl`` is the TTL of every answer (dnsmasq's ``local-ttl``; 0, dnsmasq's default, means
    "do not cache"). Yields a :class:`RunningDnsmasq`: ``.nameserver`` is ``127.0.0.1:PORT``,
    ``await .reload(records)`` swaps the records.
    """
    binary = dnsmasq_binary()
    directory = Path(tempfile.mkdtemp(prefix="medianest-dnsmasq-"))
    server = RunningDnsmasq(binary, directory, free_dns_port(), ttl, tuple(local_domains))
    try:
        await server.start(records)
        yield server
    finally:
        await server.stop()
        shutil.rmtree(directory, ignore_errors=True)
