"""``/api/v1``: the REST API. Every endpoint declares what it needs (:mod:`medianest.api.auth`)."""

from fastapi import APIRouter, Depends

from medianest.api.auth import requires
from medianest.api.v1 import (
    admin_dlq,
    admin_gateway,
    admin_keys,
    admin_sagas,
    admin_services,
    admin_users,
    auth,
    catalog,
    requests,
    services,
)
from medianest.security.roles import CATALOG_READ, SERVICES_READ

router = APIRouter(prefix="/api/v1")
router.include_router(auth.router)
router.include_router(catalog.router, dependencies=[Depends(requires(CATALOG_READ))])
router.include_router(services.router, dependencies=[Depends(requires(SERVICES_READ))])
router.include_router(requests.router)
router.include_router(admin_keys.router)
router.include_router(admin_gateway.router)
router.include_router(admin_users.router)
router.include_router(admin_services.router)
router.include_router(admin_dlq.router)
router.include_router(admin_sagas.router)

__all__ = ["router"]
