"""The event log on Redis: SSE events in Redis Streams, so a listener on any instance reads and resumes any stream.

Every append announces its event on the bus (`scripts.ANNOUNCE_LUA`): to the inbox of every live instance holding
the session, except the instance that made it. A request stream lives in this instance's memory (`streams`) until
it is served as SSE, then in Redis; either way it keeps its newest `max_events` events (the overflow rule of
`refserver.backend.events`).

Appends are group-committed (`RedisConnection.run_script_batched`): the appends queued while one pipeline is in
flight go out together as the next one, so a notification to 10,000 sessions is a few dozen round trips. The
instance that appended learns of its own events from the batch's replies, so it keeps the last few for its
listeners (`StreamWaiters.recent`): a listener here reads Redis only for events written elsewhere, and hears of
them on its inbox.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Final

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from refserver.backend.events import (
    STANDALONE_STREAM,
    Append,
    RedisEventLogStatistics,
    StoredEvent,
    StreamRead,
    events_gone,
)
from refserver.backend.redis.connection import RedisConnection
from refserver.backend.redis.keys import (
    as_bytes,
    events_key,
    holders_key,
    instance_key,
    milliseconds,
    session_key,
    streams_key,
)
from refserver.backend.redis.scripts import APPEND_SCRIPT, CLOSE_ABANDONED_SCRIPT, PERSIST_SCRIPT, run_script
from refserver.backend.redis.streams import LocalStream, StreamWaiters
from refserver.errors import SERVER_ERROR, SessionGone
from refserver.protocol.jsonrpc import ErrorResponse, RequestId, encode_message

logger = logging.getLogger(__name__)

READ_BATCH: Final = 500
"""Events fetched per XRANGE; a listener catching up loops, so memory per read stays bounded."""
LOCAL_CLOSED_KEPT: Final = 1024
"""Finished local streams whose HTTP answer has not picked them up yet, at most (oldest dropped)."""


class RedisEventLog:
    """SSE events in Redis Streams: a listener on any instance reads and resumes any stream."""

    def __init__(self, conn: RedisConnection, *, instance_id: str, max_events: int, ttl: float) -> None:
        self._conn = conn
        self.instance_id = instance_id
        self._max_events = max_events
        self._ttl_ms = milliseconds(ttl)
        self._waiters: dict[tuple[str, str], StreamWaiters] = {}
        self._local: dict[tuple[str, str], LocalStream] = {}
        """Streams run here: open ones (one per in-flight request) and up to LOCAL_CLOSED_KEPT finished ones."""
        self._closed_local: collections.deque[tuple[str, str]] = collections.deque()
        self._appended = 0
        self._persisted = 0
        self._read_here = 0
        self._meta_without_requests = json.dumps({"i": self.instance_id, "r": []})
        """The owner record of a stream not opened here (the standalone one): the same for every append."""
        self._shared_args = (str(max_events).encode(), str(self._ttl_ms).encode(), self.instance_id.encode())
        """The append script's arguments that are the same for every call, encoded once instead of by redis-py."""

    @contextlib.contextmanager
    def watching(self, session_id: str, stream_id: str) -> Iterator[None]:
        """Register interest in a stream before reading it, so no announcement between the read and
        the wait is lost; only watched streams keep state here (memory: one entry per listener)."""
        key = (session_id, stream_id)
        waiters = self._waiters.get(key)
        if waiters is None:
            waiters = self._waiters[key] = StreamWaiters()
        waiters.watchers += 1
        local = self._local.get(key)
        if local is not None:
            local.watched = True
        try:
            yield
        finally:
            waiters.watchers -= 1
            if waiters.watchers == 0 and self._waiters.get(key) is waiters:
                del self._waiters[key]
                local = self._local.get(key)
                if local is not None and local.closed:
                    del self._local[key]  # answered: nothing more will read it here

    async def open_stream(self, session_id: str, stream_id: str, request_ids: Sequence[RequestId] = ()) -> None:
        # No round trip: the stream lives here until it is served as SSE (see `LocalStream`). The
        # standalone stream is written from every instance: it always lives in Redis.
        if stream_id == STANDALONE_STREAM:
            return
        meta = json.dumps({"i": self.instance_id, "r": list(request_ids)}, separators=(",", ":"))
        self._local[(session_id, stream_id)] = LocalStream(meta, collections.deque(maxlen=self._max_events))

    async def persist(self, session_id: str, stream_id: str) -> None:
        """From now on this stream must be resumable from any instance: write it to Redis."""
        key = (session_id, stream_id)
        local = self._local.get(key)
        if local is None or local.persisted:
            return
        keys = [
            events_key(session_id, stream_id),
            streams_key(session_id),
            session_key(session_id),
            holders_key(session_id),
        ]
        written_seq, written_close, first = 0, False, True
        # The stream's requests keep appending here while a write is in flight: write again until a round trip
        # finds nothing new, then switch the stream to Redis with no scheduling point in between.
        while first or local.closed != written_close or (local.events and local.events[-1].seq > written_seq):
            entries: list[Any] = []
            for event in local.events:
                if event.seq > written_seq:
                    entries += [event.seq, event.data, "1" if event.is_response else "0"]
            last_seq = local.events[-1].seq if local.events else 0
            closing = local.closed
            if closing and not written_close:
                entries += [last_seq + 1, "", "c"]
            args = [self._max_events, self._ttl_ms, session_id, stream_id, local.meta, *entries]
            write = functools.partial(run_script, script=PERSIST_SCRIPT, keys=keys, args=args)
            if int(await self._conn.call(write)) < 0:
                raise SessionGone(f"session {session_id} no longer exists")
            written_seq, written_close, first = last_seq, closing, False
        local.persisted = True
        local.events.clear()
        self._persisted += 1
        if local.closed:
            self._local.pop(key, None)

    def _append_locally(self, key: tuple[str, str], local: LocalStream, data: str, flag: str) -> int:
        if flag == "c":
            local.closed = True
            seq = local.events[-1].seq if local.events else 0
            if not local.watched:
                # Nobody has read it yet (a fast answer beats its reader): keep it a while, bounded.
                self._closed_local.append(key)
                while len(self._closed_local) > LOCAL_CLOSED_KEPT:
                    old = self._closed_local.popleft()
                    stale = self._local.get(old)
                    if stale is not None and stale.closed:
                        del self._local[old]
            elif key not in self._waiters:
                del self._local[key]
        else:
            seq = (local.events[-1].seq if local.events else 0) + 1
            local.events.append(StoredEvent(seq, data, flag == "1"))  # beyond max_events, drops the oldest
        self.notice(key[0], key[1], seq)
        return seq

    async def _append(self, session_id: str, stream_id: str, data: str, flag: str) -> int:
        key = (session_id, stream_id)
        local = self._local.get(key)
        if local is not None and not local.persisted:
            return self._append_locally(key, local, data, flag)
        if flag == "c":
            self._local.pop(key, None)
        keys, args, appended = self._script_call(key, local, data, flag)
        # Batched: appends to one stream keep their order (one writer, FIFO), so seqs grow in call order.
        seq = int(await self._conn.run_script_batched(APPEND_SCRIPT, keys, args, on_outcome=appended))
        if seq < 0:
            raise SessionGone(f"session {session_id} no longer exists")
        return seq

    async def append_many(self, appends: Iterable[Append]) -> None:
        """One batch of appends on the write lane (see `RedisConnection.run_script_many`), for a notifier round.

        A stream still kept locally takes its event here; a session gone from Redis makes its append a no-op.
        """

        def calls() -> Iterator[tuple[list[str], list[Any], Callable[[Any], None]]]:
            for session_id, stream_id, data in appends:
                key = (session_id, stream_id)
                local = self._local.get(key)
                if local is not None and not local.persisted:
                    if not local.closed:
                        self._append_locally(key, local, data, "0")
                    continue
                yield self._script_call(key, local, data, "0")

        await self._conn.run_script_many(APPEND_SCRIPT, calls())

    def _script_call(
        self, key: tuple[str, str], local: LocalStream | None, data: str, flag: str
    ) -> tuple[list[str], list[Any], Callable[[Any], None]]:
        """Keys, arguments and outcome callback of one append script call."""
        session_id, stream_id = key
        max_events, ttl_ms, instance = self._shared_args
        meta = local.meta if local is not None else self._meta_without_requests
        args = [data, flag, max_events, ttl_ms, session_id, stream_id, meta, instance]
        event = None if flag == "c" else (data, flag == "1")
        return _append_keys(session_id, stream_id), args, functools.partial(self._appended_here, key, event=event)

    def _appended_here(self, key: tuple[str, str], reply: Any, event: tuple[str, bool] | None) -> None:
        """The batch writer's report on one append, also when its caller stopped waiting.

        The bus does not echo this instance's own announcements back to it (see `RedisBus._dispatch`), so
        this is how listeners here learn of them, and must hear of every append that may have run.
        """
        waiters = self._waiters.get(key)
        if isinstance(reply, Exception):
            if waiters is not None:
                waiters.forget_and_wake()  # it may have run (and been announced elsewhere): ask Redis
            return
        seq = int(reply)
        if seq < 0:
            return  # the session is gone: nothing was written
        self._appended += 1
        if waiters is not None:
            waiters.remember(seq, None if event is None else StoredEvent(seq, *event))
        self.notice(key[0], key[1], seq)

    async def append(self, session_id: str, stream_id: str, data: str, *, is_response: bool = False) -> int:
        return await self._append(session_id, stream_id, data, "1" if is_response else "0")

    async def close_stream(self, session_id: str, stream_id: str) -> None:
        await self._append(session_id, stream_id, "", "c")

    async def close_if_abandoned(self, session_id: str, stream_id: str) -> bool:
        """If the instance running this stream's requests died, answer them with an error and close it.

        The requests are lost (they were executing there); the client gets a definite error instead of
        a stream that never ends. Idempotent: a stream already closed is left alone.
        """

        async def owner_of(r: Redis) -> tuple[str | None, list[RequestId], bool]:
            raw = await r.hget(streams_key(session_id), stream_id)
            if raw is None:
                return None, [], True
            meta = json.loads(as_bytes(raw))
            alive = bool(await r.exists(instance_key(meta["i"])))
            return meta["i"], meta.get("r", []), alive

        owner, request_ids, alive = await self._conn.call(owner_of)
        if owner is None or alive:
            return False
        finals = [
            encode_message(ErrorResponse(rid, SERVER_ERROR, "Request lost: the instance executing it stopped"))
            for rid in request_ids
        ]
        args = [self._max_events, self._ttl_ms, session_id, stream_id, *finals]
        keys = [events_key(session_id, stream_id), holders_key(session_id)]
        closed = bool(await self._conn.call(lambda r: run_script(r, CLOSE_ABANDONED_SCRIPT, keys, args)))
        if closed:
            logger.warning("stream %s of session %s abandoned by instance %s: closed", stream_id, session_id, owner)
        return closed

    async def read_after(self, session_id: str, stream_id: str, after_seq: int) -> StreamRead:
        local = self._local.get((session_id, stream_id))
        if local is not None and not local.persisted:
            if local.events and local.events[0].seq > after_seq + 1:
                raise events_gone(stream_id, after_seq, local.events[0].seq)
            return StreamRead([e for e in local.events if e.seq > after_seq], closed=local.closed)
        waiters = self._waiters.get((session_id, stream_id))
        if waiters is not None:
            recent = waiters.read_recent(after_seq)
            if recent is not None:
                self._read_here += 1
                return recent
        key = events_key(session_id, stream_id)
        # Decided before the read: a close during it removes the local record (the race of an answer
        # finishing while its listener reads).
        known = stream_id == STANDALONE_STREAM or (session_id, stream_id) in self._local

        def read(pipe: Pipeline) -> None:
            pipe.xrange(key, min=f"(0-{after_seq}", max="+", count=READ_BATCH)
            if not known:  # else it exists whatever Redis says: no need to ask
                pipe.exists(key)
                pipe.hexists(streams_key(session_id), stream_id)  # persisted before its first event

        # Batched: one append wakes every listener of its stream at once, and a notifier round wakes one
        # listener per session; their reads share pipelines instead of queueing for the 8 pooled sockets.
        entries, *existence = await self._conn.read_batched(read)
        if entries:
            # Seqs have no holes (every entry takes the next one): a first entry past `after_seq + 1` means
            # MAXLEN dropped the events in between.
            first = int(entries[0][0].split(b"-", 1)[1])
            if first > after_seq + 1:
                raise events_gone(stream_id, after_seq, first)
        events: list[StoredEvent] = []
        closed = False
        for entry_id, fields in entries:
            seq = int(entry_id.split(b"-", 1)[1])
            if b"c" in fields:
                closed = True
                break
            events.append(StoredEvent(seq, fields[b"d"].decode(), fields[b"r"] == b"1"))
        # The standalone stream exists as long as its session does, and a stream opened here (or persisted
        # elsewhere) exists before its first event creates the key.
        return StreamRead(events, closed=closed, exists=known or any(existence))

    async def wait_for_events(self, session_id: str, stream_id: str, after_seq: int) -> None:
        waiters = self._waiters.get((session_id, stream_id))
        if waiters is None:
            return  # not watched (or just dropped): let the caller read again
        if waiters.latest > after_seq:
            return
        await waiters.changed.wait()

    def notice(self, session_id: str, stream_id: str, seq: int) -> None:
        """Something was appended (here, or on another instance and announced on the bus)."""
        waiters = self._waiters.get((session_id, stream_id))
        # Nobody listens here: nothing to remember. Nothing newer than already announced (an announcement
        # overtaken by a later one): waking the listeners would only cost each of them a read that finds nothing.
        if waiters is not None and seq > waiters.latest:
            waiters.latest = seq
            waiters.wake()

    async def drop_session(self, session_id: str) -> None:
        """Forget this instance's local view; the Redis keys belong to the session's TTL or DELETE."""
        for key in [k for k in self._waiters if k[0] == session_id]:
            waiters = self._waiters[key]
            waiters.forget_and_wake()
            if waiters.watchers == 0:
                del self._waiters[key]  # watched entries go when their last watcher leaves
        for key in [k for k in self._local if k[0] == session_id]:
            del self._local[key]

    # Explicit wake-ups (a resync after a bus outage, a superseded listener, shutdown) make listeners read
    # Redis: what they missed is there, not in `recent`.

    def wake(self, session_id: str, stream_id: str) -> None:
        waiters = self._waiters.get((session_id, stream_id))
        if waiters is not None:
            waiters.forget_and_wake()

    def wake_all(self) -> None:
        for waiters in list(self._waiters.values()):
            waiters.forget_and_wake()

    def statistics(self) -> RedisEventLogStatistics:
        return RedisEventLogStatistics(
            streams_watched=len(self._waiters),
            local_streams=len(self._local),
            events_appended=self._appended,
            streams_persisted=self._persisted,
            reads_answered_here=self._read_here,
        )


def _append_keys(session_id: str, stream_id: str) -> list[str]:
    return [
        events_key(session_id, stream_id),
        streams_key(session_id),
        session_key(session_id),
        holders_key(session_id),
    ]
