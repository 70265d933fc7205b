"""The gateway: an ASGI layer in front of the hub that proxies requests matching a route.

A request whose canonical path matches a route of the current :class:`RouteTable` is
authenticated (API key and scopes), rate limited, answered from the route's cache when
fresh, and otherwise forwarded through :class:`~medianest.gateway.upstream.Forwarder` with
the body streamed in both directions; anything else falls through to the hub's own app.
Failures answer RFC 9457 problems naming the route and upstream, never an address: 413 body
too large, 431 headers too large, 502 unreachable, 503 no healthy instance / circuit open /
overloaded, 504 timeout. With ``stale_if_error`` a failing upstream is answered from the
last good cached answer, marked stale.

Reloading builds and validates the new table and its runtimes first, then swaps both in one
step (no await in between), so a request sees either the old table or the new one.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from starlette.types import ASGIApp, Receive, Scope, Send

from medianest import errors
from medianest.api.middleware import record_request, request_id_from, send_internal_error
from medianest.config.gateway import GatewaySettings, Route
from medianest.gateway.asgi_io import send_problem
from medianest.gateway.cache import ResponseCache
from medianest.gateway.handler import Exchange, handle_http, handle_websocket
from medianest.gateway.metrics import GatewayMetrics
from medianest.gateway.table import (
    RouteMatch,
    RouteTable,
    TableDiff,
    canonical_path,
    load_routes_file,
)
from medianest.gateway.upstream import Forwarder, RouteRuntime
from medianest.observability import get_logger
from medianest.resilience.clock import SYSTEM_CLOCK, Clock

_log = get_logger("medianest.gateway")


class _RouteLabel:
    """Stands in for a Starlette route so request logs and metrics name the gateway route."""

    __slots__ = ("path",)

    def __init__(self, name: str) -> None:
        self.path = f"gateway:{name}"


class Gateway:
    """The gateway's state: the route table, per-route runtimes and the pooled session."""

    def __init__(
        self,
        settings: GatewaySettings,
        *,
        api_keys: Any = None,
        identity: Any = None,
        limiter: Any = None,
        clock: Clock = SYSTEM_CLOCK,
        registry: Any = None,
    ) -> None:
        self.settings = settings
        self.api_keys = api_keys
        self.identity = identity
        self.limiter = limiter
        self.clock = clock
        self.registry = registry
        self.table = RouteTable()
        self.runtimes: dict[str, RouteRuntime] = {}
        self.cache = ResponseCache(clock=clock)
        self.metrics = GatewayMetrics()
        self.reload_listeners: list[Callable[[], None]] = []
        self._session: aiohttp.ClientSession | None = None
        self._forwarder: Forwarder | None = None

    async def start(self) -> None:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=0, limit_per_host=256, keepalive_timeout=30)
            self._session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
                timeout=aiohttp.ClientTimeout(total=None),
            )
            self._forwarder = Forwarder(self._session)
        self.reload(self.configured_table(), trigger="start")

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def configured_table(self) -> RouteTable:
        """Inline routes plus the routes file, validated together (raises on any problem)."""
        routes: list[Route] = list(self.settings.routes)
        if self.settings.routes_file:
            routes += load_routes_file(self.settings.routes_file).routes
        GatewaySettings(routes=tuple(routes))  # names unique across both sources
        return RouteTable.of(routes)

    def reload(self, table: RouteTable | None = None, *, trigger: str = "api") -> TableDiff:
        """Validate-then-swap: build every runtime of ``table``, then switch atomically."""
        new = table if table is not None else self.configured_table()
        diff = self.table.diff(new)
        runtimes: dict[str, RouteRuntime] = {}
        for route in new.routes:
            old = self.runtimes.get(route.name)
            if old is None:
                runtimes[route.name] = RouteRuntime.build(
                    route, clock=self.clock, registry=self.registry
                )
            elif old.route == route:
                runtimes[route.name] = old
            else:
                runtimes[route.name] = old.updated(route)
        self.table, self.runtimes = new, runtimes
        for listener in self.reload_listeners:
            listener()
        if not diff.empty:
            _log.info(
                "gateway routes loaded",
                changes=diff.lines(),
                routes=len(new.routes),
                trigger=trigger,
            )
        return diff

    def reload_or_keep(self, reason: str) -> TableDiff | None:
        """Reload, or log why the new table was rejected and keep serving the old one."""
        try:
            return self.reload(trigger=reason)
        except errors.ConfigurationError as exc:
            _log.error(
                "gateway routes rejected; the previous table keeps serving",
                trigger=reason,
                problems=[f"{k}: {why}" for k, _, why in exc.problems] or [exc.message],
            )
            return None

    async def watch_routes_file(self, interval: float = 1.0) -> None:
        """Reload whenever the routes file changes (polls its mtime and size)."""
        path = self.settings.routes_file
        if not path:
            return
        last = _stamp(path)
        while True:
            await asyncio.sleep(interval)
            stamp = _stamp(path)
            if stamp != last:
                last = stamp
                self.reload_or_keep("routes file changed")

    def middleware(self, app: ASGIApp) -> ASGIApp:
        """The ASGI app that serves routes and hands everything else to ``app``."""
        return GatewayMiddleware(app, self)

    @property
    def forwarder(self) -> Forwarder:
        if self._forwarder is None:
            raise errors.BackendError("the gateway is not started", backend="gateway")
        return self._forwarder


class GatewayMiddleware:
    """The gateway as the outermost ASGI layer: routes are served here, the rest passes on.

    It sits *outside* the hub's own middleware and framework stack, so a proxied request
    costs no routing, dependency or middleware machinery it does not use; it therefore does
    what :class:`~medianest.api.middleware.RequestContextMiddleware` does for the hub's
    own endpoints: the request id (the client's ``X-Request-Id`` when sane, else a new one,
    echoed in the answer), one access line, and a last-resort 500 problem.
    """

    def __init__(self, app: ASGIApp, gateway: Gateway) -> None:
        self.app = app
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        gateway = self.gateway
        if kind not in ("http", "websocket") or not gateway.table.routes:
            await self.app(scope, receive, send)
            return
        raw = scope.get("raw_path") or scope["path"].encode()
        try:
            path = canonical_path(raw.decode("latin-1"))
        except errors.ValidationError as exc:
            await _refuse(scope, send, 400, "bad-path", "Bad request path", str(exc))
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        method = scope.get("method", "GET")
        found = gateway.table.match(method, headers.get("host"), path, headers)
        if found is None:
            await self.app(scope, receive, send)
            return
        name = found.route.name
        scope["route"] = _RouteLabel(name)
        request_id = request_id_from(headers.get("x-request-id"))
        scope.setdefault("state", {})["request_id"] = request_id
        runtime = gateway.runtimes[name]
        if kind == "websocket":
            await handle_websocket(gateway, runtime, found, scope, receive, send, headers)
            return
        started = time.perf_counter()
        exchange = Exchange(gateway, runtime, found, scope, request_id)
        try:
            status = await handle_http(exchange, receive, send, headers)
        except Exception:
            _log.exception("unhandled error", route=name, method=method, request_id=request_id)
            status = 500
            if not exchange.responded:
                await send_internal_error(send, scope, request_id)
        elapsed = time.perf_counter() - started
        gateway.metrics.observe(name, method, status, elapsed)
        record_request(scope, method, scope["route"].path, status, elapsed, request_id)


async def _refuse(
    scope: Scope, send: Send, status: int, slug: str, title: str, detail: str
) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008, "reason": detail[:120]})
        return
    request_id = scope.get("state", {}).get("request_id")
    await send_problem(
        send, status, slug, title, detail, instance=scope["path"], request_id=request_id
    )


def _stamp(path: str) -> tuple[float, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_mtime, info.st_size


__all__ = ["Gateway", "GatewayMiddleware", "RouteMatch"]
