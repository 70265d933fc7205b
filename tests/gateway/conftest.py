"""Gateway fixtures: upstream instances and a gateway in front of them, all on real sockets."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from medianest.api.middleware import RequestContextMiddleware
from medianest.config.gateway import GatewaySettings, Route
from medianest.gateway.proxy import Gateway
from tests.support.servers import RunningServer, serve_asgi
from tests.support.upstream import upstream_app


async def hub_fallback(scope: Scope, receive: Receive, send: Send) -> None:
    """Stands for the hub's own app: everything the gateway does not route lands here."""
    if scope["type"] == "http":
        await JSONResponse({"hub": True, "path": scope["path"]}, status_code=404)(
            scope, receive, send
        )


@contextlib.asynccontextmanager
async def upstreams(*names: str) -> AsyncIterator[dict[str, RunningServer]]:
    async with contextlib.AsyncExitStack() as stack:
        running = {}
        for name in names:
            running[name] = await stack.enter_async_context(serve_asgi(upstream_app(name)))
        yield running


def route(name: str, urls: list[str], **spec: Any) -> Route:
    data: dict[str, Any] = {
        "name": name,
        "match": spec.pop("match", {"path_prefix": f"/{name}/"}),
        "target": {"instances": [{"url": u} for u in urls], **spec.pop("target", {})},
        "auth": {"required": False},
        "strip_prefix": spec.pop("strip_prefix", True),
    }
    data.update(spec)
    return Route.model_validate(data)


@contextlib.asynccontextmanager
async def gateway_for(*routes: Route, **settings: Any) -> AsyncIterator[tuple[Gateway, str]]:
    gateway = Gateway(GatewaySettings(routes=routes, **settings))
    await gateway.start()
    app = RequestContextMiddleware(gateway.middleware(hub_fallback))
    try:
        async with serve_asgi(app, lifespan="off") as server:
            yield gateway, server.url
    finally:
        await gateway.close()


@pytest.fixture
def make_route() -> Callable[..., Route]:
    return route
