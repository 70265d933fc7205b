"""Sending one proxied request upstream: instance choice, failover, timeouts, the route policy.

Per attempt: pick an instance (the route's balancer, skipping ejected and already-failed
ones), pass the route's breaker, send, and wait for the response *headers* within the
per-attempt timeout (a long body afterwards is bounded by read inactivity, not by a total).

Failover (Envoy's rules):

* a connect failure goes to another instance for **any** method as long as no byte of the
  request body was sent;
* for idempotent methods (or routes marked ``retry_unsafe``), timeouts and 502/503/504 go to
  another instance too, after the retry policy's backoff and within its retry budget;
* the last attempt's 5xx answer is passed through as it came.

Every outcome feeds passive outlier detection of the instance and the route's breaker.
"""

from __future__ import annotations

import asyncio
import functools
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from yarl import URL

from medianest import errors
from medianest.config.gateway import Instance, Route
from medianest.gateway.asgi_io import RequestBody
from medianest.gateway.balancing import Endpoint, InstancePool, NoHealthyInstance
from medianest.resilience import Policy
from medianest.resilience.clock import SYSTEM_CLOCK, Clock
from medianest.resilience.timeout import Timeout

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
RETRY_STATUSES = frozenset({502, 503, 504})


@dataclass
class RouteRuntime:
    """The live state of one route: its balancer pool and its policy."""

    route: Route
    pool: InstancePool
    policy: Policy
    upstream_name: str = field(default="")

    @functools.cached_property
    def client_timeout(self) -> aiohttp.ClientTimeout:
        """aiohttp's own bounds: connect, and read inactivity while the body streams."""
        attempt = self.route.policy.timeout.attempt or None
        return aiohttp.ClientTimeout(total=None, sock_connect=attempt, sock_read=attempt)

    @functools.cached_property
    def attempt_timeout(self) -> Timeout | None:
        """The per-attempt limit as a shared-watchdog :class:`Timeout` (one loop timer for
        every attempt of the route in flight, instead of one armed and cancelled per
        request); ``None`` when the route sets none."""
        attempt = self.route.policy.timeout.attempt
        return Timeout(attempt, name=f"route {self.route.name}") if attempt else None

    @classmethod
    def build(
        cls, route: Route, *, clock: Clock = SYSTEM_CLOCK, registry: Any = None
    ) -> RouteRuntime:
        pool = InstancePool(
            route.target.instances,
            balance=route.target.balance,
            outlier=route.target.outlier,
            hash_on=route.target.hash_on,
            clock=clock,
            name=route.name,
        )
        policy = Policy.from_config(
            f"route:{route.name}", route.policy, clock=clock, registry=registry
        )
        return cls(route, pool, policy, route.target.service or route.name)

    def updated(self, route: Route) -> RouteRuntime:
        """This runtime for a changed definition of the same route, keeping instance state."""
        fresh = RouteRuntime.build(route)
        target = route.target
        if target.service is None:
            instances = list(target.instances)
        else:  # the registry decides the instances (see gateway.discovered)
            instances = [
                Instance.model_validate({"url": e.url, "weight": e.weight})
                for e in self.pool.endpoints
            ]
        self.pool.update(
            instances, balance=target.balance, outlier=target.outlier, hash_on=target.hash_on
        )
        keep_policy = route.policy == self.route.policy
        return RouteRuntime(
            route, self.pool, self.policy if keep_policy else fresh.policy, fresh.upstream_name
        )


@dataclass
class Attempted:
    response: aiohttp.ClientResponse
    endpoint: Endpoint
    attempts: int
    upstream_seconds: float


def _url(endpoint: Endpoint, path_qs: str) -> URL:
    base = endpoint.url.rstrip("/")
    return URL(base + path_qs, encoded=True)


class Forwarder:
    """Sends requests for every route through one pooled aiohttp session."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def send(
        self,
        rt: RouteRuntime,
        method: str,
        path_qs: str,
        headers: list[tuple[str, str]],
        body: RequestBody,
        hash_key: str | None,
    ) -> Attempted:
        """Send with failover; raise an ``UpstreamError`` subclass when nothing answered.

        The route's total timeout is a deadline on the loop's clock that every attempt and
        every backoff pause respects; each attempt runs under one timer, whichever of its
        own timeout and that deadline comes first (one timer per attempt, not two): the
        route's shared :attr:`RouteRuntime.attempt_timeout` when the attempt's own limit
        ends first, as it does for a first attempt, else an ``asyncio`` timer at the
        deadline.
        """
        total = rt.route.policy.timeout.total or None
        deadline = asyncio.get_running_loop().time() + total if total else None
        idempotent = method in IDEMPOTENT or rt.route.retry_unsafe
        retry = rt.policy.retry
        if retry is not None:
            retry.deposit()
        unreachable: set[str] = set()
        tried: set[str] = set()
        failures = 0
        last_error: errors.UpstreamError | None = None
        while True:
            endpoint = self._pick(rt, hash_key, unreachable, tried, last_error)
            tried.add(endpoint.id)
            started = time.perf_counter()
            try:
                response = await self._one(rt, endpoint, method, path_qs, headers, body, deadline)
            except _ConnectFailed as exc:
                failures += 1
                unreachable.add(endpoint.id)
                last_error = exc
                if body.started:
                    raise
                continue
            except (errors.UpstreamUnavailable, errors.UpstreamTimeout) as exc:
                failures += 1
                last_error = exc
                delay = _next_delay(retry, exc, failures, idempotent and not body.started)
                if delay is None:
                    raise
                await _pause(delay, deadline, rt)
                continue
            elapsed = time.perf_counter() - started
            if response.status in RETRY_STATUSES and idempotent and not body.started:
                failures += 1
                status_error = errors.UpstreamUnavailable(
                    f"route {rt.route.name}: {rt.upstream_name} answered {response.status}",
                    service=rt.upstream_name,
                    status=response.status,
                )
                delay = _next_delay(retry, status_error, failures, True)
                if delay is not None:
                    response.release()
                    last_error = status_error
                    await _pause(delay, deadline, rt)
                    continue
            return Attempted(response, endpoint, failures + 1, elapsed)

    @staticmethod
    def _pick(
        rt: RouteRuntime,
        hash_key: str | None,
        unreachable: set[str],
        tried: set[str],
        last_error: errors.UpstreamError | None,
    ) -> Endpoint:
        """Prefer an instance not tried yet; retry a tried one only if it was reachable."""
        try:
            return rt.pool.pick(hash_key=hash_key, exclude=unreachable | tried)
        except NoHealthyInstance:
            pass
        try:
            return rt.pool.pick(hash_key=hash_key, exclude=unreachable)
        except NoHealthyInstance:
            if last_error is not None:
                raise last_error from None
            raise

    async def _one(
        self,
        rt: RouteRuntime,
        endpoint: Endpoint,
        method: str,
        path_qs: str,
        headers: list[tuple[str, str]],
        body: RequestBody,
        deadline: float | None,
    ) -> aiohttp.ClientResponse:
        breaker = rt.policy.breaker
        permit = breaker.acquire() if breaker is not None else 0
        started = time.perf_counter()
        attempt = rt.attempt_timeout
        data = body if body.expect_body else None
        try:
            with rt.pool.track(endpoint):
                pending = self.session.request(
                    method,
                    _url(endpoint, path_qs),
                    headers=headers,
                    data=data,
                    allow_redirects=False,
                    timeout=rt.client_timeout,
                )
                if attempt is not None and (
                    deadline is None
                    or asyncio.get_running_loop().time() + attempt.seconds <= deadline
                ):
                    with attempt.scope():
                        response = await pending
                else:  # the route's total deadline comes first, or is the only limit
                    async with asyncio.timeout_at(deadline):
                        response = await pending
        except TimeoutError as exc:
            rt.pool.record_failure(endpoint, "timeout")
            failure: errors.UpstreamError = _timed_out(rt, deadline)
            _on_error(breaker, permit, started, failure)
            raise failure from exc
        except (
            aiohttp.ClientConnectorError,
            aiohttp.ServerDisconnectedError,
            ConnectionError,
        ) as exc:
            rt.pool.record_failure(endpoint, "connect")
            failure = _ConnectFailed(
                f"route {rt.route.name}: {rt.upstream_name} unreachable", service=rt.upstream_name
            )
            _on_error(breaker, permit, started, failure)
            raise failure from exc
        except aiohttp.ClientError as exc:
            rt.pool.record_failure(endpoint, "gateway")
            failure = errors.UpstreamUnavailable(
                f"route {rt.route.name}: {rt.upstream_name} failed ({type(exc).__name__})",
                service=rt.upstream_name,
            )
            _on_error(breaker, permit, started, failure)
            raise failure from exc
        except BaseException:
            if breaker is not None:
                breaker.release(permit)
            raise
        if response.status >= 500:
            rt.pool.record_failure(
                endpoint, "gateway" if response.status in RETRY_STATUSES else "5xx"
            )
            _on_error(
                breaker,
                permit,
                started,
                errors.UpstreamUnavailable("5xx", service=rt.upstream_name, status=response.status),
            )
        else:
            rt.pool.record_success(endpoint)
            if breaker is not None:
                breaker.on_success(permit, time.perf_counter() - started)
        return response


class _ConnectFailed(errors.UpstreamUnavailable):
    """Nothing reached the instance: safe to try another for any method."""


def _on_error(breaker: Any, permit: int, started: float, exc: BaseException) -> None:
    if breaker is not None:
        breaker.on_error(permit, time.perf_counter() - started, exc)


def _next_delay(retry: Any, exc: Exception, failures: int, allowed: bool) -> float | None:
    if retry is None or not allowed:
        return None
    delay: float | None = retry.next_delay(exc, failures, True)
    return delay


def _timed_out(rt: RouteRuntime, deadline: float | None) -> errors.UpstreamTimeout:
    """The timeout error: the route's total deadline when it has passed, else the attempt's."""
    total = rt.route.policy.timeout.total
    if deadline is not None and asyncio.get_running_loop().time() >= deadline:
        return errors.UpstreamTimeout(
            f"route {rt.route.name}: {rt.upstream_name} did not answer within {total:g}s",
            service=rt.upstream_name,
        )
    return errors.UpstreamTimeout(
        f"route {rt.route.name}: {rt.upstream_name} did not answer in time",
        service=rt.upstream_name,
    )


async def _pause(delay: float, deadline: float | None, rt: RouteRuntime) -> None:
    """Back off before the next attempt, unless that would outlast the total deadline."""
    if deadline is not None:
        remaining = deadline - asyncio.get_running_loop().time()
        if delay >= remaining:
            await asyncio.sleep(max(0.0, remaining))
            raise _timed_out(rt, deadline)
    await asyncio.sleep(delay)
