"""All Redis I/O of refserver: one bridged asyncio client per process, and the Redis `KeyValueStore`.

redis-py's client is asyncio-only, so a `RedisConnection` runs it on a trio-asyncio loop that it opens in its own
`run` task and keeps. That loop is invisible to other Trio tasks (trio-asyncio finds "the current loop" through a
context variable inherited only by descendants of the task that opened it, and Hypercorn spawns request handlers
elsewhere), so every call goes through the stored loop explicitly. Each call is bounded by `COMMAND_TIMEOUT` and
redis-py's exceptions are mapped here to `refserver.errors`; nothing outside this module sees redis or asyncio.

Hot, small calls (an event-log append per session and per notification, a listener's read) can instead be
*batched*: a caller queues its commands and one writer task sends everything queued as one pipeline (group commit),
so 10,000 appends cost a few dozen round trips instead of 10,000. Writes and reads have a lane (queue and writer)
each, both owned by `run`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Final, TypeVar, cast

import attrs
import trio
import trio_asyncio
from redis import exceptions as rx
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from refserver.backend.memory_kv import check_bucket, check_ttl
from refserver.errors import BackendSlow, BackendUnavailable, InternalError

T = TypeVar("T")

COMMAND_TIMEOUT: Final = 2.0
"""Seconds one call may take end to end (waiting for a pooled connection included): far above a healthy round
trip (well under 1 ms locally), short enough that a dead Redis turns into a 503 before clients give up."""
CONNECT_TIMEOUT: Final = 1.0
"""Seconds to open a TCP connection; below COMMAND_TIMEOUT so a failed connect still leaves a clear error."""
CLOSE_TIMEOUT: Final = 2.0
"""Seconds shutdown spends closing pooled sockets before abandoning them to the OS."""
MAX_CONNECTIONS: Final = 8
"""Sockets per process: calls take well under a millisecond, so 8 serve thousands of calls per second, and the
Redis connection count stays 8 x processes however many sessions or requests there are (extra callers queue)."""
CLIENT_NAME: Final = "refserver"
"""CLIENT SETNAME on every connection, so CLIENT LIST shows which sockets are ours."""
BATCH_MAX_CALLS: Final = 512
"""Batched calls per pipeline at most: a full pipeline of appends runs a few milliseconds in Redis, so no other
client waits long behind it, and the replies of one batch stay a bounded amount of memory."""
BATCH_QUEUE_SIZE: Final = 2048
"""Batched calls waiting for the writer at most (four pipelines' worth); beyond that callers wait for room."""

# Replies that mean "Redis cannot serve this now" rather than "this command is wrong"; redis-py leaves them as plain
# ResponseError, with the code as the first word. (LOADING, READONLY, OOM, TRYAGAIN, CLUSTERDOWN and MASTERDOWN get
# their own classes, matched below.)
_UNAVAILABLE_REPLIES: Final = frozenset({"MISCONF", "BUSY", "NOREPLICAS"})
_UNAVAILABLE_ERRORS: Final = (
    rx.ConnectionError,  # includes BusyLoadingError, AuthenticationError and "No connection available."
    rx.TimeoutError,
    rx.ReadOnlyError,
    rx.OutOfMemoryError,
    rx.TryAgainError,
    rx.ClusterDownError,
)


def _map_redis_error(exc: rx.RedisError) -> Exception:
    if isinstance(exc, _UNAVAILABLE_ERRORS):
        return BackendUnavailable(f"Redis unavailable: {exc}")
    if isinstance(exc, rx.ResponseError) and str(exc).split(" ", 1)[0] in _UNAVAILABLE_REPLIES:
        return BackendUnavailable(f"Redis unavailable: {exc}")
    # Anything else (WRONGTYPE, a syntax error, a bad script) is a bug on our side, not an outage.
    return InternalError(f"Redis error: {exc}")


class RedisConnection:
    """One trio-asyncio loop and one bounded connection pool, usable from any Trio task once `run` has started.

    Start with `await nursery.start(conn.run)`; cancelling that nursery closes the pool and the loop.
    """

    def __init__(
        self,
        url: str,
        *,
        max_connections: int = MAX_CONNECTIONS,
        command_timeout: float = COMMAND_TIMEOUT,
        client_name: str = CLIENT_NAME,
    ) -> None:
        self.url = url
        self.max_connections = max_connections
        self.command_timeout = command_timeout
        self.client_name = client_name
        self._loop: Any = None  # trio_asyncio.TrioEventLoop while running
        self._client: Redis | None = None
        self._pool: BlockingConnectionPool | None = None
        self._started = False
        self._commands = 0
        self._errors = 0
        self._timeouts = 0
        self._in_flight = 0
        self.max_batch = BATCH_MAX_CALLS
        # A lane each for writes and reads (two pooled sockets at most): reads need no order among writes, and a
        # burst of appends (a notifier round) must not hold up the reads of the listeners it wakes.
        self._writes = _BatchLane(self)
        self._reads = _BatchLane(self)
        self.on_call: Callable[[Callable[[Redis], Awaitable[Any]], float], None] | None = None
        """Called with each call's command and the seconds it took, failed or not (the app's metrics set it)."""

    async def run(self, *, task_status: trio.TaskStatus[RedisConnection] = trio.TASK_STATUS_IGNORED) -> None:
        if self._started:
            raise RuntimeError("RedisConnection.run() may be called only once")
        self._started = True
        async with trio_asyncio.open_loop() as loop:
            # Built inside the loop's context, so anything redis-py binds to "the running loop" binds to this one.
            pool = BlockingConnectionPool.from_url(
                self.url,
                max_connections=self.max_connections,
                timeout=self.command_timeout,
                # No per-read timer in redis-py: every call is already bounded by `call`'s deadline, which cancels
                # the asyncio task (redis-py then drops the socket). A timer per reply cost a third of the CPU of
                # a batched pipeline (one asyncio timer scheduled on the Trio loop per reply).
                socket_timeout=None,
                socket_connect_timeout=min(CONNECT_TIMEOUT, self.command_timeout),
                client_name=self.client_name,
                # One immediate retry, on connection errors only: it replaces a pooled socket that died with a
                # Redis restart, while a Redis that is down still fails in milliseconds. Timeouts are not retried,
                # because the command may have run and SET NX / GETDEL / the bucket script are not idempotent.
                retry=Retry(NoBackoff(), 1, supported_errors=(rx.ConnectionError,)),
            )
            client = Redis(connection_pool=pool)
            self._loop, self._client, self._pool = loop, client, pool
            try:
                await self._open_all_connections()
                async with trio.open_nursery() as writers:
                    writers.start_soon(self._writes.write_batches)
                    writers.start_soon(self._reads.write_batches)
                    task_status.started(self)
            finally:
                # From here new calls fail fast; calls still in flight are cancelled by open_loop's exit and
                # surface as BackendUnavailable (asyncio.CancelledError without a Trio cancellation).
                self._loop = self._client = None
                # A dead peer must not mask the reason we are exiting: the sockets are dropped either way.
                with trio.move_on_after(CLOSE_TIMEOUT, shield=True), contextlib.suppress(rx.RedisError, OSError):
                    await loop.run_aio_coroutine(pool.aclose())

    async def _open_all_connections(self) -> None:
        """Open the whole pool up front, so a process holds the same connections under any load.

        Best effort: with Redis down at start-up the pool fills lazily once it is back.
        """
        pool, count = self._pool, self.max_connections
        assert pool is not None

        async def fill(_client: Redis) -> None:
            taken = []
            try:
                for _ in range(count):
                    taken.append(await pool.get_connection())  # type: ignore[no-untyped-call]
            finally:
                for connection in taken:
                    await pool.release(connection)

        with contextlib.suppress(BackendUnavailable, InternalError):
            await self.call(fill)

    async def call(self, command: Callable[[Redis], Awaitable[T]]) -> T:
        """Run `command(client)` on the asyncio side and return its result, within `command_timeout`.

        Raises BackendUnavailable when Redis is down, slow, or this connection is not running. A cancelled caller
        cancels the asyncio task and waits for it to unwind (trio-asyncio's abort keeps the caller waiting; redis-py
        drops the socket mid-reply instead of returning it to the pool), so no asyncio task outlives its caller and
        no late reply is read as another command's answer. A command already sent may still run on Redis.
        """
        loop, client = self._loop, self._client
        if loop is None or client is None:
            raise BackendUnavailable("Redis connection is not running")

        async def on_asyncio_side() -> T:
            # Even the synchronous part of redis-py (building the coroutine) runs inside the asyncio task.
            return await command(client)

        self._commands += 1
        self._in_flight += 1
        started = time.perf_counter()
        try:
            with trio.fail_after(self.command_timeout):
                return cast(T, await loop.run_aio_coroutine(on_asyncio_side()))
        except trio.TooSlowError as exc:
            self._errors += 1
            self._timeouts += 1
            raise BackendSlow(f"Redis did not answer within {self.command_timeout}s") from exc
        except asyncio.CancelledError as exc:
            # Our own cancellation arrives as trio.Cancelled; this one means the loop shut down under the call.
            self._errors += 1
            raise BackendUnavailable("Redis connection closed") from exc
        except rx.RedisError as exc:
            self._errors += 1
            # Not a hung Redis (redis-py has no read timeout of its own, see `run`): a connect timeout, say.
            self._timeouts += isinstance(exc, rx.TimeoutError)
            raise _map_redis_error(exc) from exc
        except OSError as exc:
            self._errors += 1
            raise BackendUnavailable(f"Redis unavailable: {exc}") from exc
        finally:
            self._in_flight -= 1
            if self.on_call is not None:
                self.on_call(command, time.perf_counter() - started)

    async def read_batched(self, stage: Callable[[Pipeline], object]) -> list[Any]:
        """Queue the reads `stage(pipeline)` adds for the read lane's next pipeline; return their replies.

        For many small calls at once: they share round trips and one pooled connection. Bounded like `call`:
        BackendUnavailable after `command_timeout`, waiting for room in the queue included. A reply that is a Redis
        error fails the call as `call` would; the other calls of the batch are not affected. A caller that stops
        waiting (cancelled or timed out) is dropped from the queue if its commands have not been sent yet.
        """
        return await self._queue(self._reads, _BatchedCall(stage))

    async def write_batched(self, stage: Callable[[Pipeline], object]) -> list[Any]:
        """Like `read_batched`, on the write lane: after the writes queued before it, in the same pipelines."""
        return await self._queue(self._writes, _BatchedCall(stage))

    async def run_script_batched(
        self,
        script: BatchedScript,
        keys: Sequence[str],
        args: Sequence[Any],
        *,
        on_outcome: Callable[[Any], None] | None = None,
    ) -> Any:
        """One EVALSHA on the write lane, loading the script on NOSCRIPT (first use, or Redis restarted).

        Batched like `read_batched`, and calls run in the order they were queued (one writer, one pipeline at a
        time), so writes to the same key keep their order. A caller that stops waiting after its call was sent
        does not undo it. `on_outcome`, if given, is called by the writer with the script's reply, or with the
        exception the call failed with (then it may or may not have run), as soon as the batch is back: also when
        the caller has stopped waiting, so the effects of a call that ran are never missed. It must not raise.
        """
        return (await self._queue(self._writes, _script_call(script, keys, args, on_outcome)))[0]

    async def run_script_many(
        self, script: BatchedScript, calls: Iterable[tuple[Sequence[str], Sequence[Any], Callable[[Any], None]]]
    ) -> None:
        """Many EVALSHAs of `script` on the write lane, each `(keys, args, on_outcome)`, with one waiter for all.

        For a fan-out whose caller needs no result per call (a notifier round): no task, timer or wake-up per call,
        only the queue entry. Each call's outcome reaches its `on_outcome` as with `run_script_batched`, and calls
        keep their queue order. Returns once every call has its outcome; the queue bound holds back the caller
        while the writer catches up, and the writer bounds each pipeline by `command_timeout`, so the wait is
        bounded too. Raises BackendUnavailable if the connection stops; calls not sent by then are dropped.
        """
        if self._loop is None:
            raise BackendUnavailable("Redis connection is not running")
        await self._writes.submit_many(_script_call(script, keys, args, on_outcome) for keys, args, on_outcome in calls)

    async def _queue(self, lane: _BatchLane, call: _BatchedCall) -> list[Any]:
        if self._loop is None:
            raise BackendUnavailable("Redis connection is not running")
        return await lane.submit(call)

    def statistics(self) -> dict[str, Any]:
        pool = self._pool
        idle = in_use = 0
        if pool is not None:
            idle, in_use = (count for count, _ in pool.get_connection_count())
        loop = self._loop
        return {
            "running": loop is not None,
            "max_connections": self.max_connections,
            "connections": idle + in_use,  # connection objects in the pool, at most max_connections
            "in_use": in_use,
            "in_flight": self._in_flight,
            "asyncio_tasks": len(asyncio.all_tasks(loop)) if loop is not None else 0,
            "commands": self._commands,
            "errors": self._errors,
            "timeouts": self._timeouts,
            # Batched calls, both lanes: pipelines sent, calls in them, calls that gave up waiting, calls queued.
            "batches": self._writes.batches + self._reads.batches,
            "batched_calls": self._writes.calls + self._reads.calls,
            "read_batches": self._reads.batches,
            "largest_batch": max(self._writes.largest, self._reads.largest),
            "batch_timeouts": self._writes.timeouts + self._reads.timeouts,
            "batch_queued": self._writes.queued + self._reads.queued,
        }


class _BatchLane:
    """A bounded queue of batched calls and the one task that sends them: a pipeline at a time, in queue order.

    The writer sends as soon as something is queued (no timer: a lone call costs one round trip, as with `call`),
    and whatever is queued while a pipeline is in flight goes out together in the next one.
    """

    def __init__(self, conn: RedisConnection) -> None:
        self._conn = conn
        self._send, self._receive = trio.open_memory_channel[_BatchedCall](BATCH_QUEUE_SIZE)
        self.batches = 0
        self.calls = 0
        self.largest = 0
        self.timeouts = 0

    @property
    def queued(self) -> int:
        return self._send.statistics().current_buffer_used

    async def submit(self, call: _BatchedCall) -> list[Any]:
        timeout = self._conn.command_timeout
        try:
            with trio.fail_after(timeout):
                try:
                    # No scheduling point when there is room: waiting for the reply is one already.
                    self._send.send_nowait(call)
                except trio.WouldBlock:
                    await self._send.send(call)
                await call.done.wait()
        except trio.TooSlowError as exc:
            self.timeouts += 1
            raise BackendSlow(f"Redis did not answer within {timeout}s") from exc
        except trio.BrokenResourceError as exc:
            raise BackendUnavailable("Redis connection closed") from exc
        finally:
            # Not sent yet: the writer skips it. Sent: its reply is read (the socket stays in step) and dropped.
            call.abandoned = not call.done.is_set()
        if call.error is not None:
            raise call.error
        return call.replies

    async def submit_many(self, calls: Iterable[_BatchedCall]) -> None:
        """Queue `calls` in order and return once the last one has its outcome (see `run_script_many`)."""
        sent: list[_BatchedCall] = []
        try:
            for call in calls:
                try:
                    self._send.send_nowait(call)
                except trio.WouldBlock:
                    await self._send.send(call)
                sent.append(call)
            if sent:
                # One writer, FIFO: once the last call has its outcome, so has every call before it.
                await sent[-1].done.wait()
        except trio.BrokenResourceError as exc:
            raise BackendUnavailable("Redis connection closed") from exc
        finally:
            for call in sent:
                call.abandoned = not call.done.is_set()

    async def write_batches(self) -> None:
        """Send what is queued until cancelled (by `RedisConnection.run`, which owns this task)."""
        batch: list[_BatchedCall] = []
        with self._receive:
            try:
                while True:
                    batch = [await self._receive.receive()]
                    # Tasks woken together (a fan-out, the callers of the last batch) are still queueing their
                    # calls in this scheduler pass: one checkpoint lets them join this pipeline, without a sleep.
                    await trio.lowlevel.checkpoint()
                    while len(batch) < self._conn.max_batch:
                        try:
                            batch.append(self._receive.receive_nowait())
                        except trio.WouldBlock:
                            break
                    batch = [call for call in batch if not call.abandoned]
                    if batch:
                        await self._send_batch(batch)
                    batch = []
            finally:
                # Shutting down: nobody may keep waiting for a pipeline that will never be sent (closing the
                # channel would drop the queued calls silently, so they are taken out first).
                unsent = batch
                with contextlib.suppress(trio.WouldBlock):
                    while True:
                        unsent.append(self._receive.receive_nowait())
                for call in unsent:
                    if not call.done.is_set():
                        call.fail(BackendUnavailable("Redis connection closed"))

    async def _send_batch(self, batch: list[_BatchedCall]) -> None:
        self.batches += 1
        self.calls += len(batch)
        self.largest = max(self.largest, len(batch))
        try:
            replies = await self._conn.call(lambda client: _run_batch(client, batch))
        except (BackendUnavailable, InternalError) as exc:
            # The whole pipeline failed or timed out: some of its commands may have run, as with a failed `call`.
            for call in batch:
                call.fail(exc)
            return
        for call, reply in zip(batch, replies, strict=True):
            call.resolve(reply)


@attrs.frozen
class BatchedScript:
    """A Lua script run through `RedisConnection.run_script_batched`, by its SHA1."""

    source: str
    sha: str = attrs.field(init=False)

    @sha.default
    def _sha(self) -> str:
        return hashlib.sha1(self.source.encode()).hexdigest()


@attrs.define(eq=False)
class _BatchedCall:
    stage: Callable[[Pipeline], object]
    """Adds this call's commands to the pipeline (on the asyncio side, like `call`'s command)."""
    script: BatchedScript | None = None
    """Set when the call is exactly one EVALSHA of this script (the only shape that may be re-run on NOSCRIPT)."""
    order_key: str = ""
    on_outcome: Callable[[Any], None] | None = None
    done: trio.Event = attrs.field(factory=trio.Event)
    replies: list[Any] = attrs.field(factory=list)
    error: Exception | None = None
    abandoned: bool = False

    def resolve(self, replies: list[Any]) -> None:
        failure = next((reply for reply in replies if isinstance(reply, rx.RedisError)), None)
        if isinstance(failure, rx.NoScriptError):
            # Not re-run because that would have reordered its key (see `_to_rerun_after_noscript`): it did not
            # run at all, and trying again later is safe.
            self.fail(BackendUnavailable("Redis lost its scripts during the batch"))
        elif failure is not None:
            self.fail(_map_redis_error(failure))
        else:
            self.replies = replies
            self.done.set()
            if self.on_outcome is not None:
                self.on_outcome(replies[0])

    def fail(self, exc: Exception) -> None:
        # An exception of its own per caller: one instance raised in many tasks would share a traceback.
        error = type(exc)(*exc.args)
        error.__cause__ = exc
        self.error = error
        self.done.set()
        if self.on_outcome is not None:
            self.on_outcome(error)


def _script_call(
    script: BatchedScript, keys: Sequence[str], args: Sequence[Any], on_outcome: Callable[[Any], None] | None
) -> _BatchedCall:
    """One EVALSHA of `script`, ordered by its first key."""
    sha, key_count = script.sha, len(keys)
    return _BatchedCall(
        lambda pipe: pipe.evalsha(sha, key_count, *keys, *args), script, keys[0] if keys else "", on_outcome
    )


async def _run_batch(client: Redis, batch: list[_BatchedCall]) -> list[list[Any]]:
    """One pipeline for the batch, then one more for the script calls that met NOSCRIPT (if any)."""
    replies = await _run_pipeline(client, batch)
    missing = _to_rerun_after_noscript(batch, replies)
    if missing:
        for script in {batch[i].script for i in missing}:
            assert script is not None
            await client.script_load(script.source)
        for i, reply in zip(missing, await _run_pipeline(client, [batch[i] for i in missing]), strict=True):
            replies[i] = reply
    return replies


async def _run_pipeline(client: Redis, calls: list[_BatchedCall]) -> list[list[Any]]:
    async with client.pipeline(transaction=False) as pipe:
        counts = []
        for call in calls:
            before = len(pipe.command_stack)
            call.stage(pipe)
            counts.append(len(pipe.command_stack) - before)
        flat = await pipe.execute(raise_on_error=False)
    replies, start = [], 0
    for count in counts:
        replies.append(flat[start : start + count])
        start += count
    return replies


def _to_rerun_after_noscript(batch: list[_BatchedCall], replies: list[list[Any]]) -> list[int]:
    """Indexes of the script calls that met NOSCRIPT (so did not run) and may run now without breaking order.

    A call is re-run only if no later call on its key ran in this pipeline (another client may load the script
    half-way through it): running it after that one would reorder the key's writes, so it keeps its NOSCRIPT
    error, which fails it as a Redis error rather than reordering.
    """
    rerun: list[int] = []
    ran_later: set[str] = set()
    for i in reversed(range(len(batch))):
        call, reply = batch[i], replies[i]
        if call.script is not None and len(reply) == 1 and isinstance(reply[0], rx.NoScriptError):
            if call.order_key not in ran_later:
                rerun.append(i)
        elif call.order_key:
            ran_later.add(call.order_key)
    rerun.reverse()
    return rerun


# Token bucket, atomic across instances. State "tokens updated_ms" lives under KEYS[1] with PX = time until full, so
# an idle bucket disappears exactly when it would be indistinguishable from a new one. Redis's TIME is the clock, so
# instances with skewed clocks agree; a denied call writes nothing because the stored state is still exact.
_BUCKET_LUA: Final = """
local capacity = tonumber(ARGV[1])
local per_ms = tonumber(ARGV[2]) / 1000
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + tonumber(clock[2]) / 1000
local tokens = capacity
local state = redis.call('GET', KEYS[1])
if state then
  local stored, updated = string.match(state, '^(%S+) (%S+)$')
  if stored then
    tokens = math.min(capacity, tonumber(stored) + math.max(0, now - tonumber(updated)) * per_ms)
  end
end
if tokens < 1 then
  return 0
end
tokens = tokens - 1
local ttl_ms = math.max(1, math.ceil((capacity - tokens) / per_ms))
redis.call('SET', KEYS[1], string.format('%.17g %.17g', tokens, now), 'PX', string.format('%d', ttl_ms))
return 1
"""
_BUCKET_SHA: Final = hashlib.sha1(_BUCKET_LUA.encode()).hexdigest()


async def _run_bucket_script(client: Redis, key: str, capacity: int, refill_per_second: float) -> Any:
    args = (key, capacity, repr(float(refill_per_second)))
    try:
        return await client.evalsha(_BUCKET_SHA, 1, *args)
    except rx.NoScriptError:
        # First use, or Redis restarted (its script cache is gone): load once and retry, still one call.
        await client.script_load(_BUCKET_LUA)
        return await client.evalsha(_BUCKET_SHA, 1, *args)


def _ms(ttl: float) -> int:
    check_ttl(ttl)
    return max(1, round(ttl * 1000))


def _as_bytes(value: object) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    raise InternalError(f"unexpected Redis reply {value!r}")


class RedisKeyValueStore:
    """`KeyValueStore` on Redis: every key is written with a PX expiry, values under `{prefix}kv:` and token buckets
    under `{prefix}rate:`, so bucket state can never be read or overwritten as a value (as in the memory store)."""

    def __init__(self, conn: RedisConnection, prefix: str = "refserver:") -> None:
        self._conn = conn
        self._prefix = prefix
        self._values = prefix + "kv:"
        self._buckets = prefix + "rate:"

    def _key(self, key: str) -> str:
        return self._values + key

    async def get(self, key: str) -> bytes | None:
        full = self._key(key)
        return _as_bytes(await self._conn.call(lambda r: r.get(full)))

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        full = [self._key(key) for key in keys]
        return [_as_bytes(value) for value in await self._conn.call(lambda r: r.mget(full))]

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        full, px = self._key(key), _ms(ttl)
        await self._conn.call(lambda r: r.set(full, value, px=px))

    async def set_if_absent(self, key: str, value: bytes, ttl: float) -> bool:
        full, px = self._key(key), _ms(ttl)
        return bool(await self._conn.call(lambda r: r.set(full, value, px=px, nx=True)))

    async def take(self, key: str) -> bytes | None:
        full = self._key(key)
        return _as_bytes(await self._conn.call(lambda r: r.getdel(full)))

    async def delete(self, *keys: str) -> None:
        if keys:
            full = [self._key(key) for key in keys]
            await self._conn.call(lambda r: r.delete(*full))

    async def take_rate_token(self, key: str, capacity: int, refill_per_second: float) -> bool:
        check_bucket(capacity, refill_per_second)
        full = self._buckets + key
        result = await self._conn.call(lambda r: _run_bucket_script(r, full, capacity, refill_per_second))
        return bool(result == 1)

    async def ping(self) -> None:
        await self._conn.call(lambda r: r.ping())

    def statistics(self) -> dict[str, Any]:
        return {"backend": "redis", "prefix": self._prefix, **self._conn.statistics()}
