"""``GET /api/v1/services``: every configured upstream with health, latency and breaker."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from medianest.api.v1.deps import integrations, simulated
from medianest.integrations.models import ServiceHealth
from medianest.integrations.registry import Integrations

router = APIRouter(tags=["services"])


class ServicesReport(BaseModel):
    simulated: bool
    services: list[ServiceHealth]


@router.get("/services", summary="Health of every configured upstream")
async def services(
    ints: Annotated[Integrations, Depends(integrations)],
    is_simulated: Annotated[bool, Depends(simulated)],
) -> ServicesReport:
    """Probes each upstream once, concurrently, through its resilience policy.

    ``breaker`` is the state of the upstream's circuit breaker; a service whose breaker is
    open is reported ``down`` at once without being called.
    """
    return ServicesReport(simulated=is_simulated, services=await ints.health())
