"""WebSocket upgrades through the gateway: connect upstream first, then relay both ways.

The client's handshake is accepted only once the upstream accepted its own (with the
subprotocol the upstream chose), so a dead upstream refuses the client instead of
accepting and closing at once. Frames are relayed as they come; a close on either side
closes the other with the same code.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

import aiohttp
from starlette.types import Receive, Scope, Send

from medianest.gateway.forwarding import decode_headers, upstream_request_headers
from medianest.gateway.table import RouteMatch, encode_path

_HANDSHAKE = frozenset(
    {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
    }
)


async def proxy_websocket(
    gateway: Any,
    rt: Any,
    found: RouteMatch,
    scope: Scope,
    receive: Receive,
    send: Send,
    headers: Mapping[str, str],
    ip: str,
) -> None:
    first = await receive()
    if first["type"] != "websocket.connect":
        return
    endpoint = rt.pool.pick()
    query = scope.get("query_string", b"").decode("latin-1")
    base = endpoint.url.rstrip("/").replace("http://", "ws://", 1).replace("https://", "wss://", 1)
    url = base + encode_path(found.upstream_path) + (f"?{query}" if query else "")
    forwarded = [
        (k, v)
        for k, v in upstream_request_headers(
            decode_headers(scope["headers"]),
            client_ip=ip,
            trusted_forwarded_for=None,
            scheme="ws",
            host=headers.get("host"),
            request_id=None,
            content_length=None,
        )
        if k not in _HANDSHAKE
    ]
    protocols = tuple(scope.get("subprotocols", ()))
    try:
        upstream = await gateway.forwarder.session.ws_connect(
            url,
            headers=forwarded,
            protocols=protocols,
            timeout=aiohttp.ClientWSTimeout(ws_close=5),
            autoping=True,
        )
    except (aiohttp.ClientError, OSError, TimeoutError):
        rt.pool.record_failure(endpoint, "connect")
        await send({"type": "websocket.close", "code": 1011, "reason": "upstream unavailable"})
        return
    rt.pool.record_success(endpoint)
    await send({"type": "websocket.accept", "subprotocol": upstream.protocol})
    with rt.pool.track(endpoint):
        await _relay(upstream, receive, send)


async def _relay(upstream: aiohttp.ClientWebSocketResponse, receive: Receive, send: Send) -> None:
    async def client_to_upstream() -> None:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                await upstream.close(code=message.get("code", 1000))
                return
            if message.get("text") is not None:
                await upstream.send_str(message["text"])
            elif message.get("bytes") is not None:
                await upstream.send_bytes(message["bytes"])

    async def upstream_to_client() -> None:
        async for message in upstream:
            if message.type is aiohttp.WSMsgType.TEXT:
                await send({"type": "websocket.send", "text": message.data})
            elif message.type is aiohttp.WSMsgType.BINARY:
                await send({"type": "websocket.send", "bytes": message.data})
            else:
                break
        code = upstream.close_code or 1000
        with contextlib.suppress(Exception):
            await send({"type": "websocket.close", "code": code})

    tasks = [asyncio.create_task(client_to_upstream()), asyncio.create_task(upstream_to_client())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await upstream.close()
