"""What a simulator can do to one HTTP connection besides answering it.

ASGI has no way to say "drop this connection" or "tell me when the client went away while I
am busy". :class:`Connection` adds both for the simulators:

* the request body is read up front and replayed to the service, so the connection can
  then be watched for a disconnect (a client timeout) while a fault delays the answer;
* :meth:`Connection.abort` resets the TCP connection. uvicorn does not expose the socket in
  the ASGI scope, but its ``send`` callable is a bound method of the per-request cycle object
  that holds the asyncio transport; setting ``SO_LINGER`` to zero before closing makes the
  kernel send an RST, which a client sees as "connection reset by peer". Under another
  server (or if uvicorn changes) ``abort`` returns ``False`` and the caller falls back to a
  503 answer.

The connection is stored in the ASGI scope under :data:`SCOPE_KEY`, so a route handler (the
Uptime Kuma "slug that never answers") can reach it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Scope = MutableMapping[str, Any]

SCOPE_KEY = "medianest.simulator.connection"


class Connection:
    """One request's connection: buffered body, disconnect watch, hard abort."""

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self.raw_send = send
        self.body = b""
        self._replayed = False
        self._disconnect: asyncio.Task[Message] | None = None

    async def read_body(self, limit: int = 16 * 1024 * 1024) -> bytes:
        """Read the whole request body (the service gets it again from :meth:`receive`)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self._disconnect = asyncio.ensure_future(_done(message))
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size <= limit:
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        self.body = b"".join(chunks)
        return self.body

    async def receive(self) -> Message:
        """ASGI ``receive`` for the service: the buffered body, then the disconnect."""
        if not self._replayed:
            self._replayed = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        return await self._watch()

    def _watch(self) -> asyncio.Task[Message]:
        if self._disconnect is None:
            self._disconnect = asyncio.ensure_future(self._receive())
        return self._disconnect

    @property
    def disconnected(self) -> bool:
        return self._disconnect is not None and self._disconnect.done()

    async def wait(self, seconds: float) -> bool:
        """Sleep ``seconds`` unless the client disconnects first; True if it did."""
        if seconds <= 0:
            return self.disconnected
        watch = self._watch()
        done, _ = await asyncio.wait({watch}, timeout=seconds)
        return bool(done)

    def _transport(self) -> asyncio.Transport | None:
        transport = getattr(getattr(self.raw_send, "__self__", None), "transport", None)
        return transport if isinstance(transport, asyncio.Transport) else None

    def no_delay(self) -> None:
        """Turn Nagle's algorithm off, as production servers do.

        asyncio only does it for sockets created with an explicit ``IPPROTO_TCP``; a server
        started on a socket made with ``socket.socket(AF_INET, SOCK_STREAM)`` would otherwise
        hold every response body until the client's delayed ACK (about 40 ms per request on
        a kept-alive connection).
        """
        transport = self._transport()
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def abort(self) -> bool:
        """Reset the TCP connection without an HTTP answer; False if that is not possible."""
        transport = self._transport()
        if transport is None:
            return False
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
        return True

    async def settle(self) -> None:
        """Let the server notice an abort before the request task ends (no 500 is sent)."""
        for _ in range(3):
            await asyncio.sleep(0)

    def close(self) -> None:
        """Stop watching for a disconnect (the request is over)."""
        if self._disconnect is not None and not self._disconnect.done():
            self._disconnect.cancel()


async def _done(message: Message) -> Message:
    return message


def connection_of(scope: Scope) -> Connection | None:
    """The :class:`Connection` the simulator wrapper stored in ``scope``, if any."""
    conn = scope.get(SCOPE_KEY)
    return conn if isinstance(conn, Connection) else None


async def never_answer(scope: Scope, limit: float) -> None:
    """Hold the request without answering until the client leaves or ``limit`` passes.

    After ``limit`` seconds the connection is reset rather than answered, so a client
    without a timeout sees a failure instead of hanging forever.
    """
    conn = connection_of(scope)
    if conn is None:
        await asyncio.sleep(limit)
        return
    if not await conn.wait(limit):
        conn.abort()
        await conn.settle()
