"""Sessions and the event log on Redis, and the key layout they share with the bus (`redis_bus`).

Key layout (prefix `refserver:`; every key has a TTL, refreshed while the session is active):

    session:{id}                JSON SessionRecord                                 idle TTL
    session:{id}:streams        hash stream id -> instance that opened it          idle TTL
    session:{id}:holders        set of the instances holding the session           idle TTL
    events:{id}:{stream}        Redis Stream of SSE events, ids 0-<seq>, ~MAXLEN   idle TTL (from the last append)
    instance:{instance id}      liveness of an instance                            INSTANCE_TTL (redis_bus)

Every append announces its event on the bus (`ANNOUNCE_LUA`): to the inbox of every live instance holding the
session, except the instance that made it.

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
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Final

import attrs
import trio
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from refserver.backend.events import STANDALONE_STREAM, Append, StoredEvent, StreamRead
from refserver.backend.redis import BatchedScript, RedisConnection
from refserver.backend.sessions import SessionRecord
from refserver.errors import SERVER_ERROR
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


def milliseconds(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class RedisSessionStore:
    def __init__(self, conn: RedisConnection) -> None:
        self._conn = conn

    async def save(self, record: SessionRecord, ttl: float) -> None:
        await self._conn.call(lambda r: r.set(session_key(record.session_id), record.to_json(), px=milliseconds(ttl)))

    async def load(self, session_id: str) -> SessionRecord | None:
        raw = await self._conn.call(lambda r: r.get(session_key(session_id)))
        return SessionRecord.from_json(_as_bytes(raw)) if raw else None

    async def touch(self, session_ids: list[str], ttl: float) -> None:
        if not session_ids:
            return

        async def pipeline(r: Redis) -> None:
            async with r.pipeline(transaction=False) as pipe:
                for session_id in session_ids:
                    pipe.pexpire(session_key(session_id), milliseconds(ttl))
                    pipe.pexpire(streams_key(session_id), milliseconds(ttl))
                    pipe.pexpire(events_key(session_id, STANDALONE_STREAM), milliseconds(ttl))
                    pipe.pexpire(holders_key(session_id), milliseconds(ttl))
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
ANNOUNCE_LUA: Final = f"""
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
    ANNOUNCE_LUA
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
  '{"t":"event","sid":"' .. ARGV[5] .. '","s":"' .. ARGV[6] .. '","n":' .. seq .. '}')
return seq
"""
)

# Close a stream only if it is still open, after final events (errors for the lost requests).
_CLOSE_ABANDONED_LUA: Final = (
    ANNOUNCE_LUA
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
    ANNOUNCE_LUA
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
        self._ttl_ms = milliseconds(ttl)
        self._waiters: dict[tuple[str, str], _StreamWaiters] = {}
        self._local: dict[tuple[str, str], _LocalStream] = {}
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
