"""All Redis I/O of refserver: one bridged asyncio client per process, and the Redis `KeyValueStore`.

redis-py's client is asyncio-only, so a `RedisConnection` runs it on a trio-asyncio loop that it opens in its own
`run` task and keeps. That loop is invisible to other Trio tasks (trio-asyncio finds "the current loop" through a
context variable inherited only by descendants of the task that opened it, and Hypercorn spawns request handlers
elsewhere), so every call goes through the stored loop explicitly. Each call is bounded by `COMMAND_TIMEOUT` and
redis-py's exceptions are mapped here to `refserver.errors`; nothing outside this module sees redis or asyncio.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, TypeVar, cast

import trio
import trio_asyncio
from redis import exceptions as rx
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from refserver.backend.memory_kv import check_bucket, check_ttl
from refserver.errors import BackendUnavailable, InternalError

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
                socket_timeout=self.command_timeout,
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
                task_status.started(self)
                await trio.sleep_forever()
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
            raise BackendUnavailable(f"Redis did not answer within {self.command_timeout}s") from exc
        except asyncio.CancelledError as exc:
            # Our own cancellation arrives as trio.Cancelled; this one means the loop shut down under the call.
            self._errors += 1
            raise BackendUnavailable("Redis connection closed") from exc
        except rx.RedisError as exc:
            self._errors += 1
            # redis-py's socket timeout equals ours, so either side may notice a hung Redis first.
            self._timeouts += isinstance(exc, rx.TimeoutError)
            raise _map_redis_error(exc) from exc
        except OSError as exc:
            self._errors += 1
            raise BackendUnavailable(f"Redis unavailable: {exc}") from exc
        finally:
            self._in_flight -= 1
            if self.on_call is not None:
                self.on_call(command, time.perf_counter() - started)

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
        }


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
