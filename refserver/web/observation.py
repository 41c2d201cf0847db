"""The Quart side of observability: the hooks `observe_http` puts on an app (both refserver apps use it)."""

from __future__ import annotations

import logging

from quart import Response, request
from quart_trio import QuartTrio

from refserver.config import Settings
from refserver.errors import ConfigError
from refserver.observability.http import ObservedApp, note_route, serve_metrics
from refserver.observability.metrics import CONTENT_TYPE, Metrics
from refserver.web.origins import OriginPolicy

logger = logging.getLogger("refserver.observability")


def metrics_bind(settings: Settings) -> str | None:
    """The separate metrics listener's address (REFSERVER_METRICS=host:port), if any."""
    return None if settings.metrics in ("off", "on") else settings.metrics


def observe_http(
    app: QuartTrio, settings: Settings, metrics: Metrics | None, origin_policy: OriginPolicy | None = None
) -> None:
    """Request ids, the access log and request metrics for every request of `app` (and GET /metrics if `on`).

    Shared by the standalone authorization server app.
    """
    access_level = logging.INFO if settings.access_log == "on" else logging.DEBUG
    # Quart's documented way to add ASGI middleware (its types are narrower than this plain-ASGI wrapper's).
    app.asgi_app = ObservedApp(app.asgi_app, metrics, access_level=access_level)  # type: ignore[method-assign,assignment]

    @app.before_request
    async def note_matched_route() -> None:
        rule = request.url_rule
        note_route(rule.rule if rule is not None else None)

    if metrics is not None and settings.metrics == "on":

        @app.get("/metrics")
        async def metrics_page() -> Response:
            if origin_policy is not None:  # a hostile page must not read it through DNS rebinding
                origin_policy.check(request.headers.get("Host"), request.headers.get("Origin"))
            return Response(metrics.render(), content_type=CONTENT_TYPE, headers={"Cache-Control": "no-store"})

    if metrics is not None and (bind := metrics_bind(settings)) is not None:

        @app.before_serving
        async def start_metrics_listener() -> None:
            try:
                await app.nursery.start(serve_metrics, metrics, bind)
            except OSError as exc:
                logger.critical("cannot serve metrics on %s: %s", bind, exc, extra={"event": "metrics.bind_failed"})
                raise ConfigError(f"REFSERVER_METRICS={bind}: cannot listen there: {exc}") from exc
