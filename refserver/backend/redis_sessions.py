"""Sessions, the bus and the event log on Redis: what lets any instance serve any session.

Key layout (prefix `refserver:`; every key has a TTL, refreshed while the session is active):

    session:{id}                JSON SessionRecord                                 idle TTL
    session:{id}:streams        hash stream id -> instance that opened it          idle TTL
    session:{id}:holders        set of the instances holding the session           idle TTL
    events:{id}:{stream}        Redis Stream of SSE events, ids 0-<seq>, ~MAXLEN   idle TTL (from the last append)
    instance:{instance id}      liveness of an instance                            INSTANCE_TTL

Channels: each instance subscribes to two, whatever the number of sessions: `bus` (messages for every instance,
such as revocations) and its own `inbox:{instance id}`. A message about a session, {"t": "event" | "cancel" |
"reply" | "delete" | "state", "sid": session id, ...}, is published by a script to the inbox of every instance in
the session's `holders` set (an instance joins the set when it creates or adopts the session, and leaves it when
the session closes there). An append does not announce its event to the instance that made it.

Appends are group-committed (`RedisConnection.run_script_batched`): the appends queued while one pipeline is in
flight go out together as the next one, so a notification to 10,000 sessions is a few dozen round trips. The
instance that appended learns of its own events from the batch's replies, so it keeps the last few for its
listeners (`_StreamWaiters.recent`): a listener here reads Redis only for events written elsewhere, and hears of
them on its inbox.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any, Final

import attrs
import trio
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline, PubSub

from refserver.backend.events import STANDALONE_STREAM, Append, StoredEvent, StreamRead
from refserver.backend.redis import BatchedScript, RedisConnection
from refserver.backend.sessions import BusHandler, GlobalHandler, ResyncHandler, SessionRecord
from refserver.errors import SERVER_ERROR, BackendUnavailable
from refserver.protocol.jsonrpc import ErrorResponse, RequestId, encode_message

logger = logging.getLogger(__name__)

PREFIX: Final = "refserver:"
GLOBAL_CHANNEL: Final = f"{PREFIX}bus"
"""Messages for every instance (revocations), on the same subscriber connection as the instance's inbox."""
INBOX_PREFIX: Final = f"{PREFIX}inbox:"
READ_BATCH: Final = 500
"""Events fetched per XRANGE; a listener catching up loops, so memory per read stays bounded."""
RECENT_EVENTS_KEPT: Final = 16
"""Events appended here that a watched stream keeps for its listeners here (memory: at most this many per
listened stream; a listener further behind reads Redis)."""
POLL_TIMEOUT: Final = 0.05
"""The subscriber waits at most this long for a message on the asyncio side before handing back control."""
RECONNECT_DELAY: Final = 0.5
"""Pause between attempts to re-open the subscriber connection while Redis is down."""
SUBSCRIBE_TIMEOUT: Final = 5.0
"""Joining a session's holders waits at most this long for the subscriber connection to be up."""
INSTANCE_TTL: Final = 10.0
"""An instance that has not refreshed its liveness key for this long is considered dead."""
INSTANCE_REFRESH: Final = 3.0
REJOIN_BATCH: Final = 1000
"""Sessions rejoined per pipeline after a reconnect."""
EXISTS_BATCH: Final = 1000
"""Sessions checked per pipeline by `RedisSessionStore.existing`."""


def session_key(session_id: str) -> str:
    return f"{PREFIX}session:{session_id}"


def streams_key(session_id: str) -> str:
    return f"{PREFIX}session:{session_id}:streams"


def events_key(session_id: str, stream_id: str) -> str:
    return f"{PREFIX}events:{session_id}:{stream_id}"


def holders_key(session_id: str) -> str:
    return f"{PREFIX}session:{session_id}:holders"


def inbox_channel(instance_id: str) -> str:
    return f"{INBOX_PREFIX}{instance_id}"


def instance_key(instance_id: str) -> str:
    return f"{PREFIX}instance:{instance_id}"


def _as_bytes(value: bytes | str) -> bytes:
    # The client is configured without decode_responses: replies are bytes.
    return value if isinstance(value, bytes) else value.encode()


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class RedisSessionStore:
    def __init__(self, conn: RedisConnection) -> None:
        self._conn = conn

    async def save(self, record: SessionRecord, ttl: float) -> None:
        await self._conn.call(lambda r: r.set(session_key(record.session_id), record.to_json(), px=_ms(ttl)))

    async def load(self, session_id: str) -> SessionRecord | None:
        raw = await self._conn.call(lambda r: r.get(session_key(session_id)))
        return SessionRecord.from_json(_as_bytes(raw)) if raw else None

    async def touch(self, session_ids: list[str], ttl: float) -> None:
        if not session_ids:
            return

        async def pipeline(r: Redis) -> None:
            async with r.pipeline(transaction=False) as pipe:
                for session_id in session_ids:
                    pipe.pexpire(session_key(session_id), _ms(ttl))
                    pipe.pexpire(streams_key(session_id), _ms(ttl))
                    pipe.pexpire(events_key(session_id, STANDALONE_STREAM), _ms(ttl))
                    pipe.pexpire(holders_key(session_id), _ms(ttl))
                await pipe.execute()

        await self._conn.call(pipeline)

    async def existing(self, session_ids: list[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(session_ids), EXISTS_BATCH):
            chunk = session_ids[start : start + EXISTS_BATCH]

            async def check(r: Redis, chunk: list[str] = chunk) -> list[Any]:
                async with r.pipeline(transaction=False) as pipe:
                    for session_id in chunk:
                        pipe.exists(session_key(session_id))
                    return list(await pipe.execute())

            replies = await self._conn.call(check)
            found.update(session_id for session_id, exists in zip(chunk, replies, strict=True) if exists)
        return found

    async def delete(self, session_id: str) -> None:
        async def remove(r: Redis) -> None:
            stream_ids = [_as_bytes(s) for s in await r.hkeys(streams_key(session_id))]
            keys = [session_key(session_id), streams_key(session_id), events_key(session_id, STANDALONE_STREAM)]
            keys += [events_key(session_id, s.decode()) for s in stream_ids]
            await r.delete(*keys)

        await self._conn.call(remove)


# Append one event (or the closing marker) to a stream, refresh its TTL, record which instance opened
# the stream, and tell every instance holding the session: atomic, and batched with the other appends
# queued at the same time (group commit: one pipeline of EVALSHAs, see `RedisConnection.run_script_batched`).
# Nothing is written for a session that no longer exists, so a DELETE racing with running work leaves no key.
_ANNOUNCE_LUA: Final = f"""
local function announce(holders, skip, message)
  for _, holder in ipairs(redis.call('SMEMBERS', holders)) do
    if holder ~= skip then
      if redis.call('EXISTS', '{PREFIX}instance:' .. holder) == 1 then
        redis.call('PUBLISH', '{INBOX_PREFIX}' .. holder, message)
      else
        redis.call('SREM', holders, holder)
      end
    end
  end
end
"""
"""Publish `message` to the inbox of every live instance holding the session, except `skip`; forget dead ones.

An instance that died without leaving (SIGKILL) would otherwise stay in the holders sets of sessions that live
on elsewhere, and every later message would be published once more for it, across every redeploy.
"""

_APPEND_SCRIPT: Final = BatchedScript(
    _ANNOUNCE_LUA
    + """
if redis.call('EXISTS', KEYS[3]) == 0 then return -1 end
local fields
if ARGV[2] == 'c' then fields = {'c', '1'} else fields = {'d', ARGV[1], 'r', ARGV[2]} end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '0-*', unpack(fields))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('HSETNX', KEYS[2], ARGV[6], ARGV[7])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
local seq = string.sub(id, 3)
announce(KEYS[4], ARGV[8],
  '{"t":"event","sid":"' .. ARGV[5] .. '","s":"' .. ARGV[6] .. '","n":' .. seq .. ',"i":"' .. ARGV[8] .. '"}')
return seq
"""
)

# Close a stream only if it is still open, after final events (errors for the lost requests).
_CLOSE_ABANDONED_LUA: Final = (
    _ANNOUNCE_LUA
    + """
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #last > 0 and last[1][2][1] == 'c' then return 0 end
for i = 5, #ARGV do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '0-*', 'd', ARGV[i], 'r', '1')
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '0-*', 'c', '1')
redis.call('PEXPIRE', KEYS[1], ARGV[2])
announce(KEYS[2], '', '{"t":"event","sid":"' .. ARGV[3] .. '","s":"' .. ARGV[4] .. '","n":' .. string.sub(id, 3) .. '}')
return 1
"""
)


# Write a stream that was kept locally so far, with the sequence numbers already handed out (so ids a
# client may hold stay valid), then continue as any stream: TTL, owner record, announcement.
_PERSIST_LUA: Final = (
    _ANNOUNCE_LUA
    + """
if redis.call('EXISTS', KEYS[3]) == 0 then return -1 end
local last = 0
for i = 6, #ARGV, 3 do
  if ARGV[i + 2] == 'c' then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '0-' .. ARGV[i], 'c', '1')
  else
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '0-' .. ARGV[i], 'd', ARGV[i + 1], 'r', ARGV[i + 2])
  end
  last = tonumber(ARGV[i])
end
if last > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  announce(KEYS[4], '', '{"t":"event","sid":"' .. ARGV[3] .. '","s":"' .. ARGV[4] .. '","n":' .. last .. '}')
end
redis.call('HSETNX', KEYS[2], ARGV[4], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return last
"""
)

# A message about a session, for every instance holding it (this one included).
_PUBLISH_SCRIPT: Final = BatchedScript(_ANNOUNCE_LUA + "announce(KEYS[1], '', ARGV[1])\nreturn 1\n")

LOCAL_CLOSED_KEPT: Final = 1024
"""Finished local streams whose HTTP answer has not picked them up yet, at most (oldest dropped)."""


@attrs.define(eq=False)
class _LocalStream:
    """A request stream run here and not (yet) needed elsewhere: its events stay in memory.

    Most requests are answered with plain JSON by the handler on this instance; their events are never
    resumable, so they never touch Redis. The first time a stream is served as SSE it is persisted
    (`persist`), and from then on every event is written through to Redis.
    """

    meta: str
    events: list[StoredEvent] = attrs.field(factory=list)
    closed: bool = False
    persisted: bool = False
    watched: bool = False


@attrs.define(eq=False)
class _StreamWaiters:
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


class RedisEventLog:
    """SSE events in Redis Streams: a listener on any instance reads and resumes any stream."""

    def __init__(self, conn: RedisConnection, *, instance_id: str, max_events: int, ttl: float) -> None:
        self._conn = conn
        self.instance_id = instance_id
        self._max_events = max_events
        self._ttl_ms = _ms(ttl)
        self._waiters: dict[tuple[str, str], _StreamWaiters] = {}
        self._local: dict[tuple[str, str], _LocalStream] = {}
        """Streams run here: open ones (one per in-flight request) and up to LOCAL_CLOSED_KEPT finished ones."""
        self._closed_local: collections.deque[tuple[str, str]] = collections.deque()
        self._appended = 0
        self._persisted = 0
        self._read_here = 0
        self._meta_without_requests = json.dumps({"i": self.instance_id, "r": []})
        # The append script's arguments that are the same for every call, encoded once instead of by redis-py.
        self._shared_args = (str(max_events).encode(), str(self._ttl_ms).encode(), self.instance_id.encode())
        """The owner record of a stream not opened here (the standalone one): the same for every append."""

    @contextlib.contextmanager
    def watching(self, session_id: str, stream_id: str) -> Iterator[None]:
        """Register interest in a stream before reading it, so no announcement between the read and
        the wait is lost; only watched streams keep state here (memory: one entry per listener)."""
        key = (session_id, stream_id)
        waiters = self._waiters.get(key)
        if waiters is None:
            waiters = self._waiters[key] = _StreamWaiters()
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
        # No round trip: the stream lives here until it is served as SSE (see `_LocalStream`). The
        # standalone stream is written from every instance: it always lives in Redis.
        if stream_id == STANDALONE_STREAM:
            return
        meta = json.dumps({"i": self.instance_id, "r": list(request_ids)}, separators=(",", ":"))
        self._local[(session_id, stream_id)] = _LocalStream(meta)

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
            write = functools.partial(_run_script, script=_PERSIST_LUA, keys=keys, args=args)
            if int(await self._conn.call(write)) < 0:
                raise trio.ClosedResourceError(f"session {session_id} no longer exists")
            written_seq, written_close, first = last_seq, closing, False
        local.persisted = True
        local.events.clear()
        self._persisted += 1
        if local.closed:
            self._local.pop(key, None)

    def _append_locally(self, key: tuple[str, str], local: _LocalStream, data: str, flag: str) -> int:
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
            if len(local.events) >= self._max_events:
                raise trio.ClosedResourceError("stream history is full")  # bounded like a Redis stream
            seq = (local.events[-1].seq if local.events else 0) + 1
            local.events.append(StoredEvent(seq, data, flag == "1"))
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
        seq = int(await self._conn.run_script_batched(_APPEND_SCRIPT, keys, args, on_outcome=appended))
        if seq < 0:
            raise trio.ClosedResourceError(f"session {session_id} no longer exists")
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
                        with contextlib.suppress(trio.ClosedResourceError):  # its history is full: skipped
                            self._append_locally(key, local, data, "0")
                    continue
                yield self._script_call(key, local, data, "0")

        await self._conn.run_script_many(_APPEND_SCRIPT, calls())

    def _script_call(
        self, key: tuple[str, str], local: _LocalStream | None, data: str, flag: str
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
            meta = json.loads(_as_bytes(raw))
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
        closed = bool(await self._conn.call(lambda r: _run_script(r, _CLOSE_ABANDONED_LUA, keys, args)))
        if closed:
            logger.warning("stream %s of session %s abandoned by instance %s: closed", stream_id, session_id, owner)
        return closed

    async def read_after(self, session_id: str, stream_id: str, after_seq: int) -> StreamRead:
        local = self._local.get((session_id, stream_id))
        if local is not None and not local.persisted:
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

    def statistics(self) -> dict[str, Any]:
        return {
            "streams_watched": len(self._waiters),
            "local_streams": len(self._local),
            "events_appended": self._appended,
            "streams_persisted": self._persisted,
            "reads_answered_here": self._read_here,  # from `recent`, without a Redis read
        }


def _append_keys(session_id: str, stream_id: str) -> list[str]:
    return [
        events_key(session_id, stream_id),
        streams_key(session_id),
        session_key(session_id),
        holders_key(session_id),
    ]


async def _run_script(r: Redis, script: str, keys: list[str], args: list[Any]) -> Any:
    return await r.eval(script, len(keys), *keys, *args)


class RedisBus:
    """One subscriber connection per instance, on two channels (all instances, and this one's inbox), reconnecting
    by itself; a session's messages reach the instances in its holders set."""

    distributed = True

    def __init__(self, conn: RedisConnection, *, instance_id: str, holder_ttl: float) -> None:
        self._conn = conn
        self.instance_id = instance_id
        self._inbox = inbox_channel(instance_id)
        self._holder_ttl_ms = _ms(holder_ttl)
        self._own_echo_suffix = f',"i":"{instance_id}"}}'.encode()
        self._handler: BusHandler | None = None
        self._global_handler: GlobalHandler | None = None
        self._resync_handler: ResyncHandler | None = None
        self._held: set[str] = set()
        """Sessions this instance is in the holders set of (to rejoin and resync after a reconnect)."""
        self._connected = trio.Event()
        self._received = 0
        self._own_echoes = 0
        self._published = 0
        self._reconnects = 0
        self._lapses = 0

    def set_handler(self, handler: BusHandler) -> None:
        self._handler = handler

    def set_global_handler(self, handler: GlobalHandler) -> None:
        """Messages for every instance (revocations); {"t": "resync"} after a reconnect."""
        self._global_handler = handler

    def set_resync_handler(self, handler: ResyncHandler) -> None:
        """Called after a reconnect with every session held here: what was published meanwhile is lost."""
        self._resync_handler = handler

    async def publish_global(self, message: dict[str, Any]) -> None:
        self._published += 1
        payload = json.dumps(message, separators=(",", ":"))
        await self._conn.call(lambda r: r.publish(GLOBAL_CHANNEL, payload))

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def run(self, *, task_status: trio.TaskStatus[RedisBus] = trio.TASK_STATUS_IGNORED) -> None:
        """Read messages until cancelled; while Redis is away, retry, then rejoin and resync every session held."""
        started = False
        async with trio.open_nursery() as nursery:
            with contextlib.suppress(BackendUnavailable):
                await self._refresh_liveness()  # before any session joins a holders set: a live instance is kept
            nursery.start_soon(self._keep_instance_alive)
            while True:
                try:
                    pubsub = await self._conn.call(_new_pubsub)
                    watch = _ReconnectWatch()
                    try:
                        await self._conn.call(_on_pubsub(pubsub.subscribe, GLOBAL_CHANNEL, self._inbox))
                        await self._conn.call(_on_pubsub(watch.watch, pubsub))
                        if started:
                            # Redis may have restarted empty: say this instance is alive (else the next message
                            # drops it as dead) and join the holders sets again before the resync, so nothing
                            # published from now on misses it.
                            await self._refresh_liveness()
                            await self._rejoin(list(self._held))
                        self._connected.set()
                        if not started:
                            started = True
                            task_status.started(self)
                        else:
                            # Whatever was published while we were away is in Redis: re-read it.
                            if self._global_handler is not None:
                                await self._global_handler({"t": "resync"})
                            if self._resync_handler is not None:
                                await self._resync_handler(list(self._held))
                        await self._read(pubsub, watch)
                    finally:
                        self._connected = trio.Event()
                        with trio.move_on_after(1.0, shield=True):
                            with contextlib.suppress(BackendUnavailable):
                                await self._conn.call(_on_pubsub(watch.unwatch))
                                await self._conn.call(_on_pubsub(pubsub.aclose))
                except BackendUnavailable as exc:
                    if not started:
                        started = True
                        task_status.started(self)
                    self._reconnects += 1
                    logger.warning("redis bus disconnected (%s); reconnecting", exc)
                    await trio.sleep(RECONNECT_DELAY)

    async def _rejoin(self, session_ids: list[str]) -> None:
        ttl_ms, instance = self._holder_ttl_ms, self.instance_id
        for start in range(0, len(session_ids), REJOIN_BATCH):
            chunk = session_ids[start : start + REJOIN_BATCH]

            async def join(r: Redis, chunk: list[str] = chunk) -> None:
                async with r.pipeline(transaction=False) as pipe:
                    for session_id in chunk:
                        pipe.sadd(holders_key(session_id), instance)
                        pipe.pexpire(holders_key(session_id), ttl_ms)
                    await pipe.execute()

            await self._conn.call(join)

    async def _read(self, pubsub: PubSub, watch: _ReconnectWatch) -> None:
        while True:
            # Everything already received, in one hop to the asyncio side (one hop per message cannot keep
            # up with a busy cluster).
            for message in await self._conn.call(lambda _r: _receive_batch(pubsub)):
                await self._dispatch(message)
            if watch.reconnected:
                # redis-py reconnected the subscriber by itself (and resubscribed it): Redis may have restarted
                # empty, and whatever was published meanwhile is lost. Start over, with a rejoin and a resync.
                raise BackendUnavailable("the subscriber connection was re-established")

    async def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind not in ("message", b"message"):
            return  # subscription confirmations
        self._received += 1
        data = message.get("data")
        if isinstance(data, bytes) and data.endswith(self._own_echo_suffix):
            # Appends are not announced to the instance that made them; an echo would be dropped undecoded.
            self._own_echoes += 1
            return
        try:
            payload = json.loads(message["data"])
        except ValueError:
            logger.warning("ignoring a malformed bus message")
            return
        name = message["channel"].decode() if isinstance(message.get("channel"), bytes) else message.get("channel")
        if name == GLOBAL_CHANNEL:
            if self._global_handler is not None:
                await self._global_handler(payload)
        elif self._handler is not None and isinstance(payload.get("sid"), str):
            await self._handler(payload["sid"], payload)

    async def subscribe(self, session_id: str) -> None:
        """Join the session's holders: once this returns, every message about the session reaches this instance."""
        if not self._connected.is_set():
            # Joined while the subscriber is away, messages would be lost until it is back: wait for it a while.
            with trio.move_on_after(SUBSCRIBE_TIMEOUT):
                await self._connected.wait()
            if not self._connected.is_set():
                raise BackendUnavailable("the Redis bus is not connected")
        key, instance, ttl_ms = holders_key(session_id), self.instance_id, self._holder_ttl_ms

        def join(pipe: Pipeline) -> None:
            pipe.sadd(key, instance)
            pipe.pexpire(key, ttl_ms)

        self._held.add(session_id)
        try:
            await self._conn.write_batched(join)
        except BaseException:
            self._held.discard(session_id)
            raise

    async def unsubscribe(self, session_id: str) -> None:
        self._held.discard(session_id)
        key, instance = holders_key(session_id), self.instance_id
        await self._conn.write_batched(lambda pipe: pipe.srem(key, instance))

    async def publish(self, session_id: str, message: dict[str, Any]) -> None:
        payload = json.dumps({**message, "sid": session_id}, separators=(",", ":"))
        self._published += 1
        # On the write lane: after this instance's appends queued before it (a reply follows the events before it).
        await self._conn.run_script_batched(_PUBLISH_SCRIPT, [holders_key(session_id)], [payload])

    async def _refresh_liveness(self) -> bool:
        """Refresh this instance's liveness key; True if it had lapsed (or never existed)."""
        key = instance_key(self.instance_id)
        previous = await self._conn.call(lambda r: r.set(key, b"1", px=_ms(INSTANCE_TTL), get=True))
        return previous is None

    async def _keep_instance_alive(self) -> None:
        while True:
            await trio.sleep(INSTANCE_REFRESH)
            try:
                lapsed = await self._refresh_liveness()
            except BackendUnavailable:
                continue
            if lapsed and self.connected:
                # Stalled (or cut off) longer than INSTANCE_TTL: other instances took this one for dead and may
                # have dropped it from holders sets, so messages were lost. Join again, then resync.
                logger.warning("instance liveness lapsed; rejoining %d sessions", len(self._held))
                self._lapses += 1
                with contextlib.suppress(BackendUnavailable):
                    await self._rejoin(list(self._held))
                    if self._resync_handler is not None:
                        await self._resync_handler(list(self._held))

    def statistics(self) -> dict[str, Any]:
        return {
            "connected": self.connected,
            "channels": 2 if self.connected else 0,
            "sessions_held": len(self._held),
            "received": self._received,
            "own_echoes_ignored": self._own_echoes,
            "published": self._published,
            "reconnects": self._reconnects,
            "liveness_lapses": self._lapses,
        }


class _ReconnectWatch:
    """Notices redis-py re-establishing a pub/sub connection by itself (its retry on connection errors)."""

    def __init__(self) -> None:
        self.reconnected = False
        self._connection: Any = None

    async def watch(self, pubsub: PubSub) -> None:
        self._connection = pubsub.connection
        if self._connection is not None:
            self._connection.register_connect_callback(self.on_connect)  # kept as a weak method

    async def unwatch(self) -> None:
        if self._connection is not None:
            self._connection.deregister_connect_callback(self.on_connect)
            self._connection = None

    async def on_connect(self, _connection: Any) -> None:
        self.reconnected = True


def _on_pubsub(method: Callable[..., Awaitable[Any]], *args: Any) -> Callable[[Redis], Awaitable[Any]]:
    """A call on the subscriber connection, in the shape `RedisConnection.call` runs on the asyncio side."""

    async def run(_client: Redis) -> Any:
        return await method(*args)

    return run


RECEIVE_BATCH: Final = 1000
"""Messages taken per hop to the asyncio side at most (memory bound of one batch)."""


async def _receive_batch(pubsub: PubSub) -> list[dict[str, Any]]:
    """Wait up to POLL_TIMEOUT for a message, then take whatever else is already buffered (bounded)."""
    first = await pubsub.get_message(False, POLL_TIMEOUT)
    if first is None:
        return []
    batch = [first]
    while len(batch) < RECEIVE_BATCH:
        message = await pubsub.get_message(False, 0.0)
        if message is None:
            break
        batch.append(message)
    return batch


async def _new_pubsub(r: Redis) -> PubSub:
    return r.pubsub()


def new_instance_id() -> str:
    return secrets.token_hex(8)
