"""The one HTTP client layer for third-party services: aiohttp, a policy, metrics, a span.

Every adapter talks to its service through an :class:`UpstreamHttp`: one pooled keep-alive
``aiohttp.ClientSession`` per upstream, every request run under the upstream's resilience
:class:`~medianest.resilience.Policy`, and HTTP outcomes translated into the
:mod:`medianest.errors` tree in one place (:func:`error_for_status`).

Each request is recorded as

* ``integration_requests_total{service,endpoint,status}`` and
  ``integration_response_time_seconds{service,endpoint}``, where ``endpoint`` is the route
  template (``/library/metadata/{ratingKey}``), never a raw path with ids or tokens, and
  ``status`` is the HTTP status or ``timeout`` / ``connection_error``;
* an OpenTelemetry client span named ``"<METHOD> <endpoint>"`` whose context is propagated
  in ``traceparent`` (a no-op until an SDK is installed).

Query strings are percent-encoded per RFC 3986 with ``%20`` for spaces and nothing left
reserved: Overseerr's validator rejects ``+`` and raw ``:``/``'``/``!`` (NOTES.md 3.2), and Plex
accepts the same form for its ``updatedAt>>=`` filters (``updatedAt%3E%3E=...``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from opentelemetry import propagate, trace
from prometheus_client import Counter, Histogram
from yarl import URL

from medianest import errors
from medianest.resilience import BreakerState, Policy

REQUESTS = Counter(
    "integration_requests_total",
    "Requests to third-party services by service, endpoint template and status.",
    ("service", "endpoint", "status"),
)
RESPONSE_TIME = Histogram(
    "integration_response_time_seconds",
    "Time to a third-party service's full answer, by service and endpoint template.",
    ("service", "endpoint"),
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
_tracer = trace.get_tracer("medianest.integrations")
_TRIPPED = (BreakerState.OPEN, BreakerState.HALF_OPEN)

QueryValue = str | int | float | bool
Query = Mapping[str, QueryValue | None]


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """A complete answer: status, headers and the whole body."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    service: str
    endpoint: str

    def json(self) -> Any:
        """Decode the body as JSON or raise :class:`UpstreamContractError` saying so."""
        try:
            return json.loads(self.body)
        except ValueError as exc:
            ctype = self.headers.get("Content-Type", "no content type")
            raise errors.UpstreamContractError(
                f"{self.service} answered {self.endpoint} with a body that is not JSON ({ctype})",
                service=self.service,
                endpoint=self.endpoint,
                status=self.status,
            ) from exc

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


def encode_query(query: Query) -> str:
    """``k=v&...`` with RFC 3986 strict percent-encoding (``%20``, never ``+``); drops ``None``."""
    parts = []
    for key, value in query.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = int(value)
        parts.append(f"{quote(key, safe='')}={quote(str(value), safe='')}")
    return "&".join(parts)


def retry_after_seconds(value: str | None) -> float | None:
    """Parse a ``Retry-After`` header (seconds or an HTTP date) into seconds from now."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_for_status(
    service: str,
    method: str,
    endpoint: str,
    status: int,
    headers: Mapping[str, str],
    detail: str,
    overrides: Mapping[int, type[errors.UpstreamError]] | None = None,
) -> errors.UpstreamError:
    """Translate an unwanted HTTP status into the error tree (the one place that does).

    ``overrides`` maps a status to the class a particular endpoint means by it.
    """
    what = f"{service} answered {method} {endpoint} with HTTP {status}"
    if detail:
        what = f"{what}: {detail}"
    cls = (overrides or {}).get(status) or _default_error_class(status)
    if cls is errors.UpstreamRateLimited:
        return errors.UpstreamRateLimited(
            what,
            retry_after=retry_after_seconds(headers.get("Retry-After")),
            service=service,
            endpoint=endpoint,
            status=status,
            method=method,
        )
    return cls(what, service=service, endpoint=endpoint, status=status, method=method)


def _default_error_class(status: int) -> type[errors.UpstreamError]:
    if status in (401, 403):
        return errors.UpstreamAuthError
    if status == 404:
        return errors.UpstreamNotFound
    if status == 409:
        return errors.UpstreamConflict
    if status == 429:
        return errors.UpstreamRateLimited
    if status in (502, 503, 504):
        return errors.UpstreamUnavailable
    if 400 <= status < 500:
        return errors.UpstreamBadRequest
    return errors.UpstreamError


def _detail(body: bytes, headers: Mapping[str, str]) -> str:
    """A short, safe reason from an error body: JSON ``message``/``error``, else nothing."""
    if "json" not in headers.get("Content-Type", ""):
        return ""
    try:
        data = json.loads(body)
    except ValueError:
        return ""
    if isinstance(data, dict):
        for key in ("message", "error", "msg"):
            if isinstance(data.get(key), str):
                return str(data[key])[:200]
        errs = data.get("errors")
        if isinstance(errs, list) and errs and isinstance(errs[0], dict):
            return str(errs[0].get("message", ""))[:200]
    return ""


class UpstreamHttp:
    """HTTP access to one upstream under its policy; ``start``/``close`` own the session."""

    def __init__(
        self,
        service: str,
        base_url: str,
        *,
        policy: Policy,
        headers: Mapping[str, str] | None = None,
        auth: aiohttp.BasicAuth | None = None,
        connections: int = 100,
    ) -> None:
        self.service = service
        self.configured_url = base_url.rstrip("/")
        self._endpoints: tuple[str, ...] = (self.configured_url,)
        self.policy = policy
        self.default_headers = dict(headers or {})
        self.auth = auth
        self.connections = connections
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"UpstreamHttp({self.service!r}, {self.base_url!r})"

    @property
    def base_url(self) -> str:
        """Where requests go now: the first of :attr:`endpoints`."""
        return self._endpoints[0]

    @property
    def endpoints(self) -> tuple[str, ...]:
        return self._endpoints

    def use_endpoints(self, urls: Iterable[str]) -> None:
        """Send requests to these base URLs from now on (from the service registry).

        Requests stick to the first until it fails to answer (unreachable, timed out, or a
        502/503/504), then move to the next, so a retry under the policy lands elsewhere. The
        endpoint in use stays first when it is still listed; an empty list falls back to the
        configured URL. A breaker the failures of the old endpoints opened closes when a new
        endpoint arrives (one an operator forced open stays open).
        """
        found = tuple(dict.fromkeys(url.rstrip("/") for url in urls)) or (self.configured_url,)
        if self.base_url in found:
            at = found.index(self.base_url)
            found = found[at:] + found[:at]
        arrived = set(found) - set(self._endpoints)
        self._endpoints = found
        breaker = self.policy.breaker
        if arrived and breaker is not None and breaker.state in _TRIPPED:
            breaker.close()

    def _failed(self, base_url: str) -> None:
        endpoints = self._endpoints
        if len(endpoints) > 1 and endpoints[0] == base_url:
            self._endpoints = (*endpoints[1:], endpoints[0])

    async def start(self) -> None:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self.connections, keepalive_timeout=30, ttl_dns_cache=60
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                auth=self.auth,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
                raise_for_status=False,
            )

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise errors.UpstreamError(
                f"the {self.service} client is not started", service=self.service
            )
        return self._session

    async def request(
        self,
        method: str,
        endpoint: str,
        *,
        path: Mapping[str, str | int] | None = None,
        query: Query | None = None,
        headers: Mapping[str, str] | None = None,
        json_body: Any = None,
        ok: tuple[int, ...] = (200,),
        idempotent: bool | None = None,
        status_errors: Mapping[int, type[errors.UpstreamError]] | None = None,
    ) -> HttpResponse:
        """Send ``method endpoint`` (a template filled from ``path``) under the policy.

        Statuses in ``ok`` return the response; others raise the mapped error, with
        ``status_errors`` overriding the default mapping (e.g. Overseerr's 500 for an unknown
        TMDB id is a not-found). ``idempotent`` defaults to the method's HTTP semantics.
        """
        target = endpoint.format_map({k: quote(str(v), safe="") for k, v in (path or {}).items()})
        if query:
            encoded = encode_query(query)
            if encoded:
                target = f"{target}?{encoded}"
        if idempotent is None:
            idempotent = method.upper() in ("GET", "HEAD", "OPTIONS", "PUT", "DELETE")

        timed_out: list[str] = []

        async def attempt() -> HttpResponse:
            if timed_out:  # only a timeout is retried; a caller's cancellation is not
                self._failed(timed_out.pop())
            base = self.base_url
            try:
                return await self._send(
                    method, endpoint, base + target, headers, json_body, ok, status_errors
                )
            except (errors.UpstreamUnavailable, errors.UpstreamTimeout):
                self._failed(base)
                raise
            except asyncio.CancelledError:
                timed_out.append(base)  # moved on once the policy says it was its timeout
                raise

        try:
            return await self.policy.call(attempt, idempotent=idempotent)
        except Exception:  # after a timed-out attempt: its timeout, or what ended the retries
            if timed_out:  # (a spent retry budget, the breaker it opened)
                self._failed(timed_out.pop())
            raise

    async def _send(
        self,
        method: str,
        endpoint: str,
        url: str,
        headers: Mapping[str, str] | None,
        json_body: Any,
        ok: tuple[int, ...],
        status_errors: Mapping[int, type[errors.UpstreamError]] | None,
    ) -> HttpResponse:
        sent: CIMultiDict[str] = CIMultiDict(self.default_headers)
        if headers:
            sent.update(headers)
        started = time.perf_counter()
        label = "connection_error"
        with _tracer.start_as_current_span(
            f"{method} {endpoint}",
            kind=trace.SpanKind.CLIENT,
            attributes={
                "http.request.method": method,
                "url.template": endpoint,
                "peer.service": self.service,
            },
        ) as span:
            propagate.inject(sent)
            try:
                async with self.session.request(
                    method, URL(url, encoded=True), headers=sent, json=json_body
                ) as resp:
                    body = await resp.read()
                    label = str(resp.status)
                    span.set_attribute("http.response.status_code", resp.status)
                    result = HttpResponse(resp.status, resp.headers, body, self.service, endpoint)
            except TimeoutError as exc:
                label = "timeout"
                raise errors.UpstreamTimeout(
                    f"{self.service} did not answer {method} {endpoint} in time",
                    service=self.service,
                    endpoint=endpoint,
                    method=method,
                ) from exc
            except aiohttp.ClientError as exc:
                raise errors.UpstreamUnavailable(
                    f"{self.service} unreachable for {method} {endpoint}: {type(exc).__name__}",
                    service=self.service,
                    endpoint=endpoint,
                    method=method,
                ) from exc
            finally:
                REQUESTS.labels(self.service, endpoint, label).inc()
                RESPONSE_TIME.labels(self.service, endpoint).observe(time.perf_counter() - started)
        if result.status in ok:
            return result
        raise error_for_status(
            self.service,
            method,
            endpoint,
            result.status,
            result.headers,
            _detail(result.body, result.headers),
            status_errors,
        )


def http_for(
    name: str,
    url: str,
    policy_config: Any,
    *,
    headers: Mapping[str, str] | None = None,
    auth: aiohttp.BasicAuth | None = None,
    registry: Any = None,
    clock: Any = None,
) -> UpstreamHttp:
    """An :class:`UpstreamHttp` for upstream ``name`` with the policy its configuration asks."""
    policy = Policy.from_config(name, policy_config, registry=registry, clock=clock)
    return UpstreamHttp(name, url, policy=policy, headers=headers, auth=auth)
