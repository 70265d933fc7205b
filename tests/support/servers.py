"""Run an ASGI app on a real loopback socket inside the test's event loop.

Tests talk to the hub and to the simulators over TCP, exactly as a client would; this module
binds a free port first (so the URL is known before the server runs) and waits on the
server's own ``started`` flag rather than sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import uvicorn

from medianest.cli.serve import CompanionServer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RunningServer:
    url: str
    port: int
    server: uvicorn.Server

    def kill(self) -> None:
        """Die like a crashed process: stop listening and reset every open connection."""
        for listener in self.server.servers:
            listener.close()
        for connection in list(self.server.server_state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.abort()
        self.server.should_exit = True
        self.server.force_exit = True


@contextlib.asynccontextmanager
async def serve_asgi(
    app: Any, *, lifespan: str = "auto", **config: Any
) -> AsyncIterator[RunningServer]:
    """Serve ``app`` on ``127.0.0.1:<free port>`` until the block exits."""
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on sockets whose proto says TCP.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    cfg = uvicorn.Config(
        app, lifespan=lifespan, log_level="warning", access_log=False, loop="none", **config
    )
    server = CompanionServer(cfg)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(10):
            while not server.started:
                if task.done():
                    task.result()
                    raise RuntimeError("server exited before it started")
                await asyncio.sleep(0.002)
        yield RunningServer(url=f"http://127.0.0.1:{port}", port=port, server=server)
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=10)
        sock.close()
