"""``/admin/services``: what the service registry holds, with health (scope ``admin``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from medianest.api.auth import requires
from medianest.discovery import Criteria, Registration, ServiceRegistry
from medianest.errors import ServiceNotConfigured
from medianest.security.roles import ADMIN

router = APIRouter(
    prefix="/admin/services", tags=["admin"], dependencies=[Depends(requires(ADMIN))]
)


def registry(request: Request) -> ServiceRegistry:
    found: ServiceRegistry | None = getattr(request.app.state, "registry", None)
    if found is None:
        raise ServiceNotConfigured("discovery", "the service registry is not running")
    return found


@router.get("", summary="Registered service instances and their health")
async def list_services(
    found: Annotated[ServiceRegistry, Depends(registry)],
    name: Annotated[str | None, Query(max_length=63)] = None,
    version: Annotated[str | None, Query(max_length=100, description="e.g. >=1.2,<2")] = None,
    healthy_only: bool = False,
) -> list[Registration]:
    criteria = Criteria(name=name, version=version, healthy_only=healthy_only)
    return await found.discover(criteria)
