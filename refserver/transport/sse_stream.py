"""An SSE response that follows one stream of the event log until it closes.

The handler only reads: the session appends, the log bounds memory, and a slow or vanished client
never blocks the work. A stream ends when its last event is sent, when the session goes away, when a
newer GET supersedes it, or when shutdown starts (then with `retry:` so the client reconnects).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Final

import trio
from quart import Response

from refserver.backend.events import STANDALONE_STREAM, EventLog, StreamRead, format_event_id
from refserver.errors import BackendSlow, BackendUnavailable, EventsGone, SessionGone
from refserver.protocol.sse import HEARTBEAT, encode_event
from refserver.registry import SessionRegistry
from refserver.session import Session

logger = logging.getLogger(__name__)

SLOW_READ_ATTEMPTS: Final = 3
"""Reads a listener tries before a slow backend ends its stream: with Redis's 2 s bound, about 6 s of patience."""

SSE_HEADERS: Final = {
    "Cache-Control": "no-cache, no-transform",
    "X-Accel-Buffering": "no",  # tell reverse proxies not to buffer the stream
}


async def follow_stream(
    registry: SessionRegistry,
    session: Session,
    stream_id: str,
    *,
    after_seq: int,
    heartbeat_interval: float,
    retry_ms: int,
    preamble: tuple[bytes, ...] = (),
    prime: bool = True,
) -> AsyncGenerator[bytes, None]:
    generation = session.attach_listener(stream_id)
    events = registry.events
    try:
        # Event ids are about to reach the client: the stream must be resumable anywhere from now on.
        try:
            await events.persist(session.id, stream_id)
        except SessionGone:
            return  # the session was deleted meanwhile
        except BackendUnavailable:
            pass  # still served from here; resuming elsewhere waits for the backend
        for chunk in preamble:
            yield chunk
        if prime:
            # Priming event: an id to resume from and the reconnection delay, before any message.
            yield encode_event("", event_id=format_event_id(stream_id, after_seq), retry_ms=retry_ms)
        cursor = after_seq
        try:
            with events.watching(session.id, stream_id):
                while True:
                    if registry.draining:
                        yield encode_event(None, retry_ms=retry_ms)
                        return
                    if session.closed:
                        return  # deleted or expired: nothing more will come, and nothing to resume
                    if session.listener_superseded(stream_id, generation):
                        yield encode_event(None, retry_ms=retry_ms)
                        return
                    read = await _read_patiently(events, session.id, stream_id, cursor)
                    for event in read.events:
                        yield encode_event(event.data, event_id=format_event_id(stream_id, event.seq))
                        cursor = event.seq
                        session.mark_delivered(stream_id, cursor)
                    if read.closed or not read.exists:
                        return
                    if not read.events:
                        with trio.move_on_after(heartbeat_interval) as waited:
                            await events.wait_for_events(session.id, stream_id, cursor)
                        if waited.cancelled_caught:
                            session.touch()
                            yield HEARTBEAT
                            if stream_id != STANDALONE_STREAM and not session.runs_stream(stream_id):
                                # Its requests run elsewhere: if that instance died, they get an error and the
                                # stream closes, instead of a client waiting forever.
                                await events.close_if_abandoned(session.id, stream_id)
        except BackendUnavailable as exc:
            # Redis went away: end the response properly instead of breaking it off (with a logged
            # traceback); `retry:` has the client reconnect with Last-Event-ID (503 until Redis is back).
            logger.warning("ending stream %s of session %s: %s", stream_id, session.id, exc)
            yield encode_event(None, retry_ms=retry_ms)
    finally:
        session.detach_listener()


async def _read_patiently(events: EventLog, session_id: str, stream_id: str, after_seq: int) -> StreamRead:
    """A listener's read, given SLOW_READ_ATTEMPTS when Redis is slow rather than gone.

    Ending the response is how a listener reports a backend failure (the client comes back with Last-Event-ID),
    but a read that only missed its bound because Redis or this worker is busy, as when thousands of streams
    open at once, is better tried again than turned into thousands of reconnections. A connection error still
    ends the stream at once.

    A listener that fell further behind than the log keeps (a resumption is checked before it starts) goes on
    from the oldest event kept: its response is already under way, so a gap is all it can be told.
    """
    for _ in range(SLOW_READ_ATTEMPTS - 1):
        try:
            return await _read_skipping_gone(events, session_id, stream_id, after_seq)
        except BackendSlow:
            pass
    return await _read_skipping_gone(events, session_id, stream_id, after_seq)


async def _read_skipping_gone(events: EventLog, session_id: str, stream_id: str, after_seq: int) -> StreamRead:
    while True:
        try:
            return await events.read_after(session_id, stream_id, after_seq)
        except EventsGone as gone:
            # Each retry starts later than the last (the oldest kept only moves forward): this ends as soon as
            # one read is quicker than a whole log's worth of appends.
            logger.warning("stream %s of session %s: listener skipped dropped events", stream_id, session_id)
            after_seq = gone.first_kept - 1


def sse_response(body: AsyncIterator[bytes], headers: dict[str, str] | None = None) -> Response:
    response = Response(body, content_type="text/event-stream", headers={**SSE_HEADERS, **(headers or {})})
    response.timeout = None  # Quart's RESPONSE_TIMEOUT would otherwise cut the stream at 60 s
    return response
