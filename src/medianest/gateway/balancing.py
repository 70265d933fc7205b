"""Load balancing over the instances of one route, with passive outlier ejection.

An :class:`InstancePool` holds one :class:`Endpoint` per instance URL and picks one per
attempt among those that are neither ejected (see :mod:`.outlier`) nor in the caller's
``exclude`` set (instances that already failed this request). The methods:

``round_robin``
    Each instance in turn, in configuration order; skipped instances do not shift the turn
    of the others.
``weighted_round_robin``
    nginx's smooth weighted round robin: deterministic, exact shares over every
    ``sum(weights)`` picks, and a heavy instance's turns are spread out, not bunched.
``least_outstanding``
    Power of two random choices (Envoy's least request): two distinct random candidates,
    the one with fewer requests in flight wins. A tie is broken at random in proportion to
    the weights, so an idle or evenly loaded pool roughly follows the weights (exactly
    with two instances), while a slow instance, whose requests pile up, gets less whatever
    its weight.
``consistent_hash``
    Weighted rendezvous hashing: every (instance, key) pair gets a score
    ``weight / -ln(u)`` with ``u`` uniform from a BLAKE2b hash of both, and the key goes to the
    best-scoring candidate. The same key maps to the same instance in every process;
    removing, ejecting or excluding an instance moves only that instance's keys, each to its
    next best instance; shares follow the weights. Without a key it falls back to round robin.

Outstanding requests are counted by :meth:`InstancePool.track` around each attempt. The
pool is used from one event loop and never awaits, so it needs no lock.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from random import Random

from medianest.backends import mask_url
from medianest.config.gateway import Balance, HashOn, Instance, Outlier
from medianest.errors import UpstreamUnavailable
from medianest.gateway.outlier import FailureKind, OutlierDetector
from medianest.resilience.clock import SYSTEM_CLOCK, Clock

__all__ = ["Endpoint", "InstancePool", "NoHealthyInstance"]

_TWO_52 = float(2**52)


class NoHealthyInstance(UpstreamUnavailable):
    """Every instance of the route is ejected or was excluded for this request."""


@dataclass(eq=False, slots=True)
class Endpoint:
    """One upstream instance and its live state.

    ``id`` and ``url`` are the instance URL without a trailing slash. ``outstanding`` counts
    attempts in flight; the other fields are the outlier detector's: failures in a row, how
    often it was ejected, the monotonic time its current ejection ends (None when admitted),
    when it was last re-admitted and the kind of its last failure.
    """

    id: str
    url: str
    weight: int
    outstanding: int = 0
    consecutive_failures: int = 0
    ejections: int = 0
    ejected_until: float | None = None
    readmitted_at: float | None = None
    last_failure: str | None = None

    def ejected(self, now: float) -> bool:
        """True while an ejection is running at ``now``."""
        return self.ejected_until is not None and self.ejected_until > now


def endpoint_id(instance: Instance) -> str:
    """The normalised URL that identifies an instance: no trailing slash."""
    return str(instance.url).rstrip("/")


class InstancePool:
    """The instances of one route: balancing, in-flight counts and outlier ejection.

    ``name`` (the route) labels errors, logs and metrics. ``random`` makes the power of two
    choices reproducible in tests. An instance URL listed twice counts once, with the sum of
    its weights.
    """

    def __init__(
        self,
        instances: Sequence[Instance],
        *,
        balance: Balance,
        outlier: Outlier,
        hash_on: HashOn | None = None,
        clock: Clock = SYSTEM_CLOCK,
        random: Random | None = None,
        name: str = "gateway",
    ) -> None:
        self.name = name
        self.balance: Balance = balance
        self.hash_on = hash_on
        self.clock = clock
        self.outlier = OutlierDetector(outlier, clock=clock, name=name)
        self._random = random if random is not None else Random()
        self._endpoints: list[Endpoint] = []
        self._cursor = 0
        self._current: dict[str, int] = {}
        self.listener: Callable[[str, bool, str], None] | None = None
        self.update(instances)

    @property
    def endpoints(self) -> list[Endpoint]:
        """The endpoints in configuration order (a copy of the list, the same objects)."""
        return list(self._endpoints)

    def __len__(self) -> int:
        return len(self._endpoints)

    def update(
        self,
        instances: Sequence[Instance],
        *,
        balance: Balance | None = None,
        outlier: Outlier | None = None,
        hash_on: HashOn | None = None,
    ) -> None:
        """Replace the instance set (discovery, reload); URLs that stay keep their state.

        A kept URL keeps its :class:`Endpoint` object (so a :meth:`track` in flight stays
        balanced), its outstanding count and its ejection, and takes the new weight.
        ``balance``, ``outlier`` and ``hash_on`` replace the route's settings when given.
        """
        weights: dict[str, int] = {}
        for instance in instances:
            key = endpoint_id(instance)
            weights[key] = weights.get(key, 0) + instance.weight
        old = {e.id: e for e in self._endpoints}
        fresh: list[Endpoint] = []
        for key, weight in weights.items():
            endpoint = old.get(key) or Endpoint(id=key, url=key, weight=weight)
            endpoint.weight = weight
            fresh.append(endpoint)
        self._endpoints = fresh
        self._current = {k: v for k, v in self._current.items() if k in weights}
        self._cursor %= max(len(fresh), 1)
        if balance is not None:
            self.balance = balance
        if outlier is not None:
            self.outlier.config = outlier
        if hash_on is not None:
            self.hash_on = hash_on

    def pick(self, *, hash_key: str | None = None, exclude: Collection[str] = ()) -> Endpoint:
        """The endpoint for the next attempt; raise :class:`NoHealthyInstance` if none is left.

        ``exclude`` holds endpoint ids not to use (already tried by this request);
        ``hash_key`` is the consistent-hash key the caller derived from ``hash_on``.
        """
        self.outlier.readmit(self._endpoints)
        now = self.clock.monotonic()
        candidates = [e for e in self._endpoints if e.id not in exclude and not e.ejected(now)]
        if not candidates:
            ejected = sum(1 for e in self._endpoints if e.ejected(now))
            raise NoHealthyInstance(
                f"route {self.name}: no healthy instance "
                f"({len(self._endpoints)} configured, {ejected} ejected, "
                f"{len(exclude)} excluded)",
                service=self.name,
            )
        if len(candidates) == 1:
            chosen = candidates[0]
            if self.balance in ("round_robin", "consistent_hash"):
                self._advance_cursor(chosen)
            return chosen
        match self.balance:
            case "weighted_round_robin":
                return self.weighted_round_robin(candidates)
            case "least_outstanding":
                return self.least_outstanding(candidates)
            case "consistent_hash" if hash_key is not None:
                return self.consistent_hash(candidates, hash_key)
            case _:
                return self.round_robin(candidates)

    def round_robin(self, candidates: Sequence[Endpoint]) -> Endpoint:
        """The first candidate at or after the cursor in configuration order."""
        allowed = {e.id for e in candidates}
        count = len(self._endpoints)
        for step in range(count):
            endpoint = self._endpoints[(self._cursor + step) % count]
            if endpoint.id in allowed:
                self._advance_cursor(endpoint)
                return endpoint
        return candidates[0]

    def _advance_cursor(self, endpoint: Endpoint) -> None:
        for index, e in enumerate(self._endpoints):
            if e is endpoint:
                self._cursor = (index + 1) % len(self._endpoints)
                return

    def weighted_round_robin(self, candidates: Sequence[Endpoint]) -> Endpoint:
        """nginx's smooth weighted round robin over ``candidates`` (ties: config order)."""
        total = 0
        best: Endpoint | None = None
        best_current = 0
        for endpoint in candidates:
            current = self._current.get(endpoint.id, 0) + endpoint.weight
            self._current[endpoint.id] = current
            total += endpoint.weight
            if best is None or current > best_current:
                best, best_current = endpoint, current
        assert best is not None
        self._current[best.id] = best_current - total
        return best

    def least_outstanding(self, candidates: Sequence[Endpoint]) -> Endpoint:
        """Power of two choices by requests in flight; weighted random on a tie."""
        a, b = self._random.sample(list(candidates), 2)
        if a.outstanding != b.outstanding:
            return a if a.outstanding < b.outstanding else b
        return a if self._random.random() * (a.weight + b.weight) < a.weight else b

    def consistent_hash(self, candidates: Sequence[Endpoint], key: str) -> Endpoint:
        """Weighted rendezvous hashing: the candidate with the best score for ``key``."""
        return max(candidates, key=lambda e: _score(e, key))

    @contextmanager
    def track(self, endpoint: Endpoint) -> Iterator[Endpoint]:
        """Count one attempt in flight on ``endpoint`` for the duration of the block."""
        endpoint.outstanding += 1
        try:
            yield endpoint
        finally:
            endpoint.outstanding -= 1

    def record_success(self, endpoint: Endpoint) -> None:
        """The instance answered (below 500): its run of failures is over."""
        self.outlier.success(endpoint)
        if self.listener is not None:
            self.listener(endpoint.url, True, "")

    def record_failure(self, endpoint: Endpoint, kind: FailureKind) -> bool:
        """The instance failed (``5xx``, ``gateway`` 502/503/504, ``connect``, ``timeout``).

        Returns True when this failure ejected it. ``listener`` (set for routes fed by the
        service registry) hears every outcome, so passive results reach the health checks.
        """
        if self.listener is not None:
            self.listener(endpoint.url, False, f"gateway saw {kind}")
        return self.outlier.failure(endpoint, kind, self._endpoints)

    def snapshot(self) -> list[dict[str, object]]:
        """The state of every instance, for the admin API (URLs with passwords masked)."""
        self.outlier.readmit(self._endpoints)
        now = self.clock.monotonic()
        return [
            {
                "url": mask_url(e.url),
                "weight": e.weight,
                "outstanding": e.outstanding,
                "ejected": e.ejected(now),
                "ejected_for_s": round(max(0.0, (e.ejected_until or now) - now), 3),
                "ejections": e.ejections,
                "consecutive_failures": e.consecutive_failures,
                "last_failure": e.last_failure,
            }
            for e in self._endpoints
        ]

    def __repr__(self) -> str:
        return f"InstancePool({self.name!r}, {self.balance}, instances={len(self)})"


def _score(endpoint: Endpoint, key: str) -> float:
    data = f"{endpoint.id}\0{key}".encode("utf-8", "surrogatepass")
    bits = int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big") >> 12
    u = (bits + 0.5) / _TWO_52
    return endpoint.weight / -math.log(u)
