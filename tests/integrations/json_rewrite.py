"""An ASGI wrapper that edits a simulator's JSON answers, for contract-violation tests.

``rewrite_json(app, "/api/v1/request/*", change)`` serves ``app`` unchanged except that the
JSON body of every answer whose path matches the glob goes through ``change`` (which edits
it in place) before it leaves; ``Content-Length`` is fixed accordingly.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Callable
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]


def rewrite_json(app: Any, path_glob: str, change: Callable[[Any], None]) -> Any:
    async def wrapper(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not fnmatch.fnmatchcase(scope["path"], path_glob):
            await app(scope, receive, send)
            return
        start: Message = {}
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            data = json.loads(b"".join(chunks))
            change(data)
            body = json.dumps(data).encode()
            headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await app(scope, receive, capture)

    return wrapper
