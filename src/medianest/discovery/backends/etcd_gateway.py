"""A small client of etcd v3's gRPC JSON gateway, over HTTP with aiohttp.

etcd serves every v3 RPC as ``POST /v3/<service>/<method>`` with the protobuf message as
JSON: ``bytes`` fields (keys, values) are base64, 64-bit integers (revisions, lease ids) are
decimal strings, and fields at their zero value are left out. Streaming RPCs (``/v3/watch``)
answer with one JSON object per line, each wrapped as ``{"result": ...}`` or ``{"error": ...}``.

This module is the one place where transport failures and etcd's error answers become
:class:`~medianest.errors.BackendUnavailable` / :class:`~medianest.errors.BackendError`
(chained with ``from``). It also fails over between the endpoints of the URL, keeps the
authentication token (``/v3/auth/authenticate``) and remembers the highest store revision it
saw in any answer, which the registry uses as the start point of new watches.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import aiohttp

from medianest.errors import BackendError, BackendUnavailable

JSON = dict[str, Any]

# gRPC status codes that etcd uses for "cannot serve now" and for "bad or expired token".
_UNAVAILABLE_CODES = {4, 14}
_UNAUTHENTICATED = 16


def b64(data: str | bytes) -> str:
    """``data`` (text is UTF-8) as the base64 the gateway expects for ``bytes`` fields."""
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def unb64(data: str) -> str:
    """The text of a base64 ``bytes`` field of an answer (``""`` when it was left out)."""
    return base64.b64decode(data).decode() if data else ""


def prefix_end(prefix: str) -> bytes:
    """The ``range_end`` that selects every key starting with ``prefix`` (etcd's rule)."""
    raw = bytearray(prefix.encode())
    while raw and raw[-1] == 0xFF:
        raw.pop()
    if not raw:
        return b"\0"
    raw[-1] += 1
    return bytes(raw)


def endpoints_of(hosts: str) -> list[str]:
    """Base URLs of ``host[:port],...`` (a URL's netloc); the port defaults to 2379."""
    out = []
    for host in filter(None, hosts.split(",")):
        bracketed = host.startswith("[")
        has_port = host.rsplit("]", 1)[-1].count(":") == 1 if bracketed else ":" in host
        out.append(f"http://{host if has_port else host + ':2379'}")
    return out


def put_op(key: str, value: str, lease: int = 0) -> JSON:
    """A transaction operation writing ``value`` at ``key`` (bound to ``lease`` unless 0)."""
    return {"request_put": {"key": b64(key), "value": b64(value), "lease": str(lease)}}


def delete_op(key: str) -> JSON:
    """A transaction operation deleting ``key``."""
    return {"request_delete_range": {"key": b64(key)}}


def unchanged(key: str, revision: int) -> JSON:
    """A transaction condition: ``key`` was last written at ``revision`` (0: it is absent)."""
    return {"target": "MOD", "key": b64(key), "result": "EQUAL", "mod_revision": str(revision)}


class EtcdGateway:
    """Unary calls and line-delimited streams against one of ``endpoints``.

    ``endpoints`` are base URLs (``http://host:2379``); a connection failure moves on to the
    next one, and only when every endpoint failed does a call raise ``BackendUnavailable``.
    ``name`` is the masked URL used in error messages.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        name: str,
        timeout: float = 5.0,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.endpoints = list(endpoints)
        self.name = name
        self.timeout = timeout
        self.username = username
        self._password = password
        self._current = 0
        self._token: str | None = None
        self._session: aiohttp.ClientSession | None = None
        self._streams: set[aiohttp.ClientResponse] = set()
        self.revision = 0
        """The highest store revision seen in any answer so far (0 before the first one)."""

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))

    async def close(self) -> None:
        """Close the session and cut the open streams (closing the session does not)."""
        for response in list(self._streams):
            response.close()
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _require_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise BackendUnavailable("etcd registry is not started", backend=self.name)
        return self._session

    async def call(self, path: str, body: JSON) -> JSON:
        """One unary RPC: ``POST path`` with ``body``; the decoded answer."""
        try:
            return await self._call(path, body)
        except BackendError as exc:
            if exc.extra.get("grpc_code") != _UNAUTHENTICATED or self.username is None:
                raise
        self.forget_token()  # it expired (or etcd restarted): authenticate again
        return await self._call(path, body)

    async def _call(self, path: str, body: JSON) -> JSON:
        session = self._require_session()
        if self.username is not None and self._token is None and not path.startswith("/v3/auth"):
            await self._authenticate()
        failure: Exception | None = None
        for _ in self.endpoints:
            endpoint = self.endpoints[self._current]
            try:
                async with session.post(endpoint + path, json=body, headers=self._headers()) as r:
                    raw = await r.read()
                    status = r.status
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                failure = exc
                self._current = (self._current + 1) % len(self.endpoints)
                continue
            return self._answer(path, status, raw)
        raise self._unavailable(failure) from failure

    async def _authenticate(self) -> None:
        body = {"name": self.username, "password": self._password}
        answer = await self._call("/v3/auth/authenticate", body)
        self._token = str(answer.get("token", ""))

    def forget_token(self) -> None:
        """Drop the token (etcd said it expired): the next call authenticates again."""
        self._token = None

    def _headers(self) -> dict[str, str]:
        return {"Authorization": self._token} if self._token else {}

    def _answer(self, path: str, status: int, raw: bytes) -> JSON:
        try:
            answer = json.loads(raw) if raw else {}
        except ValueError as exc:
            raise BackendError(
                f"etcd answered {path} with HTTP {status} and no JSON", backend=self.name
            ) from exc
        if status >= 400 or "error" in answer:
            error = answer.get("error")  # a string beside "code" and "message" in unary answers
            raise self._error(path, error if isinstance(error, dict) else answer)
        self._note(answer)
        # answers of streaming RPCs called once (lease keep-alive) come wrapped in "result"
        result = answer.get("result", answer)
        self._note(result)
        return dict(result)

    def _note(self, answer: JSON) -> None:
        header = answer.get("header") or {}
        revision = int(header.get("revision", 0))
        self.revision = max(self.revision, revision)

    def _error(self, path: str, error: Any) -> BackendError:
        """The error of an etcd error answer ``{"error", "message", "code"}``."""
        if not isinstance(error, dict):
            error = {"message": str(error)}
        code = int(error.get("code", 2))
        message = str(error.get("message") or error.get("error") or "unknown error")
        cls = BackendUnavailable if code in _UNAVAILABLE_CODES else BackendError
        return cls(f"etcd refused {path}: {message}", backend=self.name, grpc_code=code)

    def _unavailable(self, exc: Exception | None) -> BackendUnavailable:
        detail = f"{type(exc).__name__}: {exc}" if exc is not None else "no endpoint"
        return BackendUnavailable(f"etcd is unreachable ({detail})", backend=self.name)

    async def stream(self, path: str, body: JSON) -> AsyncGenerator[JSON, None]:
        """A streaming RPC: the ``result`` of every line until the stream ends.

        A stream that cannot be opened, breaks or ends (etcd never ends a watch on its own)
        raises :class:`BackendUnavailable`; an ``error`` line raises its translation.
        """
        session = self._require_session()
        if self.username is not None and self._token is None:
            await self._authenticate()
        endpoint = self.endpoints[self._current]
        no_total = aiohttp.ClientTimeout(total=None, sock_connect=self.timeout)
        response: aiohttp.ClientResponse | None = None
        try:
            async with session.post(
                endpoint + path, json=body, headers=self._headers(), timeout=no_total
            ) as response:
                self._streams.add(response)
                if response.status >= 400:
                    raw = await response.read()
                    try:
                        self._answer(path, response.status, raw)
                    except BackendError as exc:
                        if exc.extra.get("grpc_code") == _UNAUTHENTICATED:
                            self.forget_token()  # the next attempt authenticates again
                        raise
                buffer = b""
                async for chunk in response.content.iter_any():
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        if line.strip():
                            yield self._line(path, line)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self._current = (self._current + 1) % len(self.endpoints)
            raise self._unavailable(exc) from exc
        finally:
            if response is not None:
                self._streams.discard(response)
        self._current = (self._current + 1) % len(self.endpoints)
        raise BackendUnavailable(f"etcd closed the {path} stream", backend=self.name)

    def _line(self, path: str, line: bytes) -> JSON:
        try:
            message = json.loads(line)
        except ValueError as exc:
            raise BackendError(f"etcd sent a bad {path} line", backend=self.name) from exc
        if "error" in message:
            error = message["error"]
            if isinstance(error, dict) and error.get("grpc_code") is not None:
                error = {"code": error["grpc_code"], "message": error.get("message")}
            if isinstance(error, dict) and int(error.get("code", 0)) == _UNAUTHENTICATED:
                self.forget_token()
            raise self._error(path, error)
        result = message.get("result", message)
        self._note(result)
        return dict(result)
