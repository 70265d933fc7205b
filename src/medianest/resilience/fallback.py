"""Fallback chains: what to answer when the upstream cannot.

A :class:`Fallback` is an ordered tuple of strategies. When the protected call fails, each
strategy whose ``handles(exc)`` predicate accepts the error is tried in turn; the first that
produces a value wins, and the :class:`Recovered` answer names it (``served_by``) and says
whether the value is stale. Strategies shipped here:

* :class:`LastGood` remembers the last successful value per key (the caller passes ``key``)
  and serves it marked ``stale=True``, optionally only while younger than ``max_age``;
* :class:`Static` serves a fixed default;
* :class:`Alternate` awaits another source (a mirror, a secondary service).

The default predicate, :func:`is_unavailable`, accepts failures that say nothing about the
request itself: resilience refusals (open circuit, full bulkhead, timeouts, exhausted retry
budget), connection errors, 5xx and 429 answers. A 404 or a rejected request is not papered
over with yesterday's answer.

When every strategy that handled the error failed too, the **original** error is raised
again, so callers and the API error mapping see what really went wrong, with the evidence
attached: one exception note per failed strategy, and the strategy errors in the
``fallback_errors`` attribute (read it with :func:`fallback_errors`). With
``raise_original=False`` a :class:`~medianest.errors.FallbackFailed` carrying ``original``
and ``fallback_errors`` is raised instead, chained from the original. When no strategy
handles the error, the original is raised untouched.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, Protocol

from medianest.errors import FallbackFailed, ResilienceError, UpstreamError
from medianest.resilience.clock import SYSTEM_CLOCK, Clock
from medianest.resilience.retry import is_retryable

__all__ = [
    "Alternate",
    "Fallback",
    "FallbackStrategy",
    "LastGood",
    "Recovered",
    "Static",
    "fallback_errors",
    "is_unavailable",
]


def is_unavailable(exc: BaseException) -> bool:
    """The default fallback predicate: the upstream could not answer, for any reason.

    Resilience refusals, every error :func:`~.retry.is_retryable` accepts, and upstream
    errors with a 5xx status.
    """
    if isinstance(exc, ResilienceError) or is_retryable(exc):
        return True
    return isinstance(exc, UpstreamError) and exc.status is not None and exc.status >= 500


def fallback_errors(exc: BaseException) -> list[BaseException]:
    """The errors of the fallbacks that were tried and failed for ``exc`` (may be empty)."""
    errors = getattr(exc, "fallback_errors", None)
    return list(errors) if isinstance(errors, list) else []


@dataclass(frozen=True, slots=True)
class Recovered:
    """A value produced by a fallback: which one served it and whether it is stale."""

    value: Any
    served_by: str
    stale: bool = False


class FallbackStrategy(Protocol):
    """One link of a chain. ``resolve`` raises when it has nothing to offer."""

    name: str

    def handles(self, exc: BaseException) -> bool:
        """Whether this strategy should try to answer for ``exc``."""
        ...

    async def resolve(self, exc: BaseException, key: Hashable | None) -> Recovered:
        """Produce a replacement value for the failed call identified by ``key``."""
        ...

    def remember(self, key: Hashable, value: Any) -> None:
        """Learn from a successful primary call (most strategies ignore it)."""
        ...


class LastGood:
    """Serve the last successful value for the same key, marked stale.

    Holds at most ``max_entries`` keys (least recently stored dropped first). With
    ``max_age`` set, a value older than that many seconds of ``clock`` time is not served.
    Nothing is stored for calls made without a key.
    """

    __slots__ = ("_values", "clock", "handles", "max_age", "max_entries", "name")

    def __init__(
        self,
        *,
        name: str = "last_good",
        when: Callable[[BaseException], bool] = is_unavailable,
        max_entries: int = 1024,
        max_age: float | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.name = name
        self.handles = when
        self.max_entries = max_entries
        self.max_age = max_age
        self.clock = clock
        self._values: OrderedDict[Hashable, tuple[Any, float]] = OrderedDict()

    def remember(self, key: Hashable, value: Any) -> None:
        values = self._values
        values[key] = (value, self.clock.monotonic())
        values.move_to_end(key)
        if len(values) > self.max_entries:
            values.popitem(last=False)

    async def resolve(self, exc: BaseException, key: Hashable | None) -> Recovered:
        if key is None:
            raise LookupError("no key was given, so there is no last good value")
        try:
            value, stored = self._values[key]
        except KeyError:
            raise LookupError(f"no last good value for key {key!r}") from None
        age = self.clock.monotonic() - stored
        if self.max_age is not None and age > self.max_age:
            raise LookupError(f"last good value for {key!r} is {age:g}s old (> {self.max_age:g})")
        return Recovered(value, self.name, stale=True)


class Static:
    """Serve a fixed value (an empty list, a placeholder), not marked stale."""

    __slots__ = ("handles", "name", "value")

    def __init__(
        self,
        value: Any,
        *,
        name: str = "default",
        when: Callable[[BaseException], bool] = is_unavailable,
    ) -> None:
        self.value = value
        self.name = name
        self.handles = when

    async def resolve(self, exc: BaseException, key: Hashable | None) -> Recovered:
        return Recovered(self.value, self.name)

    def remember(self, key: Hashable, value: Any) -> None:
        return None


class Alternate:
    """Await another source: ``fn(exc, key)`` returns the replacement value.

    ``stale`` says whether that source's answers should be flagged stale (a read replica
    that lags, a cache) or not (a mirror).
    """

    __slots__ = ("fn", "handles", "name", "stale")

    def __init__(
        self,
        fn: Callable[[BaseException, Hashable | None], Awaitable[Any]],
        *,
        name: str = "alternate",
        stale: bool = False,
        when: Callable[[BaseException], bool] = is_unavailable,
    ) -> None:
        self.fn = fn
        self.name = name
        self.stale = stale
        self.handles = when

    async def resolve(self, exc: BaseException, key: Hashable | None) -> Recovered:
        return Recovered(await self.fn(exc, key), self.name, stale=self.stale)

    def remember(self, key: Hashable, value: Any) -> None:
        return None


class Fallback:
    """An ordered chain of strategies (see the module docstring for the error contract)."""

    __slots__ = ("raise_original", "strategies")

    def __init__(self, *strategies: FallbackStrategy, raise_original: bool = True) -> None:
        names = [strategy.name for strategy in strategies]
        if len(set(names)) != len(names) or "primary" in names:
            raise ValueError(f"fallback names must be unique and not 'primary': {names}")
        self.strategies = strategies
        self.raise_original = raise_original

    def remember(self, key: Hashable | None, value: Any) -> None:
        """Offer a successful primary value to the strategies (``LastGood`` keeps it)."""
        if key is not None:
            for strategy in self.strategies:
                strategy.remember(key, value)

    async def recover(self, exc: Exception, key: Hashable | None = None) -> Recovered:
        """Answer for the failed call, or raise as the module docstring describes."""
        errors: list[BaseException] = []
        for strategy in self.strategies:
            if not strategy.handles(exc):
                continue
            try:
                return await strategy.resolve(exc, key)
            except Exception as error:
                exc.add_note(f"fallback {strategy.name!r} failed: {type(error).__name__}: {error}")
                errors.append(error)
        if not errors:
            raise exc
        if not self.raise_original:
            raise FallbackFailed(exc, errors) from exc
        exc.fallback_errors = errors  # type: ignore[attr-defined]
        raise exc

    def __repr__(self) -> str:
        return f"Fallback({', '.join(s.name for s in self.strategies)})"
