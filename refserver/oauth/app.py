"""The authorization server alone, as its own app (the seed's two-process topology).

    hypercorn --config hypercorn-auth.toml refserver.oauth.app:app        # http://localhost:3001

Its issuer is REFSERVER_AUTH_SERVER_URL (default http://localhost:3001); it issues tokens for
REFSERVER_AUTH_RESOURCES (default: REFSERVER_RESOURCE_URL, or http://localhost:3232/mcp). Point the MCP
server at it with REFSERVER_AUTH_MODE=jwt or introspection and the same REFSERVER_AUTH_SERVER_URL.
"""

from __future__ import annotations

import gc
import logging
from typing import Final

import trio
from quart import Response
from quart_trio import QuartTrio

from refserver import __version__
from refserver.backend.factory import backend_from_settings
from refserver.config import Settings
from refserver.errors import BackendUnavailable
from refserver.master_watch import hypercorn_shutdown_event, watch_master
from refserver.oauth import routes
from refserver.oauth.assembly import authorization_server
from refserver.oauth.ratelimit import RateLimiter
from refserver.observability import logs
from refserver.observability.metrics import Metrics
from refserver.protocol.jsonrpc import encode_json
from refserver.web import response_headers
from refserver.web.errors import register_error_handlers
from refserver.web.observation import observe_http
from refserver.web.write_stall import guard_writes

logger = logging.getLogger("refserver.oauth")

HEALTH_PING_TIMEOUT: Final = 1.0


def create_auth_app(settings: Settings | None = None) -> QuartTrio:
    settings = settings or Settings.from_env()
    logs.configure_logging(settings.log_level, settings.log_format)
    backend = backend_from_settings(settings)
    server = authorization_server(settings, backend.kv, issuer=settings.standalone_issuer)

    app = QuartTrio("refserver-auth")
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024  # OAuth requests are small forms and JSON documents
    metrics = Metrics() if settings.metrics != "off" else None
    if metrics is not None and backend.redis is not None:
        backend.redis.on_call = metrics.observe_redis_call
    observe_http(app, settings, metrics)
    guard_writes(app, settings.write_stall_limit, metrics)
    app.register_blueprint(
        routes.create_blueprint(
            server,
            RateLimiter(backend.kv, settings.rate_limit_per_minute, settings.trusted_proxies),
            body_read_timeout=settings.body_read_timeout,
        )
    )

    @app.get("/health")
    async def health() -> Response:
        state = "ok"
        with trio.move_on_after(HEALTH_PING_TIMEOUT) as waited:
            try:
                await backend.kv.ping()
            except BackendUnavailable:
                state = "unavailable"
        if waited.cancelled_caught:
            state = "unavailable"
        document = {
            "status": "ok" if state == "ok" else "degraded",
            "version": __version__,
            "issuer": server.issuer,
            "backend": {"kind": backend.kind, "state": state},
        }
        return Response(
            encode_json(document),
            status=200 if state == "ok" else 503,
            content_type="application/json",
            headers={"Cache-Control": "no-store"},
        )

    @app.before_serving
    async def start() -> None:
        if backend.redis is not None:
            await app.nursery.start(backend.redis.run)
        await server.keys.load_or_create()
        if (shutdown_event := hypercorn_shutdown_event()) is not None:
            app.nursery.start_soon(watch_master, shutdown_event)  # a worker dies with its master
        logger.info("authorization server %s issuing tokens for %s", server.issuer, ", ".join(server.resources))
        gc.freeze()  # see refserver.app: startup objects leave the collector's generations

    @app.after_request
    async def headers(response: Response) -> Response:
        return response_headers.add_security_headers(response, settings)

    register_error_handlers(app)

    return app


app = create_auth_app()
