"""In-memory backend: the embedded default for a single instance (no Redis)."""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager

import attrs
import trio

from refserver.backend.events import (
    STANDALONE_STREAM,
    Append,
    MemoryEventLogStatistics,
    StoredEvent,
    StreamRead,
    events_gone,
)
from refserver.errors import StreamClosed
from refserver.protocol.jsonrpc import RequestId


@attrs.define
class _StreamHistory:
    events: deque[StoredEvent]
    next_seq: int = 1
    closed: bool = False
    served: bool = False
    """Handed to an SSE response, whose client holds event ids to resume from (see `persist`)."""
    changed: trio.Event = attrs.field(factory=trio.Event)

    def wake(self) -> None:
        self.changed.set()
        self.changed = trio.Event()


@attrs.define
class MemoryEventLog:
    """Per-stream bounded history (memory bound: max_events_per_stream events per live stream; beyond it the
    oldest events are dropped, see `refserver.backend.events`)."""

    max_events_per_stream: int
    max_closed_streams_per_session: int = 64
    """Finished request streams kept for late resumption; the oldest is forgotten beyond this."""
    _streams: dict[tuple[str, str], _StreamHistory] = attrs.field(factory=dict)
    _by_session: dict[str, set[str]] = attrs.field(factory=dict)
    _closed_order: dict[str, deque[str]] = attrs.field(factory=dict)
    _appended: int = 0

    def _history(self, session_id: str, stream_id: str) -> _StreamHistory:
        key = (session_id, stream_id)
        history = self._streams.get(key)
        if history is None:
            history = _StreamHistory(deque(maxlen=self.max_events_per_stream))
            self._streams[key] = history
            self._by_session.setdefault(session_id, set()).add(stream_id)
        return history

    async def open_stream(self, session_id: str, stream_id: str, request_ids: Sequence[RequestId] = ()) -> None:
        self._history(session_id, stream_id)

    async def persist(self, session_id: str, stream_id: str) -> None:
        # One instance: every stream is already where any listener reads it. Only remember that it now
        # needs keeping for a client that resumes.
        history = self._streams.get((session_id, stream_id))
        if history is not None:
            history.served = True

    async def close_if_abandoned(self, session_id: str, stream_id: str) -> bool:
        return False  # one instance: its streams die with it

    async def append(self, session_id: str, stream_id: str, data: str, *, is_response: bool = False) -> int:
        history = self._history(session_id, stream_id)
        if history.closed:
            raise StreamClosed(f"stream {stream_id} is closed")
        return self._record(history, data, is_response)

    async def append_many(self, appends: Iterable[Append]) -> None:
        streams = self._streams
        for session_id, stream_id, data in appends:
            history = streams.get((session_id, stream_id))
            # Only to streams that exist: a session dropped meanwhile must not get a history again.
            if history is not None and not history.closed:
                self._record(history, data, False)
        await trio.lowlevel.checkpoint()

    def _record(self, history: _StreamHistory, data: str, is_response: bool) -> int:
        seq = history.next_seq
        history.next_seq += 1
        history.events.append(StoredEvent(seq, data, is_response))
        self._appended += 1
        history.wake()
        return seq

    async def close_stream(self, session_id: str, stream_id: str) -> None:
        history = self._streams.get((session_id, stream_id))
        if history is not None and not history.closed:
            history.closed = True
            history.wake()
            closed = self._closed_order.setdefault(session_id, deque())
            closed.append(stream_id)
            if len(closed) > self.max_closed_streams_per_session:
                forgotten = closed.popleft()
                self._streams.pop((session_id, forgotten), None)
                self._by_session[session_id].discard(forgotten)

    async def read_after(self, session_id: str, stream_id: str, after_seq: int) -> StreamRead:
        history = self._streams.get((session_id, stream_id))
        if history is None:
            return StreamRead([], closed=True, exists=False)
        if history.next_seq - 1 <= after_seq:
            read = StreamRead([], closed=history.closed)
        else:
            oldest = history.events[0].seq
            if oldest > after_seq + 1:
                raise events_gone(stream_id, after_seq, oldest)
            read = StreamRead([e for e in history.events if e.seq > after_seq], closed=history.closed)
        if (
            history.closed
            and not history.served
            and stream_id != STANDALONE_STREAM
            and all(e.is_response for e in history.events)
        ):
            # Finished, never served as SSE, nothing but results: its reader answers with JSON, which carries no
            # event id, so nobody can ask for it again (the Redis log drops such local streams the same way). Also
            # when this read finds nothing new: the reader took the result before the stream was closed.
            del self._streams[(session_id, stream_id)]
            self._by_session.get(session_id, set()).discard(stream_id)
        return read

    def watching(self, session_id: str, stream_id: str) -> AbstractContextManager[None]:
        return contextlib.nullcontext()  # every stream's history lives here: nothing to register

    async def wait_for_events(self, session_id: str, stream_id: str, after_seq: int) -> None:
        history = self._streams.get((session_id, stream_id))
        if history is None or history.closed or history.next_seq - 1 > after_seq:
            return
        await history.changed.wait()

    async def drop_session(self, session_id: str) -> None:
        self._closed_order.pop(session_id, None)
        for stream_id in self._by_session.pop(session_id, set()):
            history = self._streams.pop((session_id, stream_id))
            history.closed = True
            history.wake()

    def notice(self, session_id: str, stream_id: str, seq: int) -> None:
        self.wake(session_id, stream_id)

    def wake(self, session_id: str, stream_id: str) -> None:
        history = self._streams.get((session_id, stream_id))
        if history is not None:
            history.wake()

    def wake_all(self) -> None:
        for history in self._streams.values():
            history.wake()

    def statistics(self) -> MemoryEventLogStatistics:
        return MemoryEventLogStatistics(streams=len(self._streams), events_appended=self._appended)
