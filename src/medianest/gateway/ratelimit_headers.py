"""What rate limiting shows outside the limiter: who is asking, what they are told, metrics.

:mod:`medianest.gateway.ratelimit` counts; this module holds what faces clients and
operators: the client address, :class:`RateDecision` and its headers, the metric families.

:func:`client_ip` decides the address a request is counted under. Forwarding headers are
written by whoever sends them, so they are believed only as far as a chain of trusted proxies
vouches for them: from the direct peer, walking ``X-Forwarded-For`` from the right, each
trusted proxy hands over to the address it reported; the first untrusted hop is the client,
and entries further left (written by that client) are ignored. Without ``X-Forwarded-For``
the RFC 7239 ``Forwarded: for=`` chain is walked the same way. ``X-Forwarded-For`` wins when
both are present because nginx (the proxy the hub exports configuration for) appends to it;
a proxy that writes only ``Forwarded`` must strip a client's ``X-Forwarded-For``.

:class:`RateDecision` is the verdict of the limiter for one request and renders the headers
of draft-ietf-httpapi-ratelimit-headers: ``RateLimit-Limit``, ``RateLimit-Remaining``,
``RateLimit-Reset`` (delta seconds) and ``RateLimit-Policy`` (``100;w=60``), plus
``Retry-After`` on a refusal.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from medianest.errors import ConfigurationError
from medianest.observability.collectors import SharedCollector

__all__ = [
    "RateDecision",
    "RateIdentity",
    "RateLimitMetrics",
    "client_ip",
    "most_restrictive",
    "trusted_networks",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
UNKNOWN_CLIENT = "unknown"
"""What :func:`client_ip` answers when the connection has no peer address at all."""


@lru_cache(maxsize=32)
def _networks(values: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ConfigurationError(
                f"gateway.trusted_proxies: {value!r} is not an IP address or network",
                problems=[("gateway.trusted_proxies", repr(value), "an address or CIDR network")],
            ) from None
    return tuple(networks)


def trusted_networks(trusted_proxies: Sequence[str]) -> tuple[IPNetwork, ...]:
    """Parse ``trusted_proxies`` (addresses or CIDR networks); cached per distinct list.

    Raises :class:`~medianest.errors.ConfigurationError` naming a bad entry, so building
    the gateway with this first reports a typo at start-up rather than on a request.
    """
    return _networks(tuple(trusted_proxies))


def _parse_address(value: str) -> IPAddress | None:
    """An address from a header entry or peer: ``1.2.3.4``, ``1.2.3.4:80``, ``[::1]:80``."""
    text = value.strip().strip('"')
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: IPAddress, networks: Iterable[IPNetwork]) -> bool:
    return any(address in network for network in networks)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value


def _forwarded_for(value: str) -> list[str]:
    """The ``for=`` values of an RFC 7239 ``Forwarded`` header, left to right.

    An element without ``for=`` yields an empty string, which no address parses from, so
    the walk stops there instead of skipping a hop it cannot account for.
    """
    hops = []
    for element in value.split(","):
        found = ""
        for pair in element.split(";"):
            name, _, raw = pair.partition("=")
            if name.strip().lower() == "for":
                found = raw.strip()
        hops.append(found)
    return hops


def client_ip(peer: str | None, headers: Mapping[str, str], trusted_proxies: Sequence[str]) -> str:
    """The address a request is counted under (see the module docstring for the rules).

    ``peer`` is the address of the direct TCP peer (``None`` on a Unix socket, counted as
    ``"unknown"``); ``headers`` are looked up case-insensitively. An entry that is not an
    address (``unknown``, an obfuscated ``_hidden`` identifier, garbage) ends the walk and
    the answer is the last trusted hop, which reported it: that bucket may be shared, but it
    is never one a client can choose.
    """
    if peer is None:
        return UNKNOWN_CLIENT
    canonical, current, trusted = _peer(peer, tuple(trusted_proxies))
    if not trusted:
        return canonical
    networks = trusted_networks(trusted_proxies)
    xff = _header(headers, "x-forwarded-for")
    if xff is not None:
        chain = xff.split(",")
    else:
        forwarded = _header(headers, "forwarded")
        if forwarded is None:
            return canonical
        chain = _forwarded_for(forwarded)
    for entry in reversed(chain):
        hop = _parse_address(entry)
        if hop is None:
            break
        current = hop
        if not _trusted(hop, networks):
            break
    return str(current)


@lru_cache(maxsize=4096)
def _peer(peer: str, trusted_proxies: tuple[str, ...]) -> tuple[str, IPAddress | None, bool]:
    """``peer`` as an address string (IPv4-mapped IPv6 unwrapped), parsed, and whether it is
    a trusted proxy; cached, since clients and proxies repeat."""
    current = _parse_address(peer)
    if current is None:
        return peer, None, False
    trusted = bool(trusted_proxies) and _trusted(current, trusted_networks(trusted_proxies))
    return str(current), current, trusted


@dataclass(frozen=True, slots=True)
class RateIdentity:
    """Who is asking: the API key id and user when authenticated, and the client address."""

    key_id: str | None
    user: str | None
    ip: str


@dataclass(frozen=True, slots=True)
class RateDecision:
    """The limiter's verdict on one request.

    ``limit`` / ``remaining`` / ``reset_after`` describe the most restrictive of the route's
    limits (the one with the fewest requests left); ``retry_after`` is set on a refusal and
    is when every exceeded limit has room again. ``policy`` lists the route's quota
    policies, the reported one first (``"10;w=1, 1000;w=3600"``), empty when the route has
    none. ``degraded`` is true when only this instance's local counters decided.
    """

    allowed: bool
    limit: int
    remaining: int
    reset_after: float
    retry_after: float | None
    policy: str
    degraded: bool = False

    def headers(self) -> list[tuple[str, str]]:
        """Response headers: ``RateLimit-*`` always, ``Retry-After`` (>= 1 s) on a refusal.

        Seconds are rounded up, so a client that waits as told is not refused again for
        the fraction of a second that was rounded away. No headers when there is no policy.
        """
        if not self.policy:
            return []
        out = [
            ("RateLimit-Limit", str(self.limit)),
            ("RateLimit-Remaining", str(max(0, self.remaining))),
            ("RateLimit-Reset", str(max(0, math.ceil(self.reset_after)))),
            ("RateLimit-Policy", self.policy),
        ]
        if not self.allowed:
            wait = self.retry_after if self.retry_after is not None else self.reset_after
            out.append(("Retry-After", str(max(1, math.ceil(wait)))))
        return out


def most_restrictive(
    outcomes: Sequence[tuple[bool, int, int, float, str]], *, degraded: bool
) -> RateDecision:
    """Combine per-limit outcomes ``(allowed, limit, remaining, reset_after, policy)``.

    A request is allowed only if every limit allowed it. The reported limit is the one with
    the fewest requests left (among the exceeded ones on a refusal), the later reset
    breaking ties; ``retry_after`` is the latest reset of the exceeded limits.
    """
    if not outcomes:
        return RateDecision(True, 0, 0, 0.0, None, "", degraded)
    refused = [o for o in outcomes if not o[0]]
    candidates = refused or list(outcomes)
    chosen = min(candidates, key=lambda o: (o[2], -o[3]))
    policies = [chosen[4], *(o[4] for o in outcomes if o is not chosen and o[4] != chosen[4])]
    retry_after = max(o[3] for o in refused) if refused else None
    return RateDecision(
        allowed=not refused,
        limit=chosen[1],
        remaining=chosen[2],
        reset_after=chosen[3],
        retry_after=retry_after,
        policy=", ".join(dict.fromkeys(policies)),
        degraded=degraded,
    )


class _Limiter(Protocol):
    @property
    def degraded(self) -> bool: ...


_lock = threading.RLock()  # re-entered: registering collects once, under the lock


class RateLimitMetrics(SharedCollector):
    """The rate-limit metric families of one registry, shared by every limiter in it.

    ``medianest_gateway_rate_limited_total{route}`` counts refusals,
    ``medianest_gateway_rate_limit_storage_errors_total`` failed calls to the shared storage
    (requests and probes), and ``medianest_gateway_rate_limit_degraded`` is 1 while any live
    limiter counts locally because its shared storage fails.
    """

    def __init__(self) -> None:
        self.refused: dict[str, int] = {}
        self.storage_errors = 0
        self.limiters: weakref.WeakSet[_Limiter] = weakref.WeakSet()

    def track(self, limiter: _Limiter) -> None:
        """Report ``limiter``'s ``degraded`` in the gauge while it lives (or until untracked)."""
        with _lock:
            self.limiters.add(limiter)

    def untrack(self, limiter: _Limiter) -> None:
        with _lock:
            self.limiters.discard(limiter)

    def count_refusal(self, route: str) -> None:
        with _lock:
            self.refused[route] = self.refused.get(route, 0) + 1

    def count_storage_error(self) -> None:
        with _lock:
            self.storage_errors += 1

    def collect(self) -> list[Metric]:
        refused = CounterMetricFamily(
            "medianest_gateway_rate_limited", "Requests refused by a rate limit.", labels=["route"]
        )
        degraded = GaugeMetricFamily(
            "medianest_gateway_rate_limit_degraded",
            "1 while rate limits are enforced locally because the shared storage fails.",
        )
        errors = CounterMetricFamily(
            "medianest_gateway_rate_limit_storage_errors",
            "Failed calls to the shared rate-limit storage.",
        )
        with _lock:
            routes = sorted(self.refused.items())
            limiters = list(self.limiters)
        for route, count in routes:
            refused.add_metric([route], count)
        degraded.add_metric([], 1 if any(lim.degraded for lim in limiters) else 0)
        errors.add_metric([], self.storage_errors)
        return [refused, degraded, errors]
