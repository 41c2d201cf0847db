"""ASGI middleware in front of the app: request id, log context, request metrics and the access log line.

It wraps `app.asgi_app`, so it sees every HTTP request (routing failures included), the status Quart sends,
and the end of a streamed body. Per request it does a few dictionary operations and two metric updates; the
access line is built only when its level is enabled (REFSERVER_ACCESS_LOG=on: INFO; off: DEBUG), and a
5xx answer is logged at WARNING whatever that setting.

The separate metrics listener (`REFSERVER_METRICS=host:port`) is a second Hypercorn server in the app's nursery
serving a tiny ASGI app, so a private port can expose `/metrics` while the public one does not.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final
from urllib.parse import parse_qs

import trio

from refserver.observability import context
from refserver.observability.context import LogContext
from refserver.observability.logs import ACCESS_LOGGER, HYPERCORN_ERROR_LOGGER
from refserver.observability.metrics import CONTENT_TYPE, UNMATCHED_ROUTE, Metrics
from refserver.observability.tracing import CARRIED_FIELDS, TRACING

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]

access_logger = logging.getLogger(ACCESS_LOGGER)

SESSION_HEADER: Final = b"mcp-session-id"
REQUEST_ID_HEADER: Final = b"x-request-id"
LEGACY_MESSAGE_PATH: Final = "/message"
METRICS_PATH: Final = "/metrics"


class _Exchange:
    """What the middleware learns about one request while it is answered."""

    __slots__ = ("body_bytes", "headers_after", "start", "status", "streaming")

    def __init__(self, start: float) -> None:
        self.start = start
        self.status: int | None = None
        self.streaming = False
        self.body_bytes = 0
        self.headers_after: float | None = None


def _ids(scope: Scope) -> tuple[str, str | None]:
    """(request id, session id) from one pass over the request headers (and the legacy `sessionId` parameter)."""
    request_id: str | None = None
    session_id: str | None = None
    for key, value in scope["headers"]:
        if key == REQUEST_ID_HEADER:
            request_id = context.sane_request_id(bytes(value).decode("latin-1"))
        elif key == SESSION_HEADER:
            session_id = bytes(value).decode("latin-1")
    if session_id is None and scope.get("path") == LEGACY_MESSAGE_PATH:
        values = parse_qs(bytes(scope.get("query_string", b"")).decode("latin-1")).get("sessionId")
        session_id = values[0] if values else None
    return request_id or context.new_request_id(), context.loggable_session_id(session_id)


_TRACE_HEADERS: Final = {field.encode(): field for field in CARRIED_FIELDS}


def _trace_headers(scope: Scope) -> dict[str, str]:
    found: dict[str, str] = {}
    for key, value in scope.get("headers", ()):
        field = _TRACE_HEADERS.get(bytes(key).lower())
        if field is not None:
            found[field] = bytes(value).decode("latin-1")
    return found


def _is_event_stream(headers: Any) -> bool:
    for key, value in headers:
        if bytes(key).lower() == b"content-type":
            return bytes(value).startswith(b"text/event-stream")
    return False


class ObservedApp:
    """`app.asgi_app = ObservedApp(app.asgi_app, metrics, access_level)`."""

    def __init__(self, inner: Callable[..., Awaitable[None]], metrics: Metrics | None, *, access_level: int) -> None:
        self._inner = inner
        self._metrics = metrics
        self._access_level = access_level

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._inner(scope, receive, send)
            return
        exchange = _Exchange(time.perf_counter())
        request_id, session_id = _ids(scope)
        log_context = LogContext(request_id, session_id)
        echoed = (REQUEST_ID_HEADER, request_id.encode("ascii"))
        metrics = self._metrics
        if metrics is not None:
            metrics.in_flight += 1

        async def observed_send(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                headers = [*message.get("headers", ()), echoed]
                message = {**message, "headers": headers}
                exchange.status = status = int(message["status"])
                exchange.headers_after = seconds = time.perf_counter() - exchange.start
                exchange.streaming = streaming = _is_event_stream(headers)
                if metrics is not None:
                    # Counted before the client can see the answer: a scrape after a response includes it.
                    metrics.in_flight -= 1
                    metrics.observe_request(scope["method"], log_context.route or UNMATCHED_ROUTE, status, seconds)
                    if streaming:
                        metrics.open_streams += 1
            elif kind == "http.response.body":
                exchange.body_bytes += len(message.get("body", b""))
            await send(message)

        token = context.enter(log_context)
        try:
            if TRACING.enabled:
                # The HTTP request's own trace context becomes current: the MCP request spans started under it
                # (also in a session's tasks, which trio starts with this context) are its children.
                with TRACING.attached(_trace_headers(scope)):
                    await self._inner(scope, receive, observed_send)
            else:
                await self._inner(scope, receive, observed_send)
        finally:
            context.leave(token)
            if metrics is not None:
                if exchange.status is None:
                    metrics.in_flight -= 1  # the client left (or the app failed) before any answer
                elif exchange.streaming:
                    metrics.open_streams -= 1
            self._access_log(scope, log_context, exchange)

    def _access_log(self, scope: Scope, log_context: LogContext, exchange: _Exchange) -> None:
        status = exchange.status
        level = logging.WARNING if status is not None and status >= 500 else self._access_level
        if not access_logger.isEnabledFor(level):
            return
        method, path = scope.get("method", ""), scope.get("path", "")
        # The path only: query strings carry OAuth codes, states and session ids.
        # Hypercorn's (and the common log format's) shape: "request line" status bytes.
        shown = status if status is not None else "-"
        line = f'"{method} {path} HTTP/{scope.get("http_version", "1.1")}" {shown} {exchange.body_bytes}'
        client = scope.get("client")
        access_logger.log(
            level,
            line,
            extra={
                "event": "http.access",
                "request_id": log_context.request_id,
                "session_id": log_context.session_id,
                "trace_id": log_context.trace_id,
                "parent_span_id": log_context.parent_span_id,
                "method": method,
                "path": path,
                "route": log_context.route,
                "status": status,
                "duration_ms": round((time.perf_counter() - exchange.start) * 1000, 3),
                "headers_ms": round(exchange.headers_after * 1000, 3) if exchange.headers_after is not None else None,
                "response_bytes": exchange.body_bytes,
                "stream": exchange.streaming,
                "client": client[0] if client else None,
            },
        )


def note_route(rule: str | None) -> None:
    """Called once routing is done (a `before_request` hook): the URL rule becomes the metrics label."""
    current = context.current()
    if current is not None:
        current.route = rule


# --- the separate metrics listener ---------------------------------------------------------------------------


def metrics_asgi_app(metrics: Metrics) -> AsgiApp:
    """`GET /metrics` and nothing else (404), plus the lifespan protocol Hypercorn speaks first."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        if scope.get("path") == METRICS_PATH and scope.get("method") in ("GET", "HEAD"):
            status, body, content_type = 200, metrics.render(), CONTENT_TYPE
        else:
            status, body, content_type = 404, b"not found\n", "text/plain; charset=utf-8"
        headers = [(b"content-type", content_type.encode()), (b"cache-control", b"no-store")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope.get("method") == "HEAD" else body})

    return app


async def serve_metrics(
    metrics: Metrics, bind: str, *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve `/metrics` on `bind` (host:port) until cancelled; started once the socket listens.

    The socket is bound here, before Hypercorn runs, so an address in use fails as a plain OSError.
    """
    from hypercorn.app_wrappers import ASGIWrapper
    from hypercorn.config import Config
    from hypercorn.trio.run import worker_serve

    config = Config()
    config.bind = [bind]
    config.accesslog = None
    config.errorlog = logging.getLogger(HYPERCORN_ERROR_LOGGER)
    config.graceful_timeout = 1.0
    sockets = config.create_sockets()
    for sock in sockets.insecure_sockets:
        sock.listen(config.backlog)
    await worker_serve(ASGIWrapper(metrics_asgi_app(metrics)), config, sockets=sockets, task_status=task_status)  # type: ignore[arg-type]
