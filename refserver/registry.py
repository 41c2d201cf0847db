"""Owns every session nursery on this instance, the idle reaper and the periodic notifiers."""

from __future__ import annotations

import contextlib
import logging
import math
import secrets
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import attrs
import trio

from refserver.backend.events import EventLog
from refserver.errors import SessionNotFound, TooManySessions
from refserver.session import RequestHandler, Session, TransportKind

logger = logging.getLogger(__name__)

SESSION_ID_BYTES: Final = 32
"""256 bits from the OS CSPRNG, URL-safe base64: visible ASCII as the transport spec requires."""

REAPER_MAX_PERIOD: Final = 5.0
"""The reaper looks at least this often, so a session outlives its TTL by at most this much."""


@attrs.frozen
class PeriodicNotifier:
    """Something sent to every ready session every `interval` seconds (on its standalone stream)."""

    name: str
    interval: float
    emit: Callable[[Session], Awaitable[None]]


class SessionRegistry:
    def __init__(
        self,
        *,
        events: EventLog,
        handler: RequestHandler,
        idle_ttl: float,
        max_sessions: int,
        client_request_timeout: float,
        notifiers: Sequence[PeriodicNotifier] = (),
    ) -> None:
        self.events = events
        self._handler = handler
        self.idle_ttl = idle_ttl
        self._max_sessions = max_sessions
        self._client_request_timeout = client_request_timeout
        self._notifiers = tuple(notifiers)
        self._sessions: dict[str, Session] = {}
        self._nursery: trio.Nursery | None = None
        self._draining = False
        self._created = 0
        self._reaped = 0
        self._deleted = 0

    async def run(self, *, task_status: trio.TaskStatus[SessionRegistry] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; on the way out, drain streams and close every session."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._reap_idle_sessions)
                for notifier in self._notifiers:
                    nursery.start_soon(self._run_notifier, notifier)
                task_status.started(self)
                await trio.sleep_forever()
        finally:
            self._nursery = None
            self.begin_drain()
            for session in list(self._sessions.values()):
                session.close("shutdown")

    @property
    def draining(self) -> bool:
        return self._draining

    def begin_drain(self) -> None:
        """Shutdown has started: refuse new sessions and wake every stream so it ends with `retry:`."""
        if not self._draining:
            self._draining = True
            logger.info("draining: %d sessions", len(self._sessions))
            self.events.wake_all()

    # --- sessions ---------------------------------------------------------------------------------

    async def create_session(self, kind: TransportKind, owner: str | None = None) -> Session:
        """A new session belonging to `owner` (the token subject; None when auth is off)."""
        if self._nursery is None or self._draining:
            raise TooManySessions("server is shutting down; retry on another instance")
        if len(self._sessions) >= self._max_sessions:
            raise TooManySessions("too many sessions on this instance")
        session_id = secrets.token_urlsafe(SESSION_ID_BYTES)
        session = Session(
            session_id,
            kind,
            events=self.events,
            handler=self._handler,
            client_request_timeout=self._client_request_timeout,
            owner=owner,
        )
        self._sessions[session_id] = session
        self._created += 1
        await self._nursery.start(self._own_session, session)
        return session

    async def _own_session(self, session: Session, *, task_status: trio.TaskStatus[None]) -> None:
        try:
            await session.run(task_status=task_status)
        finally:
            self._sessions.pop(session.id, None)
            logger.info("session %s closed (%s)", session.id, session.close_reason)

    def get(self, session_id: str, *, owner: str | None = None) -> Session:
        """The live session `session_id` if `owner` owns it.

        Another subject's session looks exactly like an unknown one (404): its existence is not leaked.
        """
        session = self._sessions.get(session_id)
        if session is None or session.closed or session.owner != owner:
            raise SessionNotFound("Session not found: it expired, was deleted, or never existed")
        return session

    def delete(self, session_id: str, *, owner: str | None = None) -> None:
        self.get(session_id, owner=owner).close("deleted")
        self._deleted += 1

    def __iter__(self) -> Any:
        return iter(list(self._sessions.values()))

    def __len__(self) -> int:
        return len(self._sessions)

    async def _reap_idle_sessions(self) -> None:
        period = min(REAPER_MAX_PERIOD, self.idle_ttl / 4)
        while True:
            await trio.sleep(period)
            for session in list(self._sessions.values()):
                if not session.closed and session.is_idle(self.idle_ttl):
                    session.close("idle")
                    self._reaped += 1

    async def _run_notifier(self, notifier: PeriodicNotifier) -> None:
        while True:
            await trio.sleep(notifier.interval)
            for session in list(self._sessions.values()):
                if session.closed:
                    continue
                # The session may close between the check and the send.
                with contextlib.suppress(trio.ClosedResourceError):
                    await notifier.emit(session)

    def statistics(self) -> dict[str, Any]:
        in_flight = sum(s.statistics()["in_flight"] for s in self._sessions.values())
        return {
            "sessions": len(self._sessions),
            "in_flight_requests": in_flight,
            "created": self._created,
            "reaped_idle": self._reaped,
            "deleted": self._deleted,
            "draining": self._draining,
            "idle_ttl": self.idle_ttl if math.isfinite(self.idle_ttl) else None,
        }
