"""``/api/v1/admin/gateway``: the gateway's routes, instances, breakers and reload
(scope ``gateway:admin``)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from medianest.api.auth import requires
from medianest.errors import NotFoundError, ServiceNotConfigured
from medianest.gateway.proxy import Gateway
from medianest.gateway.upstream import RouteRuntime
from medianest.security.roles import GATEWAY_ADMIN

router = APIRouter(
    prefix="/admin/gateway", tags=["admin"], dependencies=[Depends(requires(GATEWAY_ADMIN))]
)


def gateway(request: Request) -> Gateway:
    found: Gateway | None = getattr(request.app.state, "gateway", None)
    if found is None:
        raise ServiceNotConfigured("gateway", "this process does not run the gateway role")
    return found


Gw = Annotated[Gateway, Depends(gateway)]


def _runtime(gw: Gateway, name: str) -> RouteRuntime:
    runtime = gw.runtimes.get(name)
    if runtime is None:
        raise NotFoundError(f"no gateway route named {name!r}")
    return runtime


def _describe(runtime: RouteRuntime) -> dict[str, Any]:
    breaker = runtime.policy.breaker
    return {
        "name": runtime.route.name,
        "route": runtime.route.model_dump(mode="json"),
        "instances": runtime.pool.snapshot(),
        "breaker": asdict(breaker.snapshot()) if breaker is not None else None,
    }


class ReloadResult(BaseModel):
    added: list[str]
    removed: list[str]
    changed: list[str]
    routes: int


@router.get("/routes", summary="Every route with its instances and breaker")
async def routes(gw: Gw) -> list[dict[str, Any]]:
    return [_describe(gw.runtimes[r.name]) for r in gw.table.routes]


@router.get("/routes/{name}", summary="One route with its instances and breaker")
async def route(gw: Gw, name: str) -> dict[str, Any]:
    return _describe(_runtime(gw, name))


@router.post("/routes/{name}/breaker/{action}", summary="Force a route's breaker open or closed")
async def breaker(gw: Gw, name: str, action: Literal["open", "close", "reset"]) -> dict[str, Any]:
    runtime = _runtime(gw, name)
    found = runtime.policy.breaker
    if found is None:
        raise NotFoundError(f"route {name!r} has no circuit breaker")
    {"open": found.force_open, "close": found.close, "reset": found.reset}[action]()
    return _describe(runtime)


@router.post("/reload", summary="Reload the route table (validate, then swap)")
async def reload(gw: Gw) -> ReloadResult:
    """Rejected tables answer 500 `configuration` with every problem; the old table serves on."""
    diff = gw.reload()
    return ReloadResult(
        added=list(diff.added),
        removed=list(diff.removed),
        changed=list(diff.changed),
        routes=len(gw.table.routes),
    )
