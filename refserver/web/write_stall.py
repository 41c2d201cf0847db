"""The write stall limit: a response write that waits too long for its client ends the connection.

A client that stops reading (its TCP receive window full) makes every write to it block: Hypercorn's trio
worker sends under a *shielded* cancel scope, so no `move_on_after` around an ASGI `send` can interrupt it.
Such a client would pin the handler task, the socket buffers and, on an SSE stream, its session (a stream
that is followed is activity) for as long as it likes.

What does end the write is the connection going away: this wrapper, outermost on the app, notes when each
write began, and one watchdog task per app ends the connections whose write has waited past the limit. It
does that with Hypercorn's own end-of-response signal, `send(None)` (what Hypercorn calls itself when an
app returns): Hypercorn then closes the socket, the blocked write returns, the stream sees the disconnect
and ends, and its session is left to the idle reaper like any other.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

import attrs
import trio
from quart_trio import QuartTrio

from refserver.observability.metrics import WRITE_STALL_STATS, Metrics
from refserver.web.asgi_types import Message, Receive, Scope, Send

logger = logging.getLogger(__name__)

CLOSE_TIMEOUT: Final = 5.0
"""Hypercorn closes a connection without waiting for the client; this only bounds a wedged close."""


@attrs.frozen
class WriteStallStatistics:
    pending_writes: int
    """Response writes handed to Hypercorn and not finished yet."""
    dropped: int
    """Connections ended because one of their writes waited past the limit."""


class _Connection:
    """One HTTP exchange as the watchdog sees it: its raw send, the deadline of its pending write."""

    __slots__ = ("deadline", "dropped", "send")

    def __init__(self, send: Send) -> None:
        self.send = send
        self.deadline = 0.0
        self.dropped = False


class WriteStallGuard:
    """ASGI: `guard = WriteStallGuard(app, limit)`, then `await nursery.start(guard.run)` while serving."""

    def __init__(self, inner: Callable[..., Awaitable[None]], stall_limit: float) -> None:
        self._inner = inner
        self._stall_limit = stall_limit
        # Pending writes by start time; every deadline is start + the same limit, so also by deadline.
        # At most one entry per open connection (an exchange writes one message at a time).
        self._pending: dict[_Connection, None] = {}
        self._dropped = 0

    def statistics(self) -> WriteStallStatistics:
        return WriteStallStatistics(pending_writes=len(self._pending), dropped=self._dropped)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._inner(scope, receive, send)
            return
        connection = _Connection(send)
        pending = self._pending
        limit = self._stall_limit

        async def watched_send(message: Message) -> None:
            if connection.dropped:
                return  # the connection is gone: nothing more reaches the client
            connection.deadline = trio.current_time() + limit
            pending[connection] = None
            try:
                await send(message)
            finally:
                pending.pop(connection, None)

        await self._inner(scope, receive, watched_send)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The watchdog: sleeps until the oldest pending write's deadline, ends the connections past theirs."""
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                now = trio.current_time()
                for connection in list(self._pending):
                    if connection.deadline > now:
                        break
                    del self._pending[connection]
                    connection.dropped = True
                    self._dropped += 1
                    nursery.start_soon(self._close, connection)
                # A write starting after now has its deadline after now + limit: waking then is early enough.
                oldest = next(iter(self._pending), None)
                await trio.sleep_until(oldest.deadline if oldest is not None else now + self._stall_limit)

    async def _close(self, connection: _Connection) -> None:
        logger.info(
            "dropping a client that has not read for %g s",
            self._stall_limit,
            extra={"event": "http.write_stalled"},
        )
        end_of_response: Any = None  # Hypercorn's own "the app is done" message (not an ASGI event)
        with trio.move_on_after(CLOSE_TIMEOUT):
            try:
                await connection.send(end_of_response)
            except Exception:
                # One connection's close must not end the watchdog (and with it every other guard).
                logger.exception("closing a stalled connection failed")


def guard_writes(app: QuartTrio, stall_limit: float, metrics: Metrics | None) -> WriteStallGuard:
    """Put the guard outermost on `app` (after `observe_http`) and run its watchdog while `app` serves."""
    guard = WriteStallGuard(app.asgi_app, stall_limit)
    app.asgi_app = guard  # type: ignore[method-assign,assignment]
    if metrics is not None:
        metrics.add_statistics(guard.statistics, WRITE_STALL_STATS)

    @app.before_serving
    async def start_write_watchdog() -> None:
        await app.nursery.start(guard.run)

    return guard
