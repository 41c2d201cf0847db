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

from refserver.backend.events import STANDALONE_STREAM, format_event_id
from refserver.errors import BackendUnavailable, SessionGone
from refserver.protocol.sse import HEARTBEAT, encode_event
from refserver.registry import SessionRegistry
from refserver.session import Session
from refserver.transport.stream_reader import SLOW_READ_ATTEMPTS, StreamReader

logger = logging.getLogger(__name__)

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
    events = registry.events
    with session.listening(stream_id) as listener:
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
        reader = StreamReader(events, session.id, stream_id, after_seq=after_seq, attempts=SLOW_READ_ATTEMPTS)
        try:
            with reader:
                while True:
                    if registry.draining:
                        yield encode_event(None, retry_ms=retry_ms)
                        return
                    if session.closed:
                        return  # deleted or expired: nothing more will come, and nothing to resume
                    if listener.superseded:
                        yield encode_event(None, retry_ms=retry_ms)
                        return
                    read = await reader.read()
                    for event in read.events:
                        yield encode_event(event.data, event_id=format_event_id(stream_id, event.seq))
                        listener.delivered(event.seq)
                    if read.closed or not read.exists:
                        return
                    if not read.events:
                        with trio.move_on_after(heartbeat_interval) as waited:
                            await reader.wait()
                        if waited.cancelled_caught:
                            session.touch()
                            yield HEARTBEAT
                            if stream_id != STANDALONE_STREAM and not listener.writers_run_here:
                                # Its requests run elsewhere: if that instance died, they get an error and the
                                # stream closes, instead of a client waiting forever.
                                await events.close_if_abandoned(session.id, stream_id)
        except BackendUnavailable as exc:
            # Redis went away: end the response properly instead of breaking it off (with a logged
            # traceback); `retry:` has the client reconnect with Last-Event-ID (503 until Redis is back).
            logger.warning("ending stream %s of session %s: %s", stream_id, session.id, exc)
            yield encode_event(None, retry_ms=retry_ms)


def sse_response(body: AsyncIterator[bytes], headers: dict[str, str] | None = None) -> Response:
    response = Response(body, content_type="text/event-stream", headers={**SSE_HEADERS, **(headers or {})})
    response.timeout = None  # Quart's RESPONSE_TIMEOUT would otherwise cut the stream at 60 s
    return response
