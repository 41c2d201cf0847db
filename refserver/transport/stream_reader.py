"""The one reader of a stream of the event log, used by every response that follows a stream.

It keeps the cursor, holds the log's watch on the stream (announcements are kept only for watched streams),
and reads and waits after the cursor. A JSON answer reads until its results are in, an SSE response follows
the stream until it closes: both with this reader.
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Final

from refserver.backend.events import EventLog, StreamRead
from refserver.errors import BackendSlow, EventsGone

logger = logging.getLogger(__name__)

SLOW_READ_ATTEMPTS: Final = 3
"""Reads a listener tries before a slow backend ends its stream: with Redis's 2 s bound, about 6 s of patience."""


class StreamReader:
    def __init__(
        self, events: EventLog, session_id: str, stream_id: str, *, after_seq: int = 0, attempts: int = 1
    ) -> None:
        self._events = events
        self.session_id = session_id
        self.stream_id = stream_id
        self.cursor = after_seq
        self._attempts = attempts
        self._watch = events.watching(session_id, stream_id)

    def __enter__(self) -> StreamReader:
        self._watch.__enter__()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._watch.__exit__(kind, value, traceback)

    async def read(self) -> StreamRead:
        """The events after the cursor (possibly none); the cursor moves past them."""
        read = await self._read_patiently()
        if read.events:
            self.cursor = read.events[-1].seq
        return read

    async def wait(self) -> None:
        """Return once there is something after the cursor, the stream closed, or it is gone."""
        await self._events.wait_for_events(self.session_id, self.stream_id, self.cursor)

    async def _read_patiently(self) -> StreamRead:
        """Given `attempts` reads when the backend is slow rather than gone.

        Ending the response is how a listener reports a backend failure (the client comes back with Last-Event-ID),
        but a read that only missed its bound because Redis or this worker is busy, as when thousands of streams
        open at once, is better tried again than turned into thousands of reconnections. A connection error still
        ends the stream at once.
        """
        for _ in range(self._attempts - 1):
            try:
                return await self._read_skipping_gone()
            except BackendSlow:
                pass
        return await self._read_skipping_gone()

    async def _read_skipping_gone(self) -> StreamRead:
        """A reader that fell further behind than the log keeps goes on from the oldest event kept.

        Its response is already under way (a resumption is checked before it starts), so a gap is all it can be
        told. Each retry starts later than the last (the oldest kept only moves forward): this ends as soon as one
        read is quicker than a whole log's worth of appends.
        """
        while True:
            try:
                return await self._events.read_after(self.session_id, self.stream_id, self.cursor)
            except EventsGone as gone:
                logger.warning(
                    "stream %s of session %s: reader skipped dropped events", self.stream_id, self.session_id
                )
                self.cursor = gone.first_kept - 1
