"""RFC 9457 problem details: the one place where errors become HTTP statuses.

Each class of :mod:`medianest.errors` maps to a status and a stable ``type`` of the form
``/problems/<slug>``; the hub serves a short description of every type at that path, so a
client that follows the link learns what the problem means. The body carries ``type``,
``title``, ``status``, ``detail``, ``instance`` (the request path), ``request_id`` and the
error's safe context (``service``, ``endpoint``, ``retry_after``, field ``errors``...).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from medianest import errors

PROBLEM_JSON = "application/problem+json"


@dataclass(frozen=True, slots=True)
class ProblemType:
    slug: str
    title: str
    status: int


# Most specific first: the first class an error is an instance of wins.
_TABLE: list[tuple[type[BaseException], ProblemType]] = [
    (errors.WrongExpectedVersion, ProblemType("wrong-expected-version", "Version conflict", 409)),
    (errors.ConcurrencyError, ProblemType("conflict", "Conflict", 409)),
    (errors.ValidationError, ProblemType("validation", "Invalid request", 422)),
    (errors.NotFoundError, ProblemType("not-found", "Not found", 404)),
    (errors.AuthenticationError, ProblemType("unauthenticated", "Authentication required", 401)),
    (errors.AuthorizationError, ProblemType("forbidden", "Forbidden", 403)),
    (errors.AuthError, ProblemType("auth", "Authentication failed", 401)),
    (errors.RateLimitExceeded, ProblemType("rate-limited", "Too many requests", 429)),
    (errors.CircuitOpenError, ProblemType("circuit-open", "Upstream circuit open", 503)),
    (errors.BulkheadFull, ProblemType("overloaded", "Too many concurrent calls", 503)),
    (errors.RetryBudgetExhausted, ProblemType("retry-budget", "Retry budget exhausted", 503)),
    (errors.TimeoutExceeded, ProblemType("timeout", "Timed out", 504)),
    (errors.FallbackFailed, ProblemType("fallback-failed", "Upstream and fallbacks failed", 502)),
    (errors.ResilienceError, ProblemType("resilience", "Call refused", 503)),
    (errors.UpstreamTimeout, ProblemType("upstream-timeout", "Upstream timed out", 504)),
    (errors.UpstreamUnavailable, ProblemType("upstream-unavailable", "Upstream unavailable", 502)),
    (errors.UpstreamNotFound, ProblemType("upstream-not-found", "Not found upstream", 404)),
    (errors.UpstreamRateLimited, ProblemType("upstream-rate-limited", "Upstream busy", 503)),
    (
        errors.UpstreamAuthError,
        ProblemType("upstream-auth", "Upstream refused our credentials", 502),
    ),
    (
        errors.UpstreamContractError,
        ProblemType("upstream-contract", "Upstream broke its contract", 502),
    ),
    (errors.UpstreamConflict, ProblemType("upstream-conflict", "Already exists upstream", 409)),
    (
        errors.UpstreamBadRequest,
        ProblemType("upstream-rejected", "Upstream rejected the call", 502),
    ),
    (errors.UpstreamError, ProblemType("upstream-error", "Upstream error", 502)),
    (errors.BackendUnavailable, ProblemType("backend-unavailable", "Backend unavailable", 503)),
    (errors.BackendError, ProblemType("backend-error", "Backend error", 500)),
    (errors.ServiceNotConfigured, ProblemType("not-configured", "Service not configured", 503)),
    (errors.ConfigurationError, ProblemType("configuration", "Server misconfigured", 500)),
    (errors.MediaNestError, ProblemType("error", "Error", 500)),
]
INTERNAL = ProblemType("internal", "Internal server error", 500)
HTTP_ERROR = ProblemType("http", "HTTP error", 400)
_BY_SLUG = {ptype.slug: (cls, ptype) for cls, ptype in _TABLE}

_SAFE_EXTRA = ("service", "endpoint", "method", "retry_after", "breaker", "stream_id", "actual")


def problem_type_for(exc: BaseException) -> ProblemType:
    for cls, ptype in _TABLE:
        if isinstance(exc, cls):
            return ptype
    return INTERNAL


def problem_body(
    ptype: ProblemType,
    detail: str,
    *,
    status: int | None = None,
    instance: str | None = None,
    request_id: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": f"/problems/{ptype.slug}",
        "title": ptype.title,
        "status": status or ptype.status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    if request_id:
        body["request_id"] = request_id
    body.update({k: v for k, v in extra.items() if v is not None})
    return body


def problem_response(body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=body["status"], headers=headers, media_type=PROBLEM_JSON)


def _request_id(request: Request) -> str | None:
    value = request.scope.get("state", {}).get("request_id")
    return str(value) if value else None


def error_response(request: Request, exc: errors.MediaNestError) -> JSONResponse:
    ptype = problem_type_for(exc)
    extra = {k: exc.extra[k] for k in _SAFE_EXTRA if exc.extra.get(k) not in (None, "")}
    if isinstance(exc, errors.ValidationError) and exc.errors:
        extra["errors"] = exc.errors
    headers: dict[str, str] = {}
    retry_after = exc.extra.get("retry_after")
    if isinstance(retry_after, int | float) and retry_after >= 0:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    elif ptype.status == 503:
        headers["Retry-After"] = "1"
    if isinstance(exc, errors.AuthError):
        challenge = exc.extra.get("challenge")
        if isinstance(challenge, str):
            headers["WWW-Authenticate"] = challenge
        elif isinstance(exc, errors.AuthenticationError):
            headers["WWW-Authenticate"] = 'Bearer realm="medianest"'
    body = problem_body(
        ptype, exc.message, instance=request.url.path, request_id=_request_id(request), **extra
    )
    return problem_response(body, headers)


def _http_exception(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    body = problem_body(
        ProblemType(f"http-{exc.status_code}", HTTP_ERROR.title, exc.status_code),
        str(exc.detail),
        instance=request.url.path,
        request_id=_request_id(request),
    )
    body["title"] = _reason_phrase(exc.status_code)
    body["type"] = "about:blank"
    return problem_response(body, dict(exc.headers or {}))


def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    fields = {
        ".".join(str(p) for p in err.get("loc", ())): str(err.get("msg", ""))
        for err in exc.errors()
    }
    detail = "; ".join(f"{loc}: {msg}" for loc, msg in fields.items()) or "invalid request"
    body = problem_body(
        _BY_SLUG["validation"][1],
        detail,
        instance=request.url.path,
        request_id=_request_id(request),
        errors=fields,
    )
    return problem_response(body)


def _reason_phrase(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _describe(request: Request) -> PlainTextResponse:
    slug = request.path_params["slug"]
    if slug == INTERNAL.slug:
        return PlainTextResponse("internal: an unexpected error; the log has the request id.\n")
    found = _BY_SLUG.get(slug)
    if found is None:
        return PlainTextResponse(f"unknown problem type {slug!r}\n", status_code=404)
    cls, ptype = found
    doc = inspect.getdoc(cls) or ""
    return PlainTextResponse(f"{ptype.slug} ({ptype.status} {ptype.title})\n\n{doc}\n")


def install(app: FastAPI) -> None:
    """Register the exception handlers and the ``/problems/{slug}`` descriptions."""
    app.add_exception_handler(errors.MediaNestError, error_response)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_exception)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation)  # type: ignore[arg-type]
    app.add_api_route("/problems/{slug}", _describe, include_in_schema=False)
