"""What the Redis event log keeps in this instance's memory: request streams not (yet) in Redis, and the waiters
of watched streams with the last events appended here."""

from __future__ import annotations

from collections import deque
from typing import Final

import attrs
import trio

from refserver.backend.events import StoredEvent, StreamRead

RECENT_EVENTS_KEPT: Final = 16
"""Events appended here that a watched stream keeps for its listeners here (memory: at most this many per
listened stream; a listener further behind reads Redis)."""


@attrs.define(eq=False)
class LocalStream:
    """A request stream run here and not (yet) needed elsewhere: its events stay in memory.

    Most requests are answered with plain JSON by the handler on this instance; their events are never
    resumable, so they never touch Redis. The first time a stream is served as SSE it is persisted
    (`persist`), and from then on every event is written through to Redis.
    """

    meta: str
    events: deque[StoredEvent]
    """Bounded like the stream in Redis (`deque(maxlen=max_events)`): the oldest events are dropped."""
    closed: bool = False
    persisted: bool = False
    watched: bool = False


@attrs.define(eq=False)
class StreamWaiters:
    latest: int = 0
    """The newest seq announced, by an append here or by the bus."""
    changed: trio.Event = attrs.field(factory=trio.Event)
    watchers: int = 0
    recent: dict[int, StoredEvent | None] = attrs.field(factory=dict)
    """The last events appended by this instance while the stream was watched, by seq (None: the closing
    marker). A read they cover entirely is answered from here: with one listener per session, a notifier round
    then costs no reads at all, where it cost one or two per listener."""

    def wake(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    def remember(self, seq: int, event: StoredEvent | None) -> None:
        self.recent[seq] = event
        if len(self.recent) > RECENT_EVENTS_KEPT:
            del self.recent[min(self.recent)]

    def forget_and_wake(self) -> None:
        """Make the listeners read Redis again (resync, or an append whose outcome is unknown)."""
        self.recent.clear()
        self.wake()

    def read_recent(self, after_seq: int) -> StreamRead | None:
        """The events after `after_seq` if those appended here are all of them, else None (read Redis).

        Only the newest announced seq needs to be ours: an event written elsewhere is announced on the bus
        and then is the newest one, not in `recent`, so the read goes to Redis until the next append here.
        """
        latest, recent = self.latest, self.recent
        if latest not in recent:
            return None
        if after_seq >= latest:
            return StreamRead([], closed=recent[latest] is None)
        if latest - after_seq > len(recent):
            return None
        events: list[StoredEvent] = []
        for seq in range(after_seq + 1, latest + 1):
            if seq not in recent:
                return None
            event = recent[seq]
            if event is None:
                return StreamRead(events, closed=True)
            events.append(event)
        return StreamRead(events, closed=False)
