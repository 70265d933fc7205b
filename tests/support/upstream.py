"""A small upstream service for gateway tests: echo, stream, ranges, failures, WebSocket."""

from __future__ import annotations

import asyncio
import hashlib
import json

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

PATTERN = bytes(range(256)) * 256  # 64 KiB


def upstream_app(name: str) -> Starlette:
    hits = {"count": 0, "slow": 0}

    async def echo(request: Request) -> Response:
        hits["count"] += 1
        digest = hashlib.sha256()
        size = 0
        async for chunk in request.stream():
            digest.update(chunk)
            size += len(chunk)
        return JSONResponse(
            {
                "instance": name,
                "method": request.method,
                "path": request.url.path,
                "raw_path": request.scope.get("raw_path", b"").decode("latin-1"),
                "query": request.url.query,
                "headers": [[k.decode(), v.decode()] for k, v in request.scope["headers"]],
                "body_size": size,
                "body_sha256": digest.hexdigest(),
            },
            headers={"x-instance": name, "connection": "x-upstream-hop", "x-upstream-hop": "1"},
        )

    async def big(request: Request) -> Response:
        size = int(request.query_params.get("size", "0"))

        async def chunks():  # type: ignore[no-untyped-def]
            left = size
            while left > 0:
                piece = PATTERN[: min(left, len(PATTERN))]
                left -= len(piece)
                yield piece

        return StreamingResponse(
            chunks(), media_type="application/octet-stream", headers={"content-length": str(size)}
        )

    async def ranged(request: Request) -> Response:
        data = PATTERN[:1000]
        header = request.headers.get("range")
        if header and header.startswith("bytes="):
            start_s, _, end_s = header[6:].partition("-")
            start, end = int(start_s), int(end_s or len(data) - 1)
            return Response(
                data[start : end + 1],
                status_code=206,
                headers={
                    "content-range": f"bytes {start}-{end}/{len(data)}",
                    "accept-ranges": "bytes",
                },
            )
        return Response(data, headers={"accept-ranges": "bytes"})

    async def status(request: Request) -> Response:
        hits["count"] += 1
        return JSONResponse({"instance": name}, status_code=int(request.path_params["code"]))

    async def slow(request: Request) -> Response:
        hits["slow"] += 1
        await asyncio.sleep(float(request.query_params.get("delay", "5")))
        return JSONResponse({"instance": name})

    async def document(request: Request) -> Response:
        hits["count"] += 1
        body = {"instance": name, "secret": "drop-me", "MediaContainer": {"size": 1, "title1": "x"}}
        return Response(json.dumps(body), media_type="application/json")

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept(
            subprotocol="echo" if "echo" in websocket.scope.get("subprotocols", []) else None
        )
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                if message.get("text") is not None:
                    await websocket.send_text(f"{name}:{message['text']}")
                else:
                    await websocket.send_bytes(message["bytes"])
        except Exception:
            return

    app = Starlette(
        routes=[
            Route("/big", big),
            Route("/ranged", ranged),
            Route("/status/{code:int}", status, methods=["GET", "POST"]),
            Route("/slow", slow),
            Route("/document", document),
            WebSocketRoute("/ws", ws),
            Route(
                "/{path:path}",
                echo,
                methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
            ),
        ]
    )
    app.state.hits = hits
    return app
