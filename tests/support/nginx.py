"""nginx for tests: install it from Debian when missing, run it on a free port, stop it.

DESIGN.md: nginx comes from the Debian package and tests start their own instance. The
instance is a foreground master (``daemon off``) whose every file (error log, pid, temp
directories) lives in the test's directory; the exported gateway configuration is included
from a minimal main configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.services import services_required

_TEMP_DIRS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def nginx_binary() -> str:
    """The ``nginx`` executable, installed with apt when missing and we are root.

    Skips the test when nginx cannot be had, or fails it under MEDIANEST_REQUIRE_SERVICES=1.
    """
    found = _which()
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "nginx"]
        for command in (install, ["apt-get", "update"], install):
            subprocess.run(command, env=env, capture_output=True, timeout=600, check=False)
            found = _which()
            if found is not None:
                break
    if found is None:
        reason = "nginx is not installed (apt-get install -y nginx)"
        if services_required():
            pytest.fail(f"{reason} and MEDIANEST_REQUIRE_SERVICES=1", pytrace=False)
        pytest.skip(reason)
    return found


def _which() -> str | None:
    """``nginx`` on PATH, or Debian's /usr/sbin/nginx when PATH lacks /usr/sbin."""
    found = shutil.which("nginx")
    if found is None and os.access("/usr/sbin/nginx", os.X_OK):
        found = "/usr/sbin/nginx"
    return found


def main_config(directory: Path, include: Path) -> Path:
    """A minimal nginx.conf in ``directory`` whose http block includes ``include``."""
    for name in _TEMP_DIRS:
        (directory / name).mkdir(exist_ok=True)
    user = "user root;\n" if os.geteuid() == 0 else ""
    text = (
        f"{user}worker_processes 1;\n"
        f"error_log {directory / 'error.log'} warn;\n"
        f"pid {directory / 'nginx.pid'};\n"
        "events { worker_connections 1024; }\n"
        "http {\n"
        "    access_log off;\n"
        f"    client_body_temp_path {directory / 'client_body'};\n"
        f"    proxy_temp_path {directory / 'proxy'};\n"
        f"    fastcgi_temp_path {directory / 'fastcgi'};\n"
        f"    uwsgi_temp_path {directory / 'uwsgi'};\n"
        f"    scgi_temp_path {directory / 'scgi'};\n"
        f"    include {include};\n"
        "}\n"
    )
    path = directory / "nginx.conf"
    path.write_text(text, encoding="utf-8")
    return path


def nginx_command(binary: str, directory: Path) -> list[str]:
    config = directory / "nginx.conf"
    return [binary, "-p", str(directory), "-e", str(directory / "error.log"), "-c", str(config)]


def check_config(binary: str, directory: Path) -> subprocess.CompletedProcess[str]:
    """``nginx -t`` on ``directory/nginx.conf``."""
    return subprocess.run(
        [*nginx_command(binary, directory), "-t"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@dataclass
class RunningNginx:
    url: str
    port: int
    directory: Path
    process: asyncio.subprocess.Process

    def error_log(self) -> str:
        path = self.directory / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""


async def _accepts(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


@contextlib.asynccontextmanager
async def running_nginx(
    binary: str, directory: Path, port: int, *, deadline: float = 15.0
) -> AsyncIterator[RunningNginx]:
    """Run nginx in the foreground on ``directory/nginx.conf`` until the block exits.

    The configuration must listen on ``127.0.0.1:port``; this waits until nginx accepts
    connections there, then, at the end, stops it gracefully (SIGQUIT) or kills it.
    """
    process = await asyncio.create_subprocess_exec(
        *nginx_command(binary, directory),
        *("-g", "daemon off;"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    running = RunningNginx(f"http://127.0.0.1:{port}", port, directory, process)
    try:
        limit = time.monotonic() + deadline
        while not await _accepts(port):
            if process.returncode is not None:
                raise RuntimeError(f"nginx exited with {process.returncode}: {running.error_log()}")
            if time.monotonic() > limit:
                raise RuntimeError(f"nginx did not accept connections on port {port}")
            await asyncio.sleep(0.02)
        yield running
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGQUIT)
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
