"""The outermost ASGI middleware: request id, one log line per request, metrics, last-resort 500.

Pure ASGI rather than ``BaseHTTPMiddleware`` so streaming bodies pass untouched and the cost
per request stays a few microseconds. An exception that escaped every handler is logged here
with its traceback and the request id, and the client gets a 500 problem without internals.
"""

from __future__ import annotations

import logging
import random
import re
import time
from typing import Any

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from medianest.api.problems import INTERNAL, PROBLEM_JSON, problem_body
from medianest.api.security_headers import security_headers, with_security_headers
from medianest.observability.logging import get_logger, log_request
from medianest.observability.metrics import HTTP_DURATION, HTTP_REQUESTS

REQUEST_ID_HEADER = b"x-request-id"
_VALID_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")
_log = get_logger("medianest.http")
ACCESS_LOGGER = logging.getLogger("medianest.http")


def new_request_id() -> str:
    """A fresh request id: 128 random bits in hex (unique, not a secret, so not from
    :mod:`secrets`, whose system call per id costs more than the rest of the id)."""
    return f"{random.getrandbits(128):032x}"


def request_id_from(value: str | bytes | None) -> str:
    """The client's ``X-Request-Id`` when it is a sane token, else a fresh id."""
    if value:
        raw = value.encode("latin-1") if isinstance(value, str) else value
        if _VALID_ID.match(raw):
            return raw.decode("ascii")
    return new_request_id()


def _incoming_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == REQUEST_ID_HEADER:
            return request_id_from(value)
    return new_request_id()


def route_template(scope: Scope) -> str:
    """The matched route's path template (``/api/v1/items/{id}``), never the raw path."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "<unmatched>"


class RequestContextMiddleware:
    """Give each HTTP request an id, log it once when it ends, and count it."""

    def __init__(self, app: ASGIApp, *, quiet_paths: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.quiet_paths = quiet_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_id(scope)
        path = scope.get("path", "")
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500
        response_started = False
        header = (REQUEST_ID_HEADER, request_id.encode("ascii"))

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                message["headers"] = with_security_headers(
                    [*message.get("headers", ()), header], path
                )
            await send(message)

        structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            _log.exception("unhandled error", path=scope.get("path"), method=scope.get("method"))
            status = 500
            if not response_started:
                await send_internal_error(send, scope, request_id)
        finally:
            self._record(scope, status, time.perf_counter() - started, request_id)
            structlog.contextvars.unbind_contextvars("request_id")

    def _record(self, scope: Scope, status: int, elapsed: float, request_id: str) -> None:
        route = route_template(scope)
        method = scope.get("method", "")
        HTTP_REQUESTS.labels(method, route, str(status)).inc()
        HTTP_DURATION.labels(route).observe(elapsed)
        if scope.get("path") in self.quiet_paths and status < 400:
            return
        record_request(scope, method, route, status, elapsed, request_id)


def record_request(
    scope: Scope, method: str, route: str, status: int, elapsed: float, request_id: str
) -> None:
    """Write the access line of one request (method, route template, status, duration, id)."""
    fields: dict[str, Any] = {
        "method": method,
        "route": route,
        "status": status,
        "duration_ms": round(elapsed * 1000, 3),
        "request_id": request_id,
    }
    client = scope.get("client")
    if client:
        fields["client"] = client[0]
    log_request(ACCESS_LOGGER, fields)


async def send_internal_error(send: Send, scope: Scope, request_id: str) -> None:
    import json

    body = problem_body(
        INTERNAL,
        "an unexpected error occurred; quote the request id when reporting it",
        instance=scope.get("path"),
        request_id=request_id,
    )
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 500,
            "headers": [
                (b"content-type", PROBLEM_JSON.encode()),
                (b"content-length", str(len(payload)).encode()),
                (REQUEST_ID_HEADER, request_id.encode("ascii")),
                *security_headers(scope.get("path", "")),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
