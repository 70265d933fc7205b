"""``/api/v1``: the REST API (loopback-only until sign-in; see :mod:`.access`)."""

from fastapi import APIRouter, Depends

from medianest.api.v1 import catalog, services
from medianest.api.v1.access import local_or_anonymous

router = APIRouter(prefix="/api/v1", dependencies=[Depends(local_or_anonymous)])
router.include_router(catalog.router)
router.include_router(services.router)

__all__ = ["router"]
