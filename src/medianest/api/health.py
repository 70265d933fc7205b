"""Liveness, readiness and metrics endpoints.

``/health`` answers 200 while the process can serve HTTP at all. ``/ready`` runs every
registered :class:`ReadinessCheck` concurrently (database reachable, migrations current, each
configured backend's ``ping``...) with a deadline each, and answers 200 only when all pass,
503 otherwise, always listing each check with its verdict and reason. ``/metrics`` is the
Prometheus text exposition.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from medianest.observability.metrics import exposition

CheckFn = Callable[[], Awaitable[str | None]]


@dataclass(frozen=True, slots=True)
class ReadinessCheck:
    """A named probe: returns an optional detail when healthy, raises with the reason if not."""

    name: str
    probe: CheckFn
    timeout: float = 3.0
    critical: bool = True
    """A non-critical failure is reported as ``degraded`` and keeps the process ready (a
    shared rate-limit store going down must not pull every instance out of rotation)."""


async def _run(check: ReadinessCheck) -> dict[str, Any]:
    started = time.perf_counter()
    failed = "fail" if check.critical else "degraded"
    try:
        async with asyncio.timeout(check.timeout):
            detail = await check.probe()
        result: dict[str, Any] = {"status": "ok"}
        if detail:
            result["detail"] = detail
    except TimeoutError:
        result = {"status": failed, "reason": f"no answer within {check.timeout:g}s"}
    except Exception as exc:
        result = {"status": failed, "reason": str(exc) or type(exc).__name__}
    result["duration_ms"] = round((time.perf_counter() - started) * 1000, 2)
    return result


async def run_checks(checks: Sequence[ReadinessCheck]) -> tuple[bool, dict[str, Any]]:
    """Run ``checks`` concurrently; ``(all_ok, results by name)``."""
    results = await asyncio.gather(*(_run(check) for check in checks))
    by_name = {check.name: result for check, result in zip(checks, results, strict=True)}
    return all(r["status"] != "fail" for r in results), by_name


router = APIRouter(tags=["health"])


@router.get("/health", summary="Liveness: the process serves HTTP")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/ready",
    summary="Readiness: every dependency answers",
    responses={503: {"description": "At least one check failed; the body says which and why."}},
)
async def ready(request: Request) -> JSONResponse:
    checks: Sequence[ReadinessCheck] = getattr(request.app.state, "readiness", ())
    ok, results = await run_checks(checks)
    degraded = any(r["status"] == "degraded" for r in results.values())
    status = ("degraded" if degraded else "ready") if ok else "not_ready"
    body = {"status": status, "checks": results}
    return JSONResponse(body, status_code=200 if ok else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics() -> Response:
    payload, content_type = exposition()
    return Response(payload, media_type=content_type)
