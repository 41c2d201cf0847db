"""Observing the session registry, the resource guard and the Redis backend from the outside.

Subclasses and a watcher instead of edits: the registry logs session creation (its closing is already logged
where it happens), the guard logs accepted tokens at DEBUG, refusals are counted and logged by
`transport.refusals.RefusalPolicy` through `record_auth_failure`, and `watch_redis` turns the backend's counters
into state-change lines.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

import trio

from refserver.backend.redis.connection import RedisConnectionStatistics
from refserver.backend.sessions import BusStatistics, TransportKind
from refserver.errors import AuthServerUnavailable, InsufficientScope, Unauthorized
from refserver.oauth.models import AccessInfo
from refserver.oauth.resource import ResourceGuard
from refserver.observability import context
from refserver.observability.context import LogContext
from refserver.observability.metrics import Metrics
from refserver.registry import SessionRegistry
from refserver.session import Session

logger = logging.getLogger("refserver.registry")
auth_logger = logging.getLogger("refserver.auth")
redis_logger = logging.getLogger("refserver.backend.redis")

REDIS_WATCH_INTERVAL: Final = 1.0
"""How often the Redis counters are compared: a state change is logged within about a second."""
CLIENT_ID_SHOWN: Final = 8
"""Like the authorization server's own log: a client id prefix identifies the client well enough."""


class ObservedRegistry(SessionRegistry):
    """Logs each session it creates; the session's tasks log with its id and without the creating request's."""

    async def create_session(self, kind: TransportKind, owner: str | None = None) -> Session:
        request_context = context.current()
        # Trio copies the current context into the session's task: give it the session's own, not the request's.
        session_context = LogContext()
        token = context.enter(session_context)
        try:
            session = await super().create_session(kind, owner)
        finally:
            context.leave(token)
        session_context.session_id = session.id
        if request_context is not None:
            request_context.session_id = session.id
        logger.info(
            "session created",
            extra={"event": "session.created", "session_id": session.id, "transport": kind, "subject": owner},
        )
        return session


class ObservedGuard(ResourceGuard):
    """The resource guard, logging each accepted token at DEBUG (refusals are logged by the refusal policy)."""

    async def authenticate(self, authorization_header: str | None) -> AccessInfo:
        info = await super().authenticate(authorization_header)
        if auth_logger.isEnabledFor(logging.DEBUG):
            auth_logger.debug(
                "token accepted",
                extra={"event": "auth.accepted", "subject": info.subject, "client": info.client_id[:CLIENT_ID_SHOWN]},
            )
        return info


def auth_failure_reason(exc: Unauthorized | InsufficientScope | AuthServerUnavailable) -> str:
    if isinstance(exc, InsufficientScope):
        return "insufficient_scope"
    if isinstance(exc, AuthServerUnavailable):
        return "auth_server_unavailable"
    return "invalid_token" if exc.error else "missing_token"


def record_auth_failure(metrics: Metrics | None, exc: Unauthorized | InsufficientScope | AuthServerUnavailable) -> None:
    """Count and log one refused MCP request (INFO; WARNING when the authorization server cannot be asked)."""
    reason = auth_failure_reason(exc)
    if metrics is not None:
        metrics.auth_failure(reason)
    level = logging.WARNING if reason == "auth_server_unavailable" else logging.INFO
    if auth_logger.isEnabledFor(level):
        auth_logger.log(
            level,
            "request refused: %s",
            reason,
            extra={"event": "auth.refused", "reason": reason, "detail": exc.message},
        )


async def watch_redis(
    connection_statistics: Callable[[], RedisConnectionStatistics],
    bus_statistics: Callable[[], BusStatistics] | None,
    *,
    interval: float = REDIS_WATCH_INTERVAL,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Log the Redis backend's state changes: pub/sub connected, lost and back; calls failing and succeeding again.

    The counters, not only the current state, are compared, so an outage shorter than `interval` is still logged.
    """
    stats = connection_statistics()
    commands, errors = stats.commands, stats.errors
    failing = False
    bus_lost: bool | None = None  # unknown until the first look
    reconnects = 0
    task_status.started()
    while True:
        if bus_statistics is not None:
            bus = bus_statistics()
            connected, seen_reconnects = bus.connected, bus.reconnects
            if bus_lost is None:
                bus_lost = not connected
                if connected:
                    redis_logger.info("redis pub/sub connected", extra={"event": "redis.bus.connected"})
                else:
                    redis_logger.warning("redis pub/sub not connected", extra={"event": "redis.bus.lost"})
            elif not bus_lost and (not connected or seen_reconnects > reconnects):
                bus_lost = True
                redis_logger.warning("redis pub/sub connection lost", extra={"event": "redis.bus.lost"})
            if bus_lost and connected:
                bus_lost = False
                redis_logger.info("redis pub/sub reconnected", extra={"event": "redis.bus.reconnected"})
            reconnects = seen_reconnects
        stats = connection_statistics()
        new_commands = stats.commands - commands
        new_errors = stats.errors - errors
        commands, errors = commands + new_commands, errors + new_errors
        if new_errors and not failing:
            failing = True
            redis_logger.warning("redis calls failing", extra={"event": "redis.failing", "failed_calls": new_errors})
        elif failing and new_commands > 0 and not new_errors:
            failing = False
            redis_logger.info("redis calls succeed again", extra={"event": "redis.recovered"})
        await trio.sleep(interval)
