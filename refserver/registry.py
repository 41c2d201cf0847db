"""Owns every session nursery on this instance, the idle reaper and the periodic notifiers."""

from __future__ import annotations

import contextlib
import logging
import math
import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

import trio

from refserver.backend.events import STANDALONE_STREAM, EventLog
from refserver.backend.messages import (
    CancelRequest,
    ClientReply,
    EventAppended,
    SessionDeleted,
    SessionMessage,
    StateChanged,
)
from refserver.backend.sessions import Bus, LocalBus, LocalSessionStore, SessionStore, TransportKind, state_from_record
from refserver.errors import BackendUnavailable, SessionNotFound, TooManySessions
from refserver.features.periodic import PeriodicNotifier
from refserver.protocol.jsonrpc import ErrorResponse, Response, encode_message, parse_message
from refserver.protocol.session_state import SessionState
from refserver.session import Session

if TYPE_CHECKING:
    from refserver.dispatch import RequestCore

logger = logging.getLogger(__name__)

SESSION_ID_BYTES: Final = 32
"""256 bits from the OS CSPRNG, URL-safe base64: visible ASCII as the transport spec requires."""

NOT_FOUND: Final = "Session not found: it expired, was deleted, or never existed"
CLEANUP_TIMEOUT: Final = 2.0
"""Bound on the cleanup a closing session does against the backend (unsubscribing)."""
REAPER_MAX_PERIOD: Final = 5.0
"""The reaper looks at least this often, so a session outlives its TTL by at most this much."""


class SessionRegistry:
    def __init__(
        self,
        *,
        events: EventLog,
        core: RequestCore,
        idle_ttl: float,
        max_sessions: int,
        client_request_timeout: float,
        notifiers: Sequence[PeriodicNotifier] = (),
        store: SessionStore | None = None,
        bus: Bus | None = None,
    ) -> None:
        self.events = events
        self.store: SessionStore = store or LocalSessionStore()
        self.bus: Bus = bus or LocalBus()
        self._core = core
        self.idle_ttl = idle_ttl
        self._max_sessions = max_sessions
        self._client_request_timeout = client_request_timeout
        self._notifiers = tuple(notifiers)
        self._sessions: dict[str, Session] = {}
        self._nursery: trio.Nursery | None = None
        self._draining = False
        self._created = 0
        self._adopted = 0
        self._reaped = 0
        self._deleted = 0

    async def run(self, *, task_status: trio.TaskStatus[SessionRegistry] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; on the way out, drain streams and close every session."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._reap_idle_sessions)
                self.bus.set_handler(self._on_bus_message)
                self.bus.set_resync_handler(self._resync)
                if self.bus.distributed:
                    nursery.start_soon(self._keep_shared_sessions_alive)
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

    def _new_session(
        self, session_id: str, kind: TransportKind, owner: str | None, state: SessionState | None = None
    ) -> Session:
        return Session(
            session_id,
            kind,
            events=self.events,
            core=self._core,
            client_request_timeout=self._client_request_timeout,
            owner=owner,
            state=state,
            store=self.store,
            bus=self.bus,
            ttl=self.idle_ttl,
        )

    def _check_capacity(self) -> trio.Nursery:
        if self._nursery is None or self._draining:
            raise TooManySessions("server is shutting down; retry on another instance")
        if len(self._sessions) >= self._max_sessions:
            raise TooManySessions("too many sessions on this instance")
        return self._nursery

    async def create_session(self, kind: TransportKind, owner: str | None = None) -> Session:
        """A new session belonging to `owner` (the token subject; None when auth is off)."""
        nursery = self._check_capacity()
        session = self._new_session(secrets.token_urlsafe(SESSION_ID_BYTES), kind, owner)
        if kind == "legacy":
            # Its id reaches the client before initialize (the `endpoint` event): stored now. A streamable session is
            # stored with its initialize answer (`Session.persist`), which is also the first time its id is told.
            await session.persist()
        self._sessions[session.id] = session
        self._created += 1
        await nursery.start(self._own_session, session)
        return session

    async def _own_session(self, session: Session, *, task_status: trio.TaskStatus[None]) -> None:
        try:
            await session.run(task_status=task_status)
        finally:
            if self._sessions.get(session.id) is session:
                del self._sessions[session.id]
            if self.bus.distributed and session.stored:
                # If the subscriber connection is gone, it resubscribes only what is live anyway.
                with trio.move_on_after(CLEANUP_TIMEOUT, shield=True), contextlib.suppress(BackendUnavailable):
                    await self.bus.unsubscribe(session.id)
            logger.info("session %s closed here (%s)", session.id, session.close_reason)

    async def get(self, session_id: str, *, owner: str | None = None) -> Session:
        """The live session `session_id` if `owner` owns it, from this instance or from the store.

        Another subject's session looks exactly like an unknown one (404): its existence is not leaked.
        """
        local = self._sessions.get(session_id)
        if local is not None and not local.closed:
            if local.owner != owner:
                raise SessionNotFound(NOT_FOUND)
            return local
        if not self.bus.distributed:
            raise SessionNotFound(NOT_FOUND)
        record = await self.store.load(session_id)
        if record is None or record.owner != owner:
            raise SessionNotFound(NOT_FOUND)
        local = self._sessions.get(session_id)  # another request may have brought it here meanwhile
        if local is not None and not local.closed:
            return local
        nursery = self._check_capacity()
        session = self._new_session(session_id, record.kind, record.owner, state_from_record(record))
        self._sessions[session_id] = session
        try:
            await self.bus.subscribe(session_id)
        except BaseException:
            del self._sessions[session_id]
            raise
        self._adopted += 1
        await nursery.start(self._own_session, session)
        return session

    async def delete(self, session_id: str, *, owner: str | None = None) -> None:
        """End the session everywhere: its work on every instance, its streams, its stored state."""
        session = await self.get(session_id, owner=owner)
        if self.bus.distributed and session.stored:  # a refused initialize was never stored: nothing to remove
            await self.store.delete(session_id)
            await self.bus.publish(session_id, SessionDeleted())
        session.close("deleted")
        self._deleted += 1

    async def _on_bus_message(self, session_id: str, message: SessionMessage) -> None:
        if isinstance(message, EventAppended):
            self.events.notice(session_id, message.stream_id, message.seq)
            return
        session = self._sessions.get(session_id)
        if session is None:
            return
        match message:
            case CancelRequest(request_id):
                session.cancel_request(request_id)
            case ClientReply(reply):
                parsed = parse_message(reply)
                if isinstance(parsed, (Response, ErrorResponse)):
                    session.deliver_reply(parsed)
            case SessionDeleted():
                session.close("deleted")
            case StateChanged(record):
                session.apply_record(record)

    async def _resync(self, session_ids: list[str]) -> None:
        """Back from a Redis outage: listeners re-read what they missed, and a session the store lost (Redis
        restarted without persistence) ends here too, so every instance answers 404 alike.

        One pass for all the sessions, not one per session: every listener here is woken once, and the store is
        asked in a few pipelines (after a blip, 10,000 sessions were 10,000 loads and as many scans of the
        listeners, one after another, while the bus read nothing).
        """
        self.events.wake_all()
        try:
            kept = await self.store.existing(session_ids)
        except BackendUnavailable as exc:
            logger.warning("resync: could not check %d sessions in the store: %s", len(session_ids), exc)
            return
        for session_id in session_ids:
            session = self._sessions.get(session_id)
            if session is not None and session.stored and session_id not in kept:
                session.close("gone")

    async def _keep_shared_sessions_alive(self) -> None:
        """Push back the stored expiry of sessions active here, all in one round trip per period."""
        period = self.idle_ttl / 3
        last = trio.current_time()
        while True:
            await trio.sleep(period)
            now = trio.current_time()
            active = [s.id for s in self._sessions.values() if not s.closed and s.active_since(last)]
            last = now
            try:
                await self.store.touch(active, self.idle_ttl)
            except BackendUnavailable:
                logger.warning("could not refresh %d sessions in the store", len(active))

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
            await self._notify_every_session(notifier)

    async def _notify_every_session(self, notifier: PeriodicNotifier) -> None:
        """One round: every session's messages in one `append_many`, composed as the batch is queued.

        Not a task per session: with the Redis log, 10,000 sessions are 10,000 calls in a few pipelines, and a
        listener is woken as soon as its own append is back. A failed round is skipped; the next one tries again.
        """
        appends = (
            (session.id, STANDALONE_STREAM, encode_message(message))
            for session in list(self._sessions.values())
            if not session.closed
            for message in notifier.compose(session.state)
        )
        try:
            await self.events.append_many(appends)
        except BackendUnavailable as exc:
            logger.warning("notifier %s skipped the rest of this round: %s", notifier.name, exc)

    def statistics(self) -> dict[str, Any]:
        in_flight = sum(s.statistics()["in_flight"] for s in self._sessions.values())
        return {
            "sessions": len(self._sessions),
            "in_flight_requests": in_flight,
            "created": self._created,
            "adopted": self._adopted,
            "reaped_idle": self._reaped,
            "deleted": self._deleted,
            "draining": self._draining,
            "idle_ttl": self.idle_ttl if math.isfinite(self.idle_ttl) else None,
        }
