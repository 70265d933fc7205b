"""The one error tree of MediaNest.

Every error the hub raises on purpose derives from :class:`MediaNestError`. Driver and
library exceptions are translated into this tree in one place per backend and chained with
``raise ... from exc``, so callers catch our classes, never ``asyncpg`` or ``aiohttp`` ones.
HTTP status codes are not chosen here: ``medianest.api.problems`` maps each class to a status
and a stable problem ``type`` URI.

::

    MediaNestError
    ├── ConfigurationError            bad or missing configuration, unknown backend scheme
    │   └── ServiceNotConfigured      a feature needs an upstream that is not configured
    ├── ValidationError               bad input from a caller (fields listed in ``errors``)
    ├── NotFoundError                 a thing we own does not exist
    ├── ConcurrencyError
    │   └── WrongExpectedVersion      optimistic concurrency: the stream moved on
    ├── AuthError
    │   ├── AuthenticationError       who are you? (missing / bad credentials)
    │   └── AuthorizationError        you may not do this
    ├── RateLimitExceeded             a caller went over a rate limit (``retry_after`` s)
    ├── BackendError                  a backend (database, broker, registry...) failed
    │   └── BackendUnavailable        it cannot be reached at all
    ├── ResilienceError
    │   ├── CircuitOpenError          the breaker refused the call
    │   ├── TimeoutExceeded           a per-attempt timeout or total deadline passed
    │   ├── BulkheadFull              no slot and no room (or time) in the wait queue
    │   ├── RetryBudgetExhausted      a retry was refused by the budget (original error chained)
    │   └── FallbackFailed            every fallback failed too (original + fallback errors)
    └── UpstreamError                 a third-party service failed (service, status, endpoint)
        ├── UpstreamUnavailable       could not connect, or 502/503/504
        ├── UpstreamTimeout           no answer in time
        ├── UpstreamAuthError         401/403: our credentials for the service are wrong
        ├── UpstreamNotFound          the service does not know the thing asked for
        ├── UpstreamRateLimited       429 (``retry_after`` seconds when the service said)
        ├── UpstreamBadRequest        the service rejected what we sent (4xx)
        │   └── UpstreamConflict      ... because it conflicts with what exists (409)
        └── UpstreamContractError     the answer does not match the service's contract
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class MediaNestError(Exception):
    """Root of every error MediaNest raises on purpose.

    ``message`` is meant for people (logs, problem+json ``detail``); ``extra`` holds machine
    readable context that is safe to show to a client (never secrets).
    """

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra: dict[str, Any] = extra

    def __str__(self) -> str:
        return self.message


class ConfigurationError(MediaNestError):
    """Configuration is invalid, incomplete, or names something that cannot be loaded.

    ``problems`` lists every offending key as ``(key, value_repr, expectation)`` so a reader
    sees all mistakes at once instead of fixing them one start-up at a time.
    """

    def __init__(
        self, message: str, *, problems: Sequence[tuple[str, str, str]] = (), **extra: Any
    ) -> None:
        super().__init__(message, **extra)
        self.problems = list(problems)


class ServiceNotConfigured(ConfigurationError):
    """A feature was asked for that needs an upstream (Plex, Overseerr...) not configured."""

    def __init__(self, service: str, feature: str = "") -> None:
        what = f" for {feature}" if feature else ""
        super().__init__(f"no {service} upstream is configured{what}", service=service)
        self.service = service


class ValidationError(MediaNestError):
    """Input from a caller is not acceptable; ``errors`` maps field location to the reason."""

    def __init__(
        self, message: str, *, errors: Mapping[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(message, **extra)
        self.errors = dict(errors or {})


class NotFoundError(MediaNestError):
    """Something MediaNest itself owns (a user, a key, a saga, a route) does not exist."""


class ConcurrencyError(MediaNestError):
    """A write lost a race with another writer."""


class WrongExpectedVersion(ConcurrencyError):
    """An append expected a stream version that is no longer (or not yet) current."""

    def __init__(self, stream_id: str, expected: object, actual: int | None) -> None:
        super().__init__(
            f"stream {stream_id!r} is at version {actual}, expected {expected}",
            stream_id=stream_id,
            expected=expected,
            actual=actual,
        )
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual


class AuthError(MediaNestError):
    """Base of authentication and authorization failures."""


class AuthenticationError(AuthError):
    """No credentials, or credentials that are invalid, expired or revoked."""


class AuthorizationError(AuthError):
    """The caller is known but lacks the role or scope the operation needs."""


class RateLimitExceeded(MediaNestError):
    """A caller exceeded one of the hub's own rate limits; ``retry_after`` says when to
    come back (seconds)."""


class BackendError(MediaNestError):
    """A backend chosen by URL (database, broker, registry, cache...) failed an operation.

    ``backend`` is the masked URL or the backend's name, never a URL with its password.
    """

    def __init__(self, message: str, *, backend: str = "", **extra: Any) -> None:
        super().__init__(message, backend=backend, **extra)
        self.backend = backend


class BackendUnavailable(BackendError):
    """The backend cannot be reached (connection refused, DNS failure, server down)."""


class ResilienceError(MediaNestError):
    """A resilience strategy refused or abandoned a call."""


class CircuitOpenError(ResilienceError):
    """The circuit breaker is open (or forced open, or out of half-open probes).

    ``retry_after`` is the number of seconds until the breaker may admit a probe.
    """

    def __init__(self, name: str, *, retry_after: float | None = None) -> None:
        super().__init__(f"circuit {name!r} is open", breaker=name, retry_after=retry_after)
        self.name = name
        self.retry_after = retry_after


class TimeoutExceeded(ResilienceError, TimeoutError):
    """A per-attempt timeout or a total deadline passed before the call finished.

    It is also a builtin :class:`TimeoutError`, so code that expects the standard exception
    for a timeout keeps working.
    """

    def __init__(self, message: str, *, timeout: float) -> None:
        super().__init__(message, timeout=timeout)
        self.timeout = timeout


class BulkheadFull(ResilienceError):
    """The bulkhead has no free slot and its wait queue is full or the wait timed out."""

    def __init__(self, name: str, *, max_concurrent: int, max_queued: int) -> None:
        super().__init__(
            f"bulkhead {name!r} is full ({max_concurrent} running, {max_queued} queued)",
            bulkhead=name,
            max_concurrent=max_concurrent,
            max_queued=max_queued,
        )
        self.name = name


class RetryBudgetExhausted(ResilienceError):
    """A retry was wanted but the retry budget had no room; the last error is ``__cause__``."""


class FallbackFailed(ResilienceError):
    """Every fallback failed; ``original`` is the call's error, ``fallback_errors`` the rest."""

    def __init__(self, original: BaseException, fallback_errors: Sequence[BaseException]) -> None:
        super().__init__(
            f"call failed ({type(original).__name__}: {original}) and "
            f"{len(fallback_errors)} fallback(s) failed too"
        )
        self.original = original
        self.fallback_errors = list(fallback_errors)


class UpstreamError(MediaNestError):
    """A third-party service (Plex, plex.tv, Overseerr, Uptime Kuma...) failed a call.

    ``service`` is the upstream's configured name, ``endpoint`` the route template (never a
    raw URL with ids or tokens), ``status`` the HTTP status when there was an answer, and
    ``method`` the HTTP method.
    """

    def __init__(
        self,
        message: str,
        *,
        service: str,
        endpoint: str = "",
        status: int | None = None,
        method: str = "",
        **extra: Any,
    ) -> None:
        super().__init__(
            message, service=service, endpoint=endpoint, status=status, method=method, **extra
        )
        self.service = service
        self.endpoint = endpoint
        self.status = status
        self.method = method


class UpstreamUnavailable(UpstreamError):
    """The service could not be reached, or answered 502/503/504."""


class UpstreamTimeout(UpstreamError, TimeoutError):
    """The service did not answer in time."""


class UpstreamAuthError(UpstreamError):
    """The service refused our credentials (401/403): the configured token or key is wrong."""


class UpstreamNotFound(UpstreamError):
    """The service does not know the thing asked for."""


class UpstreamRateLimited(UpstreamError):
    """The service answered 429; ``retry_after`` is in seconds when the service said."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, retry_after=retry_after, **kw)
        self.retry_after = retry_after


class UpstreamBadRequest(UpstreamError):
    """The service rejected the request we sent (a 4xx other than 401/403/404/429)."""


class UpstreamConflict(UpstreamBadRequest):
    """The service refused because the thing already exists (a duplicate request...)."""


class UpstreamContractError(UpstreamError):
    """The service's answer does not match its contract; the message says what was missing."""
