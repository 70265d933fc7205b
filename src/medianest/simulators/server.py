"""The ASGI wrapper every simulator is served through.

:class:`SimulatorApp` sits in front of a service's Starlette app and adds what the real
service does not have but tests need:

* ``/__sim__/...`` control endpoints (never faulted, never authenticated) so a simulator
  run in another process can be steered:

  ========================  =====================================================
  ``GET /__sim__/health``   ``{"simulator": name, "ok": true}``
  ``GET /__sim__/faults``   current rules, seed and per-rule counters
  ``POST /__sim__/faults``  ``{"rules": [...], "mode": "replace"|"append"}``
  ``DELETE /__sim__/faults`` remove every rule
  ``GET /__sim__/requests`` the recorded requests (oldest first)
  ``DELETE /__sim__/requests`` forget them
  ========================  =====================================================

* a bounded log of the requests the service received (method, path, raw query string,
  headers, body), so adapter tests can check what a client really sent;
* the fault rules of :mod:`medianest.simulators.faults`, applied before the service runs.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import ValidationError

from medianest.simulators.connection import SCOPE_KEY, Connection, Message, Receive, Scope, Send
from medianest.simulators.faults import FaultControl, FaultRule, parse_rules

StateT = TypeVar("StateT")
ASGIApp = Callable[[Scope, Receive, Send], Any]
#: Renders the service's usual error for a status: (content type, body).
ErrorRenderer = Callable[[int], tuple[str, bytes]]

CONTROL_PREFIX = "/__sim__/"


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the simulator received it (query string kept raw, undecoded)."""

    method: str
    path: str
    query_string: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    time: float

    def header(self, name: str) -> str | None:
        lname = name.lower()
        return next((v for k, v in self.headers if k == lname), None)

    @property
    def target(self) -> str:
        return f"{self.path}?{self.query_string}" if self.query_string else self.path

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "query_string": self.query_string,
            "headers": [list(h) for h in self.headers],
            "body": self.body.decode("utf-8", "replace"),
            "time": self.time,
        }


def plain_error(status: int) -> tuple[str, bytes]:
    return "text/plain; charset=utf-8", f"simulated error {status}".encode()


class SimulatorApp(Generic[StateT]):
    """A simulator: the service ``app`` plus faults, request log and control endpoints.

    ``state`` is the service's own control object (PIN store, request store, ...), ``faults``
    the live :class:`FaultControl`, ``requests`` the recorded requests.
    """

    def __init__(
        self,
        name: str,
        app: ASGIApp,
        state: StateT,
        *,
        faults: FaultControl,
        error_renderer: ErrorRenderer = plain_error,
        record_limit: int = 500,
        hang_limit: float = 300.0,
    ) -> None:
        self.name = name
        self.app = app
        self.state = state
        self.faults = faults
        self.error_renderer = error_renderer
        self.requests: deque[RecordedRequest] = deque(maxlen=max(record_limit, 1))
        self.hang_limit = hang_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        conn = Connection(receive, send)
        conn.no_delay()
        scope[SCOPE_KEY] = conn
        try:
            body = await conn.read_body()
            path: str = scope["path"]
            if path.startswith(CONTROL_PREFIX):
                await self._control(scope, body, send)
                return
            self._record(scope, body)
            decision = self.faults.decide(scope["method"], path)
            if decision.empty:
                await self.app(scope, conn.receive, send)
                return
            if decision.delay and await conn.wait(decision.delay):
                return
            if decision.hang:
                await self._hang(conn)
            elif decision.down is not None:
                if decision.down.mode == "reset" and conn.abort():
                    await conn.settle()
                else:
                    await _answer(send, 503, "text/plain; charset=utf-8", b"Service Unavailable")
            elif decision.error is not None:
                rule = decision.error
                ctype, default = self.error_renderer(rule.status)
                text = default if rule.body is None else rule.body.encode()
                await _answer(send, rule.status, rule.content_type or ctype, text)
            elif decision.drip is not None:
                await self.app(scope, conn.receive, _dripping(send, conn, decision.drip))
            else:
                await self.app(scope, conn.receive, send)
        finally:
            conn.close()

    async def _hang(self, conn: Connection) -> None:
        if not await conn.wait(self.hang_limit):
            conn.abort()
            await conn.settle()

    def _record(self, scope: Scope, body: bytes) -> None:
        headers = tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"])
        self.requests.append(
            RecordedRequest(
                method=scope["method"],
                path=scope["path"],
                query_string=scope.get("query_string", b"").decode("latin-1"),
                headers=headers,
                body=body,
                time=time.time(),
            )
        )

    async def _control(self, scope: Scope, body: bytes, send: Send) -> None:
        method, what = scope["method"], scope["path"][len(CONTROL_PREFIX) :].strip("/")
        status, payload = 200, None
        if what == "health" and method == "GET":
            payload = {"simulator": self.name, "ok": True}
        elif what == "faults" and method == "GET":
            payload = self.faults.to_json()
        elif what == "faults" and method == "DELETE":
            self.faults.clear()
            payload = self.faults.to_json()
        elif what == "faults" and method == "POST":
            status, payload = self._post_faults(body)
        elif what == "requests" and method == "GET":
            payload = {"requests": [r.to_json() for r in self.requests]}
        elif what == "requests" and method == "DELETE":
            self.requests.clear()
            payload = {"requests": []}
        else:
            status, payload = 404, {"error": f"no control endpoint {method} /__sim__/{what}"}
        data = json.dumps(payload).encode()
        await _answer(send, status, "application/json", data)

    def _post_faults(self, body: bytes) -> tuple[int, dict[str, Any]]:
        try:
            data = json.loads(body or b"{}")
            rules: list[FaultRule] = parse_rules(data)
        except (ValueError, ValidationError) as exc:
            return 400, {"error": "invalid fault rules", "detail": str(exc)}
        mode = data.get("mode", "replace") if isinstance(data, dict) else "replace"
        if mode == "append":
            self.faults.add(*rules)
        elif mode == "replace":
            self.faults.set(rules)
        else:
            return 400, {"error": f"mode must be 'replace' or 'append', not {mode!r}"}
        return 200, self.faults.to_json()


async def _answer(send: Send, status: int, content_type: str, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type.encode("latin-1")),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _dripping(send: Send, conn: Connection, rule: FaultRule) -> Send:
    """Wrap ``send`` so the response body leaves in small, delayed chunks."""

    async def drip(message: Message) -> None:
        if message["type"] != "http.response.body":
            await send(message)
            return
        body: bytes = message.get("body", b"")
        more = bool(message.get("more_body", False))
        for offset in range(0, len(body), rule.chunk_size):
            if conn.disconnected:
                return
            last = offset + rule.chunk_size >= len(body)
            chunk = body[offset : offset + rule.chunk_size]
            await send({"type": "http.response.body", "body": chunk, "more_body": more or not last})
            if not last and await conn.wait(rule.chunk_delay):
                return
        if not body:
            await send(message)

    return drip
