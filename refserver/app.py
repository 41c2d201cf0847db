"""Wiring only: settings -> backend, features, registry, OAuth -> Quart-Trio app.

Launched as `hypercorn --config hypercorn.toml refserver.app:app`.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import logging
import multiprocessing
import os
import socket
from collections.abc import Iterator
from typing import Any, Final

import httpx
import trio
from quart import Response, request
from quart_trio import QuartTrio

from refserver import observed
from refserver.backend.factory import backend_from_settings
from refserver.config import ENV_PREFIX, Settings
from refserver.dispatch import RequestCore
from refserver.errors import ConfigError
from refserver.features.catalog import Catalog, FeatureIndex
from refserver.features.periodic import periodic_notifiers
from refserver.features.reference import build_downstream_catalog
from refserver.hypercorn_workarounds import release_parked_readers_at_shutdown
from refserver.master_watch import hypercorn_shutdown_event, watch_master
from refserver.oauth import routes
from refserver.oauth.assembly import authorization_server, create_verifier, oauth_store, token_exchanger
from refserver.oauth.ratelimit import RateLimiter
from refserver.oauth.revocation import connect_revocations
from refserver.observability import logs
from refserver.observability.metrics import (
    BUS_STATS,
    EVENT_LOG_STATS,
    REDIS_STATS,
    REGISTRY_STATS,
    TASK_RUNNER_STATS,
    TASK_STORE_STATS,
    Metrics,
)
from refserver.observability.tracing import TracingConfigError, configure_tracing
from refserver.registry import SessionRegistry
from refserver.tasks.assembly import TaskSystem
from refserver.traced import TracedCore
from refserver.transport import legacy_sse, pages, streamable_http
from refserver.transport.listen import ListenHub
from refserver.transport.refusals import RefusalPolicy
from refserver.transport.services import Services
from refserver.transport.stateless import StatelessExchange
from refserver.web import response_headers
from refserver.web.errors import register_error_handlers
from refserver.web.observation import observe_http
from refserver.web.origins import OriginPolicy
from refserver.web.write_stall import guard_writes

logger = logging.getLogger("refserver")

ACCEPT_LOOP_POLL_INTERVAL: Final = 0.05
"""How often the end of Hypercorn's accept loop is looked for, once shutdown has begun."""
GC_THRESHOLDS: Final = (50_000, 20, 100)
"""The collector's thresholds (CPython's default: 700, 10, 10). A worker holding 10,000 sessions tracks 1-2 million
objects, and with the defaults a full collection of 0.5-1.4 s, finding almost nothing, ran every 2 s or so: Redis
calls missed their bound and streams were ended (docs/performance.md, S4). Young collections still run every
50,000 allocations, so cycles are still freed; full ones become rare."""
TRACING_SHUTDOWN_TIMEOUT: Final = 6.0
"""Seconds the last spans get to reach the collector at shutdown (the exporter's own flush is bounded too)."""
ACCEPT_LOOP_EXIT_TIMEOUT: Final = 2.0
"""Hypercorn ends its accept loop within one poll of the shutdown event; if it has not by then, keep listening."""
ACCEPT_TASK_SUFFIX: Final = "serve_listeners"
"""trio names a task after its function: Hypercorn runs `trio.serve_listeners` (via functools.partial)."""
AUTH_SERVER_HTTP_TIMEOUT: Final = httpx.Timeout(5.0, connect=2.0)
"""Every call to an external authorization server (JWKS, metadata, introspection) is bounded by this."""


def load_catalogs(names: tuple[str, ...]) -> list[Catalog]:
    """Each name is a built-in feature module or a dotted path to a module with `build_catalog()`."""
    catalogs = []
    for name in names:
        module = importlib.import_module(name if "." in name else f"refserver.features.{name}")
        catalogs.append(module.build_catalog())
    return catalogs


async def watch_for_shutdown(registry: SessionRegistry, hub: ListenHub, tasks: TaskSystem) -> None:
    event = hypercorn_shutdown_event()
    if event is None:
        return
    # A thread blocks on the multiprocessing event, so the drain begins the moment it is set: before Hypercorn's own
    # 0.1 s poll sees it and starts closing kept-alive connections, every answer already says `Connection: close`
    # (see `streamable_http.drain_headers`). Abandoned if the app stops first: it only waits.
    await trio.to_thread.run_sync(event.wait, abandon_on_cancel=True)
    registry.begin_drain()
    hub.begin_drain()
    tasks.runner.begin_drain()
    with trio.move_on_after(ACCEPT_LOOP_EXIT_TIMEOUT):
        while accept_loop_running():  # noqa: ASYNC110 - Hypercorn signals nothing when it stops accepting
            await trio.sleep(ACCEPT_LOOP_POLL_INTERVAL)
        stop_listening()


def _all_tasks() -> Iterator[trio.lowlevel.Task]:
    pending = [trio.lowlevel.current_root_task()]
    while pending:
        task = pending.pop()
        if task is None:
            continue
        yield task
        for nursery in task.child_nurseries:
            pending.extend(nursery.child_tasks)


def accept_loop_running() -> bool:
    """Whether Hypercorn's accept loop (`trio.serve_listeners`) still runs in this worker."""
    return any(task.name.endswith(ACCEPT_TASK_SUFFIX) for task in _all_tasks())


def stop_listening() -> None:
    """Refuse new connections from now on, rather than leave them in the backlog until the worker exits.

    Hypercorn stops accepting at shutdown, but the listening socket (shared with its parent process) stays
    open until the worker has exited, so the kernel keeps completing handshakes nobody will serve. Shutting it
    down resets those and refuses the next: clients go to another instance at once. Only called once the
    accept loop has ended: shut under a waiting `accept`, the socket would fail it (EINVAL) and the worker
    with it.
    """
    kwargs = getattr(multiprocessing.current_process(), "_kwargs", None) or {}
    sockets = kwargs.get("sockets")
    for sock in [*getattr(sockets, "insecure_sockets", ()), *getattr(sockets, "secure_sockets", ())]:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


class ShieldFinalSend:
    """ASGI wrapper: lets the last `send` of an HTTP response finish although Quart-Trio cancels the
    request's nursery as soon as the response is sent. Hypercorn does its connection bookkeeping inside
    that send (re-arming the keep-alive timer, closing the connection once shutdown started); cut short,
    idle keep-alive connections are never closed and shutdown waits for the whole graceful_timeout."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.inner(scope, receive, send)
            return

        async def send_last_shielded(message: Any) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                with trio.CancelScope(shield=True):
                    await send(message)
            else:
                await send(message)

        await self.inner(scope, receive, send_last_shielded)


def configure_logging(settings: Settings) -> None:
    """JSON lines (or text) on stderr for every logger, Hypercorn's included; see refserver.observability."""
    logs.configure_logging(settings.log_level, settings.log_format)


def check_tool_scopes(settings: Settings, features: FeatureIndex) -> None:
    """A tool's step-up scope must be one the authorization server can grant, or no client could ever call it."""
    if settings.auth_mode == "none":
        return
    for tool in features.catalog.tools:
        unknown = tool.required_scopes - set(settings.scopes_supported)
        if unknown and settings.auth_mode == "embedded":
            raise ConfigError(
                f"the tool {tool.definition.name!r} needs the scopes {sorted(unknown)}, which "
                f"{ENV_PREFIX}SCOPES_SUPPORTED does not list: the embedded authorization server could never grant them"
            )
        if unknown:
            logger.warning(
                "the tool %r needs the scopes %s, which %sSCOPES_SUPPORTED does not list: protected resource "
                "metadata will not announce them",
                tool.definition.name,
                sorted(unknown),
                ENV_PREFIX,
            )


def create_app(settings: Settings | None = None) -> QuartTrio:
    settings = settings or Settings.from_env()
    configure_logging(settings)
    # A request that arrives early on a kept-alive connection Hypercorn closes at shutdown would otherwise hold the
    # worker's exit for the whole graceful_timeout (refserver/hypercorn_workarounds.py).
    release_parked_readers_at_shutdown()
    if settings.auth_mode == "none":
        logger.warning(
            "REFSERVER_AUTH_MODE=none: MCP endpoints are UNAUTHENTICATED and any caller can use any "
            "session. Use this for local development only."
        )
    try:
        tracing = configure_tracing(os.environ)
    except TracingConfigError as exc:
        raise ConfigError(str(exc)) from None
    backend = backend_from_settings(settings)
    catalogs = load_catalogs(settings.features)
    if settings.downstream_api_url:
        catalogs.append(build_downstream_catalog(settings.downstream_api_url))
    features = FeatureIndex.build(catalogs)
    check_tool_scopes(settings, features)
    auth_server = (
        authorization_server(settings, backend.kv, issuer=settings.issuer) if settings.auth_mode == "embedded" else None
    )
    http = httpx.AsyncClient(timeout=AUTH_SERVER_HTTP_TIMEOUT)
    tasks = TaskSystem(settings, backend.tasks, backend.bus, backend.instance_id)
    core_class = TracedCore if tracing.enabled else RequestCore
    core = core_class(
        features,
        website_url=f"{settings.base_url.rstrip('/')}/",
        tasks=tasks.service,
        token_exchanger=token_exchanger(settings, server=auth_server, http=http),
    )
    registry: SessionRegistry = observed.ObservedRegistry(
        events=backend.events,
        store=backend.store,
        bus=backend.bus,
        core=core,
        idle_ttl=settings.session_idle_ttl,
        max_sessions=settings.max_sessions,
        client_request_timeout=settings.client_request_timeout,
        notifiers=periodic_notifiers(settings),
    )

    external = settings.auth_mode in ("jwt", "introspection")
    # With a shared Redis (the seed's topology) a JWT verifier also sees the authorization server's revocations.
    shared_store = oauth_store(settings, backend.kv) if external and backend.redis else None
    verifier = create_verifier(
        settings, server=auth_server, store=auth_server.store if auth_server else shared_store, http=http
    )
    guard = observed.ObservedGuard(verifier, settings) if verifier else None
    metrics = Metrics() if settings.metrics != "off" else None
    bus_statistics = backend.bus.statistics if backend.bus.distributed else None
    if metrics is not None:
        metrics.add_statistics(registry.statistics, REGISTRY_STATS)
        metrics.add_statistics(backend.events.statistics, EVENT_LOG_STATS)
        metrics.add_statistics(lambda: tasks.runner.statistics(), TASK_RUNNER_STATS)
        metrics.add_statistics(backend.tasks.statistics, TASK_STORE_STATS)
        if backend.redis is not None:
            metrics.add_statistics(backend.redis.statistics, REDIS_STATS)
            backend.redis.on_call = metrics.observe_redis_call
        if bus_statistics is not None:
            metrics.add_statistics(bus_statistics, BUS_STATS)
        if verifier is not None:
            metrics.add_verifier(verifier.statistics)
    connect_revocations(auth_server.revoker if auth_server else None, verifier.cache if verifier else None, backend.bus)
    origin_policy = OriginPolicy.from_settings(settings)
    hub = ListenHub(backend.bus, max_listeners=settings.max_listeners)
    if auth_server is not None:
        auth_server.revoker.listeners.append(hub.token_revoked)  # on one instance the bus never says
    tasks.attach(core.run_task, hub.publish)
    stateless = StatelessExchange(
        core,
        hub,
        state_keys=settings.request_state_keys,
        state_ttl=settings.request_state_ttl,
        heartbeat_interval=settings.heartbeat_interval,
        max_in_flight=settings.max_requests_in_flight,
    )
    services = Services(settings, registry, core, origin_policy, guard, stateless)

    refusals = RefusalPolicy(settings, metrics)
    app = QuartTrio("refserver")
    # Outermost first: the write stall guard and observability (below), the final-send shield, `/mcp` in plain ASGI,
    # then Quart. The guard must see Hypercorn's own `send` to end a stalled connection. The shield covers `/mcp`
    # too: without it, calls arriving on kept-alive connections as shutdown began went unanswered.
    mcp_endpoint = streamable_http.StreamableHttpEndpoint(app.asgi_app, services, refusals)
    app.asgi_app = ShieldFinalSend(mcp_endpoint)  # type: ignore[method-assign]
    app.config["MAX_CONTENT_LENGTH"] = None  # bodies are bounded by our own reader (413, 408)
    app.extensions["refserver"] = services
    observe_http(app, settings, metrics, origin_policy)
    guard_writes(app, settings.write_stall_limit, metrics)
    app.register_blueprint(
        pages.create_blueprint(
            services, verifier=verifier, backend=backend, running_tasks=lambda: len(tasks.runner.tools_running())
        )
    )
    app.register_blueprint(response_headers.create_blueprint(origin_policy))
    app.register_blueprint(legacy_sse.create_blueprint(services))
    if auth_server is not None:
        limiter = RateLimiter(backend.kv, settings.rate_limit_per_minute, settings.trusted_proxies)
        app.register_blueprint(
            routes.create_blueprint(auth_server, limiter, body_read_timeout=settings.body_read_timeout)
        )

    @app.before_serving
    async def start_background_work() -> None:
        if backend.redis is not None:
            await app.nursery.start(backend.redis.run)
            await app.nursery.start(backend.bus.run)
        if auth_server is not None:
            await auth_server.keys.load_or_create()
        await stateless.load_keys(backend.kv)
        if verifier is not None:
            await app.nursery.start(verifier.run)
        await app.nursery.start(registry.run)
        await app.nursery.start(tasks.run)
        app.nursery.start_soon(watch_for_shutdown, registry, hub, tasks)
        if (shutdown_event := hypercorn_shutdown_event()) is not None:
            app.nursery.start_soon(watch_master, shutdown_event)
        if "reference" in settings.features:
            app.nursery.start_soon(hub.announce_periodic_updates, backend.kv, settings.subscription_update_interval)
        if backend.redis is not None:
            await app.nursery.start(observed.watch_redis, backend.redis.statistics, bus_statistics)
        # Everything built so far (modules, schemas, feature catalogs) lives as long as the process: move
        # it out of the collector's generations, so that full collections stop re-scanning it on the hot path.
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)

    @app.after_serving
    async def close_clients() -> None:
        with trio.CancelScope(shield=True):
            await http.aclose()
            if tracing.enabled:
                # The SDK's flush blocks (its own bound, OTEL_BSP_EXPORT_TIMEOUT); ours on top of it.
                with trio.move_on_after(TRACING_SHUTDOWN_TIMEOUT):
                    await trio.to_thread.run_sync(tracing.shutdown, abandon_on_cancel=True)

    @app.after_request
    async def common_headers(response: Response) -> Response:
        response_headers.add_cors_headers(response, origin_policy)
        if registry.draining:
            response.headers.update(streamable_http.drain_headers(request.http_version))
        return response_headers.add_security_headers(response, settings)

    register_error_handlers(app, refusals)

    return app


app = create_app()
