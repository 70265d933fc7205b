"""The only module that knows every part: builds the :class:`Hub` and the ASGI app.

``create_app(settings)`` returns a FastAPI app whose lifespan starts the hub's parts in
dependency order (database, migrations, then the parts that need them) and stops them in
reverse; a part that fails to start stops the ones already started. Routers are mounted by
role: ``/health``, ``/ready``, ``/metrics`` and ``/problems`` always, ``/api/v1`` with the
``api`` role.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI

from medianest import __version__
from medianest.aggregation import IntegrationAggregator, create_cache
from medianest.api import health, problems, wellknown
from medianest.api import v1 as api_v1
from medianest.api.health import ReadinessCheck
from medianest.api.middleware import RequestContextMiddleware
from medianest.backends import mask_url, url_scheme
from medianest.config import Settings
from medianest.database import Database
from medianest.database import migrations_runner as migrations
from medianest.discovery import ServiceRegistry, create_registry
from medianest.discovery.health import HealthChecker
from medianest.discovery.membership import Membership
from medianest.errors import BackendError
from medianest.events import EventStore, create_event_store
from medianest.events.outbox import OutboxRelay
from medianest.gateway.discovered import DiscoveredTargets
from medianest.gateway.proxy import Gateway, GatewayMiddleware
from medianest.gateway.ratelimit import RateLimiter
from medianest.integrations.discovered import AdapterEndpoints
from medianest.integrations.registry import Integrations
from medianest.media_requests.wiring import saga_definitions, start_projection
from medianest.messaging import Broker, create_broker
from medianest.observability import configure_logging, get_logger
from medianest.propagation import Propagation, instance_group
from medianest.sagas import SagaOrchestrator
from medianest.security import ApiKeyService, server_secret
from medianest.security.identity import Identity
from medianest.wiring import build_identity, hub_instances, reachability, search_sources

_log = get_logger("medianest.app")


class Hub:
    """Every part of one running hub process, started and stopped together.

    ``simulated`` marks a hub whose upstreams are MediaNest's own simulators
    (``medianest demo``); the API says so in its answers.
    """

    def __init__(self, settings: Settings, *, simulated: bool = False) -> None:
        self.settings = settings
        self.simulated = simulated
        self.database = Database(
            settings.database_url,
            pool_size=settings.database.pool_size,
            echo=settings.database.echo,
        )
        self.cache = create_cache(settings.search.cache_url)
        self.integrations = Integrations()
        self.aggregator = IntegrationAggregator([])
        self.api_keys: ApiKeyService | None = None
        self.gateway: Gateway | None = None
        self.limiter: RateLimiter | None = None
        self.auth_limiter: RateLimiter | None = None
        self.identity: Identity | None = None
        self.secret = b""
        self.registry: ServiceRegistry | None = None
        self.health_checker: HealthChecker | None = None
        self.discovered: DiscoveredTargets | None = None
        self.broker: Broker | None = None
        self.propagation: Propagation | None = None
        self.event_store: EventStore | None = None
        self.sagas: SagaOrchestrator | None = None
        self._reports: set[asyncio.Task[None]] = set()
        self._stack = contextlib.AsyncExitStack()
        self.started_at: float | None = None

    async def start(self, *, migrate: bool | None = None) -> None:
        """Start the parts; apply migrations first when ``migrate`` (default: configured)."""
        migrate = self.settings.database.migrate_on_start if migrate is None else migrate
        try:
            await self.database.start()
            self._stack.push_async_callback(self.database.close)
            if migrate:
                state = await migrations.upgrade(self.database)
                _log.info("database ready", revision=state.current, url=mask_url(self.database.url))
                client_identifier = await self.database.instance_id()
            else:
                client_identifier = "medianest-unmigrated"
            self.secret = await asyncio.to_thread(server_secret, self.settings)
            self.api_keys = ApiKeyService(self.database, self.secret)
            self._stack.push_async_callback(self.api_keys.drain)
            await self.cache.start()
            self._stack.push_async_callback(self.cache.close)
            migrated = migrate or await self._migrated()
            await self._start_broker()
            if migrated:
                await self._start_identity()
                await self._start_registry()
                await self._start_propagation()
            if "gateway" in self.settings.server.roles:
                await self._start_gateway()
            self.integrations = Integrations.from_settings(
                self.settings, client_identifier=client_identifier
            )
            self._stack.push_async_callback(self.integrations.close)
            await self.integrations.start()
            self.aggregator = IntegrationAggregator(
                search_sources(self.integrations),
                cache=self.cache,
                deadline=self.settings.search.deadline,
                stale_ttl=self.settings.search.stale_ttl,
            )
            if self.registry is not None:
                await self._start_discovery_work()
            if migrated:
                await self._start_events()
        except BaseException:
            await self.close()
            raise
        self.started_at = time.monotonic()

    async def _start_events(self) -> None:
        """The event store; in ``workers``, the outbox relay and saga recovery too."""
        found = self.settings.events
        url = found.url or self.settings.database_url
        options: dict[str, Any] = {}
        if not found.url:
            options["database"] = self.database
        self.event_store = create_event_store(url, **options)
        await self.event_store.start()
        self._stack.push_async_callback(self.event_store.close)
        self.sagas = SagaOrchestrator(
            self.event_store, saga_definitions(self), lease_ttl=found.saga_lease_ttl
        )
        self._stack.push_async_callback(self.sagas.close)
        if "workers" not in self.settings.server.roles:
            return
        await start_projection(self, self._stack)
        await self.sagas.recover()
        await self.sagas.start_recovery(found.saga_recovery_interval)
        if self.broker is not None:
            relay = OutboxRelay(
                self.event_store,
                self.broker,
                lease_ttl=found.relay_lease_ttl,
                batch_size=found.relay_batch_size,
            )
            await relay.start()
            self._stack.push_async_callback(relay.close)

    async def _start_broker(self) -> None:
        messaging = self.settings.messaging
        url = messaging.broker_url(self.settings.data_dir)
        if url_scheme(url).startswith("sqlite"):
            self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.broker = create_broker(url, **messaging.broker_options(url))
        self._stack.push_async_callback(self.broker.close)
        try:
            await self.broker.start()
        except BackendError as exc:  # /ready reports it; invalidations wait for cache TTLs
            _log.warning("message broker unreachable at start", error=exc.message)

    async def _start_propagation(self) -> None:
        if self.broker is None or self.identity is None:
            return
        group = instance_group(self.settings.server.port)
        self.propagation = Propagation(
            self.broker, group, api_keys=self.api_keys, sessions=self.identity.sessions
        )
        try:
            await self.propagation.start()
        except BackendError as exc:
            _log.warning("cache invalidations will not reach other instances", error=exc.message)
            return
        self._stack.push_async_callback(self.propagation.close)
        self.identity.users.add_listener(self.propagation.user_changed)

    async def _start_registry(self) -> None:
        found = self.settings.discovery
        url = found.url or self.settings.database_url
        options: dict[str, Any] = {}
        if url_scheme(url).startswith(("sqlite", "postgres")):
            same = not found.url or url == self.settings.database_url
            options = {"database": self.database if same else None}
            options["poll_interval"] = found.poll_interval
        elif url_scheme(url) == "static":
            options = {"instances": found.instances}
        self.registry = create_registry(url, **options)
        self._stack.push_async_callback(self.registry.close)
        try:
            await self.registry.start()
        except BackendError as exc:  # /ready reports it; routes keep their configured state
            _log.warning("service registry unreachable at start", error=exc.message)

    async def _start_discovery_work(self) -> None:
        """Self-registration, health checks (workers), service-name routes (gateway) and
        adapters following where their service runs."""
        registry, found = self.registry, self.settings.discovery
        assert registry is not None
        if not registry.read_only:
            membership = Membership(
                registry,
                hub_instances(self.settings),
                ttl=found.instance_ttl,
                interval=found.heartbeat_interval,
            )
            await membership.start()
            self._stack.push_async_callback(membership.close)
        if "workers" in self.settings.server.roles:
            self.health_checker = HealthChecker.from_settings(registry, found)
            if self.propagation is not None:
                self.health_checker.on_change.append(self.propagation.health_changed)
            await self.health_checker.start()
            self._stack.push_async_callback(self.health_checker.close)
        if self.gateway is not None:
            self.discovered = DiscoveredTargets(self.gateway, registry)
            self.discovered.reporter = self._report_outcome
            await self.discovered.start()
            self._stack.push_async_callback(self.discovered.close)
        endpoints = AdapterEndpoints(list(self.integrations.adapters.values()), registry)
        await endpoints.start()
        self._stack.push_async_callback(endpoints.close)

    def _report_outcome(self, instance_id: str, ok: bool, reason: str) -> None:
        """A proxied request's outcome, as a passive health report (in the background)."""
        if self.health_checker is None or len(self._reports) > 1000:
            return
        task = asyncio.get_running_loop().create_task(
            self.health_checker.report(instance_id, ok, reason)
        )
        self._reports.add(task)
        task.add_done_callback(self._reports.discard)

    async def _migrated(self) -> bool:
        """Whether the schema is current (sign-in needs its tables); False when unknown."""
        try:
            return (await migrations.status(self.database)).up_to_date
        except Exception:  # an unreachable database: /ready says why
            return False

    async def _start_identity(self) -> None:
        assert self.api_keys is not None
        self.identity = build_identity(self.settings, self.database, self.api_keys, self.secret)
        await self.identity.start()
        self._stack.push_async_callback(self.identity.close)
        await self._start_limiter()
        self.auth_limiter = self.limiter

    async def _start_limiter(self) -> None:
        if self.limiter is None:
            self.limiter = RateLimiter.from_url(self.settings.gateway.rate_limit_storage)
            await self.limiter.start()
            self._stack.push_async_callback(self.limiter.close)

    async def _start_gateway(self) -> None:
        gw = self.settings.gateway
        await self._start_limiter()
        self.gateway = Gateway(
            gw, api_keys=self.api_keys, identity=self.identity, limiter=self.limiter
        )
        self._stack.push_async_callback(self.gateway.close)
        await self.gateway.start()
        if gw.routes_file and gw.watch_interval > 0:
            watcher = asyncio.create_task(self.gateway.watch_routes_file(gw.watch_interval))
            self._stack.callback(watcher.cancel)
        self._install_sighup()

    def _install_sighup(self) -> None:
        """SIGHUP reloads the route table (only possible from the main thread's loop)."""
        gateway = self.gateway
        if gateway is None:
            return
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGHUP, gateway.reload_or_keep, "SIGHUP")
        except (NotImplementedError, RuntimeError, ValueError):
            return
        self._stack.callback(loop.remove_signal_handler, signal.SIGHUP)

    async def close(self) -> None:
        await self._stack.aclose()

    def readiness_checks(self) -> list[ReadinessCheck]:
        """What ``/ready`` verifies: the hub's own dependencies, never third-party services."""
        checks = [
            ReadinessCheck("database", self._check_database),
            ReadinessCheck("migrations", self._check_migrations),
        ]
        if url_scheme(self.settings.search.cache_url) != "memory":
            checks.append(ReadinessCheck("search_cache", self._check_cache))
        if self.registry is not None:
            checks.append(ReadinessCheck("discovery", self._check_registry))
        if self.broker is not None:
            checks.append(ReadinessCheck("messaging", self._check_broker, critical=False))
        if (
            self.limiter is not None
            and url_scheme(self.settings.gateway.rate_limit_storage) != "memory"
        ):
            checks.append(ReadinessCheck("rate_limits", self.limiter.readiness, critical=False))
        return checks

    def diagnostics(self) -> list[ReadinessCheck]:
        """What ``medianest doctor`` verifies: readiness plus every configured upstream."""
        checks = self.readiness_checks()
        for name, upstream in self.settings.upstreams.items():
            if upstream.enabled:
                checks.append(ReadinessCheck(f"upstream:{name}", reachability(upstream), 6.0))
        return checks

    async def _check_database(self) -> str:
        await self.database.ping()
        return f"{self.database.dialect} at {mask_url(self.database.url)}"

    async def _check_broker(self) -> str:
        assert self.broker is not None
        await self.broker.ping()
        return mask_url(self.settings.messaging.broker_url(self.settings.data_dir))

    async def _check_registry(self) -> str:
        assert self.registry is not None
        await self.registry.ping()
        return repr(self.registry)

    async def _check_cache(self) -> str:
        await self.cache.ping()
        return mask_url(self.settings.search.cache_url)

    async def _check_migrations(self) -> str:
        state = await migrations.status(self.database)
        if not state.up_to_date:
            pending = ", ".join(state.pending)
            raise RuntimeError(f"pending migrations: {pending} (run `medianest migrate`)")
        return f"at {state.current}"


class HubApp(FastAPI):
    """The hub's ASGI app: FastAPI, with an optional layer in front of the whole framework.

    ``front`` (the gateway) sees every connection first and hands what it does not serve to
    :meth:`framework_call`, FastAPI itself. A proxied request therefore never enters the
    framework's middleware stack (its error, telemetry and body-limit layers, our request
    context) or its routing, which together cost more than proxying a small answer.
    """

    front: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.front is not None:
            await self.front(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)

    async def framework_call(self, scope: Any, receive: Any, send: Any) -> None:
        await super().__call__(scope, receive, send)


class GatewayLayer:
    """The gateway in front of the hub's app; the gateway itself exists once the hub started.

    A request for a gateway route never enters the hub's middleware, routing or dependency
    machinery; :class:`~medianest.gateway.proxy.GatewayMiddleware` gives it its own request
    id, access line, metrics and last-resort 500.
    """

    def __init__(self, app: Any, *, hub: Hub) -> None:
        self.app = app
        self.hub = hub
        self._layer: GatewayMiddleware | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        gateway = self.hub.gateway
        if gateway is None:
            await self.app(scope, receive, send)
            return
        if self._layer is None or self._layer.gateway is not gateway:
            self._layer = GatewayMiddleware(self.app, gateway)
        await self._layer(scope, receive, send)


def create_app(
    settings: Settings | None = None,
    *,
    hub: Hub | None = None,
    configure_logs: bool = True,
) -> FastAPI:
    """Build the ASGI app. ``hub`` may be given to share or inspect it (tests do)."""
    settings = settings or (hub.settings if hub else Settings())
    hub = hub or Hub(settings)
    if configure_logs:
        configure_logging(settings.log.level, settings.log.format)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        started = time.monotonic()
        await hub.start()
        app.state.hub = hub
        app.state.readiness = hub.readiness_checks()
        app.state.integrations = hub.integrations
        app.state.aggregator = hub.aggregator
        app.state.simulated = hub.simulated
        app.state.api_keys = hub.api_keys
        app.state.identity = hub.identity
        app.state.auth_limiter = hub.auth_limiter
        app.state.server_secret = hub.secret
        app.state.gateway = hub.gateway
        app.state.registry = hub.registry
        app.state.broker = hub.broker
        app.state.event_store = hub.event_store
        app.state.sagas = hub.sagas
        app.state.allow_anonymous = settings.allow_anonymous
        # Start-up objects live as long as the process: keep them out of every later
        # collection (a full one over them paused request handling ~90 ms under load).
        gc.freeze()
        _log.info("medianest started", version=__version__, roles=list(settings.server.roles))
        try:
            yield
        finally:
            with contextlib.suppress(asyncio.CancelledError):
                await hub.close()
            _log.info("medianest stopped", uptime_s=round(time.monotonic() - started, 3))

    app = HubApp(
        title="MediaNest",
        version=__version__,
        summary="Integration hub for home media stacks.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.base_url = settings.server.base_url
    problems.install(app)
    app.include_router(health.router)
    if "api" in settings.server.roles:
        app.include_router(api_v1.router)
        app.include_router(wellknown.router)
    app.add_middleware(
        RequestContextMiddleware, quiet_paths=frozenset({"/health", "/ready", "/metrics"})
    )
    if "gateway" in settings.server.roles:
        app.front = GatewayLayer(app.framework_call, hub=hub)
    return app
