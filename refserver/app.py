"""Wiring only: settings -> backend, features, registry -> Quart-Trio app.

Launched as `hypercorn --config hypercorn.toml refserver.app:app`.
"""

from __future__ import annotations

import logging
import multiprocessing
from typing import Any, Final

import trio
from quart import Response
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from refserver.backend.memory import MemoryEventLog
from refserver.config import Settings
from refserver.dispatch import McpDispatcher
from refserver.errors import ConfigError, RefserverError
from refserver.features.catalog import Catalog, FeatureIndex
from refserver.features.periodic import periodic_notifiers
from refserver.registry import SessionRegistry
from refserver.transport import legacy_sse, pages, streamable_http
from refserver.transport.errors import error_response, http_exception_response, unexpected_exception_response
from refserver.transport.guards import OriginPolicy
from refserver.transport.services import Services

logger = logging.getLogger("refserver")

SHUTDOWN_POLL_INTERVAL: Final = 0.1
"""Hypercorn itself polls its shutdown event this often."""


def load_catalogs(names: tuple[str, ...]) -> list[Catalog]:
    catalogs = []
    for name in names:
        if name == "reference":
            from refserver.features import reference

            catalogs.append(reference.build_catalog())
        elif name == "conformance":
            from refserver.features import conformance

            catalogs.append(conformance.build_catalog())
    return catalogs


def hypercorn_shutdown_event() -> Any:
    """The multiprocessing event Hypercorn's parent sets when shutdown starts (None if not a worker).

    Hypercorn gives the app no shutdown signal until every connection has ended, which open SSE
    streams never do; the worker's own process arguments carry the event it polls, so we poll it too
    and close our streams (with `retry:`) before Hypercorn's graceful timeout cuts them.
    """
    kwargs = getattr(multiprocessing.current_process(), "_kwargs", None) or {}
    return kwargs.get("shutdown_event")


async def watch_for_shutdown(registry: SessionRegistry) -> None:
    event = hypercorn_shutdown_event()
    if event is None:
        return
    while not event.is_set():  # noqa: ASYNC110 - a multiprocessing event cannot be awaited
        await trio.sleep(SHUTDOWN_POLL_INTERVAL)
    registry.begin_drain()


def create_app(settings: Settings | None = None) -> QuartTrio:
    settings = settings or Settings.from_env()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.auth_mode == "none":
        logger.warning(
            "REFSERVER_AUTH_MODE=none: MCP endpoints are UNAUTHENTICATED. Use this for local development only."
        )
    if settings.redis_url:
        # Refuse rather than silently serve from memory: several instances would not share sessions.
        raise ConfigError("REFSERVER_REDIS_URL is set, but this build has only the in-memory backend")
    features = FeatureIndex.build(load_catalogs(settings.features))
    dispatcher = McpDispatcher(features)
    events = MemoryEventLog(settings.event_log_max_events)
    registry = SessionRegistry(
        events=events,
        handler=dispatcher,
        idle_ttl=settings.session_idle_ttl,
        max_sessions=settings.max_sessions,
        client_request_timeout=settings.client_request_timeout,
        notifiers=periodic_notifiers(settings),
    )
    services = Services(settings, registry, dispatcher, OriginPolicy.from_settings(settings))

    app = QuartTrio("refserver")
    app.config["MAX_CONTENT_LENGTH"] = None  # bodies are bounded by our own reader (413)
    app.extensions["refserver"] = services
    app.register_blueprint(pages.create_blueprint(services))
    app.register_blueprint(streamable_http.create_blueprint(services))
    app.register_blueprint(legacy_sse.create_blueprint(services))

    @app.before_serving
    async def start_registry() -> None:
        await app.nursery.start(registry.run)
        app.nursery.start_soon(watch_for_shutdown, registry)

    @app.errorhandler(RefserverError)
    async def on_refserver_error(exc: RefserverError) -> Response:
        return error_response(exc)

    @app.errorhandler(HTTPException)
    async def on_http_exception(exc: HTTPException) -> Response:
        return http_exception_response(exc)

    @app.errorhandler(Exception)
    async def on_unexpected(exc: Exception) -> Response:
        return unexpected_exception_response(exc)

    return app


app = create_app()
