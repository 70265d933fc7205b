"""Small ASGI helpers of the gateway: problem answers and a bounded request-body stream."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

from starlette.types import Receive, Send

from medianest.api.problems import PROBLEM_JSON, ProblemType, problem_body
from medianest.api.security_headers import API_HEADERS


class BodyTooLarge(Exception):
    """The client sent more than the gateway accepts."""


class ClientDisconnected(Exception):
    """The client went away while its body was being read."""


class RequestBody:
    """The client's body as an async iterator that counts and bounds what it yields.

    ``started`` tells whether any byte was handed to an upstream: until then a failed
    connect may be retried on another instance for any method, since nothing was sent.
    ``too_large`` and ``disconnected`` survive the HTTP client wrapping the exception raised
    from inside its body writer, so the handler answers 413 (or nothing) rather than 502.
    """

    def __init__(self, receive: Receive, limit: int, *, expect_body: bool) -> None:
        self.receive = receive
        self.limit = limit
        self.expect_body = expect_body
        self.started = False
        self.received = 0
        self.too_large = False
        self.disconnected = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self.started = True
        if not self.expect_body:
            return
        more = True
        while more:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                self.disconnected = True
                raise ClientDisconnected
            chunk: bytes = message.get("body", b"")
            more = bool(message.get("more_body", False))
            self.received += len(chunk)
            if self.received > self.limit:
                self.too_large = True
                raise BodyTooLarge
            if chunk:
                yield chunk


async def send_problem(
    send: Send,
    status: int,
    slug: str,
    title: str,
    detail: str,
    *,
    instance: str | None = None,
    request_id: str | None = None,
    headers: Sequence[tuple[str, str]] = (),
    **extra: Any,
) -> None:
    """Answer with an RFC 9457 problem (the gateway speaks ASGI, not FastAPI), with the
    hub's security headers: the problem is the gateway's own answer, not the upstream's."""
    body = problem_body(
        ProblemType(slug, title, status),
        detail,
        instance=instance,
        request_id=request_id,
        **extra,
    )
    payload = json.dumps(body).encode()
    raw = [
        (b"content-type", PROBLEM_JSON.encode()),
        (b"content-length", str(len(payload)).encode()),
        *((k.encode("latin-1"), v.encode("latin-1")) for k, v in headers),
        *API_HEADERS,
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


def encode_headers(headers: Sequence[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
