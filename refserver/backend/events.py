"""The event log: every SSE event of every stream, kept so that a client can resume with `Last-Event-ID`.

A stream is identified by (session id, stream id). Event ids on the wire are `<stream id>.<seq>`, so a
resumption names its stream and can only ever replay that stream's events.

Overflow, the same on every backend: a stream's log keeps its newest `max_events` events and drops the oldest
(the stream goes on). A read after a seq that was dropped raises `EventsGone`: the caller decides whether a gap
is acceptable (a live listener that fell behind skips to the oldest kept) or not (a `Last-Event-ID` resumption
is refused with 400).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Final, Protocol

import attrs

from refserver.errors import EventsGone
from refserver.protocol.jsonrpc import RequestId

STANDALONE_STREAM: Final = "get"
"""Stream id of a session's standalone (GET) stream; request streams get random ids."""


Append = tuple[str, str, str]
"""(session id, stream id, data) of one event to record: see `EventLog.append_many`."""


@attrs.frozen
class StoredEvent:
    seq: int
    data: str
    is_response: bool
    """True for a JSON-RPC response/error: lets a POST answer with plain JSON when nothing else was sent."""


@attrs.frozen
class StreamRead:
    events: list[StoredEvent]
    closed: bool
    """No event will ever follow the ones returned."""
    exists: bool = True


@attrs.frozen(kw_only=True)
class EventLogStatistics:
    events_appended: int


@attrs.frozen(kw_only=True)
class MemoryEventLogStatistics(EventLogStatistics):
    streams: int
    """Streams held in memory."""


@attrs.frozen(kw_only=True)
class RedisEventLogStatistics(EventLogStatistics):
    streams_watched: int
    """Streams with listeners on this instance."""
    local_streams: int
    """Request streams kept here until served as SSE."""
    streams_persisted: int
    reads_answered_here: int
    """Reads answered from the events this instance appended, without a Redis read."""


def events_gone(stream_id: str, after_seq: int, first_kept: int) -> EventsGone:
    """The one wording of a refused replay, whichever backend dropped the events."""
    return EventsGone(
        f"Bad Request: the events of stream {stream_id} after {after_seq} are no longer kept "
        f"(the log keeps the newest events of each stream; the oldest kept is {first_kept})",
        first_kept=first_kept,
    )


def format_event_id(stream_id: str, seq: int) -> str:
    return f"{stream_id}.{seq}"


def parse_event_id(event_id: str) -> tuple[str, int] | None:
    stream_id, sep, seq = event_id.rpartition(".")
    if not sep or not stream_id or not seq.isdigit() or len(seq) > 18:
        return None
    return stream_id, int(seq)


class EventLog(Protocol):
    async def open_stream(self, session_id: str, stream_id: str, request_ids: Sequence[RequestId] = ()) -> None:
        """A stream for these requests starts here (so a listener elsewhere can tell if it is abandoned)."""
        ...

    async def persist(self, session_id: str, stream_id: str) -> None:
        """The stream is about to be served as SSE: make it resumable from any instance from now on."""
        ...

    async def close_if_abandoned(self, session_id: str, stream_id: str) -> bool:
        """Close the stream with errors for its requests if the instance running them died."""
        ...

    async def append(self, session_id: str, stream_id: str, data: str, *, is_response: bool = False) -> int:
        """Record one event; return its sequence number (1, 2, ...). Listeners are woken.

        Raises StreamClosed if the stream is known to be closed, SessionGone if the session no longer exists in
        the store.
        """
        ...

    async def append_many(self, appends: Iterable[Append]) -> None:
        """Record one event on each of many streams (a notifier round), as one batch of work.

        Nothing is reported per append: a stream that no longer exists (its session closed) is skipped, and
        each stream's listeners are woken as soon as its own event is recorded.
        """
        ...

    async def close_stream(self, session_id: str, stream_id: str) -> None: ...

    async def read_after(self, session_id: str, stream_id: str, after_seq: int) -> StreamRead:
        """The events after `after_seq` (a bounded number of them: read again for more).

        Raises EventsGone if events after `after_seq` were dropped (see the module's overflow rule).
        """
        ...

    def watching(self, session_id: str, stream_id: str) -> AbstractContextManager[None]:
        """Hold this around reading and waiting: announcements are kept only for watched streams."""
        ...

    async def wait_for_events(self, session_id: str, stream_id: str, after_seq: int) -> None:
        """Return once an event after `after_seq` exists, the stream closed, or it is gone (inside `watching`)."""
        ...

    async def drop_session(self, session_id: str) -> None: ...

    def notice(self, session_id: str, stream_id: str, seq: int) -> None:
        """Another instance appended `seq` to this stream (announced on the bus): wake its listeners."""
        ...

    def wake(self, session_id: str, stream_id: str) -> None:
        """Wake the waiters of one stream (its listeners re-check whether they should stop)."""
        ...

    def wake_all(self) -> None:
        """Wake every waiter (used when shutdown starts, so streams notice at once)."""
        ...

    def statistics(self) -> EventLogStatistics: ...
