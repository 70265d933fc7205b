"""One proxied HTTP exchange, from the client's request to the last byte of the answer.

Order: header and body size limits, API key and scopes, rate limits, a fresh cache hit,
the route's bulkhead, forwarding with failover, then the answer, streamed unless a transform
or the cache needs the body (only bodies under their size limit are ever buffered).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import aiohttp
from starlette.types import Receive, Scope, Send

from medianest import errors
from medianest.gateway import transforms
from medianest.gateway.asgi_io import (
    BodyTooLarge,
    ClientDisconnected,
    RequestBody,
    encode_headers,
    send_problem,
)
from medianest.gateway.balancing import NoHealthyInstance
from medianest.gateway.forwarding import (
    decode_headers,
    downstream_response_headers,
    upstream_request_headers,
)
from medianest.gateway.ratelimit import RateIdentity, client_ip
from medianest.gateway.table import RouteMatch, encode_path
from medianest.gateway.upstream import Attempted, RouteRuntime
from medianest.gateway.websocket import proxy_websocket
from medianest.security.apikeys import (
    bearer_token,
    extract_api_key,
    require_scopes,
    www_authenticate,
)
from medianest.security.roles import Principal

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_CHUNK = 65536


class Exchange:
    """What the handler knows about the request in flight.

    ``extra_headers`` go on every answer (the request id, rate-limit headers);
    ``responded`` turns true once the response has started, after which a failure can
    only cut the body short.
    """

    def __init__(
        self, gateway: Any, rt: RouteRuntime, found: RouteMatch, scope: Scope, request_id: str
    ) -> None:
        self.gateway = gateway
        self.rt = rt
        self.route = rt.route
        self.found = found
        self.scope = scope
        self.request_id = request_id
        self.extra_headers: list[tuple[str, str]] = [("x-request-id", request_id)]
        self.identity: Principal | None = None
        self.responded = False
        self.started = time.perf_counter()

    async def start_response(self, send: Send, status: int, headers: list[tuple[str, str]]) -> None:
        self.responded = True
        await send(
            {"type": "http.response.start", "status": status, "headers": encode_headers(headers)}
        )

    async def problem(
        self, send: Send, status: int, slug: str, title: str, detail: str, **kw: Any
    ) -> int:
        headers = [*self.extra_headers, *kw.pop("headers", [])]
        self.responded = True
        await send_problem(
            send,
            status,
            slug,
            title,
            detail,
            instance=self.scope["path"],
            request_id=self.request_id,
            headers=headers,
            route=self.route.name,
            upstream=self.rt.upstream_name,
            **kw,
        )
        return status


async def authenticate(
    gateway: Any, route_scopes: tuple[str, ...], headers: Mapping[str, str]
) -> Principal:
    """The caller: an API key (``mn_...``) or, when the hub has sign-in, a hub access token
    (``Authorization: Bearer <JWT>``); raise Authentication/AuthorizationError."""
    presented = extract_api_key(headers)
    identity = getattr(gateway, "identity", None)
    if presented is not None:
        if gateway.api_keys is None:
            raise errors.AuthenticationError("API keys are not available on this hub")
        info = await gateway.api_keys.verify(presented)
        principal = Principal.for_api_key(info.key_id, info.name, info.scopes, info.owner)
    else:
        token = bearer_token(headers)
        if token is None or identity is None:
            raise errors.AuthenticationError("an API key or access token is required")
        principal, _ = await identity.from_access_token(token)
    require_scopes(principal.scopes, route_scopes)
    return principal


async def handle_http(
    ex: Exchange, receive: Receive, send: Send, headers: Mapping[str, str]
) -> int:
    """Serve one proxied request; return the status the client got (499: it went away)."""
    gateway, scope, route = ex.gateway, ex.scope, ex.route
    settings = gateway.settings
    raw_size = sum(len(k) + len(v) + 4 for k, v in scope["headers"])
    if raw_size > settings.max_header_bytes:
        return await ex.problem(
            send,
            431,
            "headers-too-large",
            "Request headers too large",
            f"headers of {raw_size} bytes exceed {settings.max_header_bytes}",
        )
    length = headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > settings.max_body_bytes):
        if not length.isdigit():
            return await ex.problem(
                send, 400, "bad-request", "Bad request", "invalid Content-Length"
            )
        return await ex.problem(
            send,
            413,
            "body-too-large",
            "Request body too large",
            f"bodies are limited to {settings.max_body_bytes} bytes",
        )
    if route.auth.required:
        try:
            ex.identity = await authenticate(gateway, route.auth.scopes, headers)
        except errors.AuthorizationError as exc:
            needed = " ".join(route.auth.scopes)
            return await ex.problem(
                send,
                403,
                "forbidden",
                "Forbidden",
                str(exc),
                headers=[("www-authenticate", www_authenticate("insufficient_scope", needed))],
            )
        except errors.AuthenticationError as exc:
            error = "invalid_token" if extract_api_key(headers) or bearer_token(headers) else None
            return await ex.problem(
                send,
                401,
                "unauthenticated",
                "Authentication required",
                str(exc),
                headers=[("www-authenticate", www_authenticate(error))],
            )
    peer = scope.get("client")
    ip = client_ip(peer[0] if peer else None, headers, settings.trusted_proxies)
    if route.rate_limits and gateway.limiter is not None:
        key_id = ex.identity.key_id if ex.identity is not None else None
        owner = ex.identity.owner if ex.identity is not None else None
        decision = await gateway.limiter.check(
            route.name, route.rate_limits, RateIdentity(key_id, owner, ip)
        )
        ex.extra_headers.extend(decision.headers())
        if not decision.allowed:
            return await ex.problem(
                send,
                429,
                "rate-limited",
                "Too many requests",
                f"rate limit {decision.policy} exceeded on route {route.name}",
            )
    return await _forward(ex, receive, send, headers, ip)


async def _forward(
    ex: Exchange, receive: Receive, send: Send, headers: Mapping[str, str], ip: str
) -> int:
    gateway, rt, route, scope = ex.gateway, ex.rt, ex.route, ex.scope
    method = scope["method"]
    query = scope.get("query_string", b"").decode("latin-1")
    cache_key = None
    if route.cache is not None and method in ("GET", "HEAD"):
        vary = "|".join(headers.get(h, "") for h in ("authorization", "cookie", "accept"))
        cache_key = gateway.cache.key(
            route.name, method, headers.get("host", ""), scope["path"], query, vary
        )
        cached = gateway.cache.get(cache_key)
        if cached is not None and cached.fresh(gateway.clock.monotonic()):
            return await _send_cached(ex, send, cached, stale=False)
    bulkhead = rt.policy.bulkhead
    if bulkhead is not None and not bulkhead.try_acquire():
        try:
            await bulkhead.acquire()
        except errors.BulkheadFull as exc:
            return await ex.problem(
                send,
                503,
                "overloaded",
                "Too many concurrent requests",
                str(exc),
                headers=[("retry-after", "1")],
            )
    try:
        body = RequestBody(
            receive, gateway.settings.max_body_bytes, expect_body=method in _BODY_METHODS
        )
        request_headers = _upstream_headers(ex, headers, ip)
        path_qs = encode_path(ex.found.upstream_path) + (f"?{query}" if query else "")
        hash_key = _hash_key(route, headers, ip, ex.identity)
        try:
            attempted = await gateway.forwarder.send(
                rt, method, path_qs, request_headers, body, hash_key
            )
        except (errors.UpstreamError, errors.ResilienceError) as exc:
            if body.too_large:
                return await _too_large(ex, send)
            if body.disconnected:
                return 499
            stale = gateway.cache.get(cache_key) if cache_key else None
            if stale is not None and stale.usable_stale(gateway.clock.monotonic()):
                return await _send_cached(ex, send, stale, stale=True)
            return await _failure(ex, send, exc)
        except BodyTooLarge:
            return await _too_large(ex, send)
        except ClientDisconnected:
            return 499
        return await _respond(ex, send, attempted, cache_key)
    finally:
        if bulkhead is not None:
            bulkhead.release()


async def _too_large(ex: Exchange, send: Send) -> int:
    limit = ex.gateway.settings.max_body_bytes
    return await ex.problem(
        send,
        413,
        "body-too-large",
        "Request body too large",
        f"bodies are limited to {limit} bytes",
    )


def _upstream_headers(ex: Exchange, headers: Mapping[str, str], ip: str) -> list[tuple[str, str]]:
    scope = ex.scope
    raw = decode_headers(scope["headers"])
    peer = scope.get("client")
    trusted_chain = headers.get("x-forwarded-for") if ip != (peer[0] if peer else None) else None
    length = headers.get("content-length")
    out = upstream_request_headers(
        raw,
        client_ip=ip,
        trusted_forwarded_for=trusted_chain,
        scheme=str(
            (trusted_chain and headers.get("x-forwarded-proto")) or scope.get("scheme", "http")
        ),
        host=headers.get("host"),
        request_id=ex.request_id,
        content_length=int(length) if length is not None else None,
    )
    return transforms.edit_headers(out, ex.route.transforms.request_headers)


def _hash_key(route: Any, headers: Mapping[str, str], ip: str, identity: Any) -> str | None:
    hash_on = route.target.hash_on
    if hash_on is None:
        return None
    if hash_on.header:
        return headers.get(hash_on.header.lower())
    if hash_on.cookie:
        for part in headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == hash_on.cookie:
                return value
        return None
    if hash_on.client == "key":
        return getattr(identity, "key_id", None) or ip
    return ip


async def _failure(ex: Exchange, send: Send, exc: Exception) -> int:
    name = ex.rt.upstream_name
    if isinstance(exc, NoHealthyInstance):
        return await ex.problem(
            send,
            503,
            "no-healthy-instance",
            "No healthy upstream instance",
            f"route {ex.route.name}: every instance of {name} is ejected",
            headers=[("retry-after", "1")],
        )
    if isinstance(exc, errors.CircuitOpenError):
        retry = str(max(1, int(exc.retry_after or 1)))
        return await ex.problem(
            send,
            503,
            "circuit-open",
            "Upstream circuit open",
            f"route {ex.route.name}: {name} is failing; not calling it",
            headers=[("retry-after", retry)],
        )
    if isinstance(exc, errors.RetryBudgetExhausted | errors.BulkheadFull):
        return await ex.problem(
            send, 503, "overloaded", "Upstream overloaded", str(exc), headers=[("retry-after", "1")]
        )
    if isinstance(exc, errors.UpstreamTimeout | errors.TimeoutExceeded):
        return await ex.problem(
            send,
            504,
            "upstream-timeout",
            "Upstream timed out",
            f"route {ex.route.name}: {name} did not answer in time",
        )
    return await ex.problem(
        send,
        502,
        "upstream-unavailable",
        "Upstream unreachable",
        f"route {ex.route.name}: {name} could not be reached",
    )


def _wants_body(
    ex: Exchange, response: aiohttp.ClientResponse, cache_key: str | None
) -> int | None:
    """The buffering limit when a transform or the cache needs the whole body, else None."""
    t = ex.route.transforms
    limits = []
    ctype = response.headers.get("content-type", "")
    if t.json_body is not None and "json" in ctype:
        limits.append(t.json_body.max_bytes)
    if t.plex_xml_to_json and "xml" in ctype:
        limits.append(t.json_body.max_bytes if t.json_body else 16 * 1_048_576)
    if cache_key is not None and ex.route.cache is not None and response.status < 500:
        limits.append(ex.route.cache.max_bytes)
    return max(limits) if limits else None


async def _respond(ex: Exchange, send: Send, attempted: Attempted, cache_key: str | None) -> int:
    response = attempted.response
    gateway, route = ex.gateway, ex.route
    try:
        headers = downstream_response_headers(
            (k.decode("latin-1"), v.decode("latin-1")) for k, v in response.raw_headers
        )
        limit = _wants_body(ex, response, cache_key)
        prefix = body = b""
        complete = False
        if limit is not None:
            prefix, complete = await _read_up_to(response, limit)
        if complete:
            body = prefix
            if route.transforms.plex_xml_to_json and "xml" in response.headers.get(
                "content-type", ""
            ):
                try:
                    body = transforms.plex_xml_to_json(body)
                except transforms.PlexXmlError as exc:
                    return await ex.problem(
                        send, 502, "upstream-contract", "Upstream broke its contract", str(exc)
                    )
                headers = _replace(headers, "content-type", "application/json")
            if route.transforms.json_body is not None and "json" in dict(headers).get(
                "content-type", ""
            ):
                body = transforms.edit_json(body, route.transforms.json_body) or body
            headers = _replace(headers, "content-length", str(len(body)))
            if cache_key is not None and route.cache is not None:
                gateway.cache.put(cache_key, response.status, headers, body, route.cache)
        headers = transforms.edit_headers(headers, route.transforms.response_headers)
        headers.extend(ex.extra_headers)
        gateway.metrics.observe_upstream(route.name, attempted.upstream_seconds)
        if gateway.settings.server_timing:
            upstream_ms = attempted.upstream_seconds * 1000
            gateway_ms = max(0.0, (time.perf_counter() - ex.started) * 1000 - upstream_ms)
            headers.append(
                ("server-timing", f"upstream;dur={upstream_ms:.2f}, gateway;dur={gateway_ms:.2f}")
            )
        if limit is None and _small(response):
            body, complete = await response.read(), True
        await ex.start_response(send, response.status, headers)
        if complete:
            await send({"type": "http.response.body", "body": body})
            return response.status
        if prefix:
            await send({"type": "http.response.body", "body": prefix, "more_body": True})
        async for chunk in response.content.iter_chunked(_CHUNK):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return response.status
    finally:
        response.release()


def _small(response: aiohttp.ClientResponse) -> bool:
    """Whether the answer is small enough, by its ``Content-Length``, to relay in one piece
    (one body message, no chunk loop)."""
    length = response.content_length
    return length is not None and length <= _CHUNK


async def _read_up_to(response: aiohttp.ClientResponse, limit: int) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = await response.content.read(_CHUNK)
        if not chunk:
            return b"".join(chunks), True
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks), False


def _replace(headers: list[tuple[str, str]], name: str, value: str) -> list[tuple[str, str]]:
    return [(k, v) for k, v in headers if k != name] + [(name, value)]


async def _send_cached(ex: Exchange, send: Send, cached: Any, *, stale: bool) -> int:
    now = ex.gateway.clock.monotonic()
    headers = list(ex.gateway.cache.response_headers(cached, now, stale))
    headers.extend(ex.extra_headers)
    await ex.start_response(send, cached.status, headers)
    body = b"" if ex.scope["method"] == "HEAD" else cached.body
    await send({"type": "http.response.body", "body": body})
    return int(cached.status)


async def handle_websocket(
    gateway: Any,
    rt: RouteRuntime,
    found: RouteMatch,
    scope: Scope,
    receive: Receive,
    send: Send,
    headers: Mapping[str, str],
) -> None:
    """Authenticate like HTTP, then relay frames both ways (see :mod:`.websocket`)."""
    if rt.route.auth.required:
        try:
            await authenticate(gateway, rt.route.auth.scopes, headers)
        except errors.AuthError:
            await send(
                {"type": "websocket.close", "code": 1008, "reason": "authentication required"}
            )
            return
    peer = scope.get("client")
    ip = client_ip(peer[0] if peer else None, headers, gateway.settings.trusted_proxies)
    await proxy_websocket(gateway, rt, found, scope, receive, send, headers, ip)
