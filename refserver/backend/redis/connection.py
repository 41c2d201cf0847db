"""The Redis connection: one bridged asyncio client per process, through which all of refserver's Redis I/O goes.

redis-py's client is asyncio-only, so a `RedisConnection` runs it on a trio-asyncio loop that it opens in its own
`run` task and keeps. That loop is invisible to other Trio tasks (trio-asyncio finds "the current loop" through a
context variable inherited only by descendants of the task that opened it, and Hypercorn spawns request handlers
elsewhere), so every call goes through the stored loop explicitly. Each call is bounded by `COMMAND_TIMEOUT` and
redis-py's exceptions are mapped to `refserver.errors` (`errors.map_redis_error`); nothing outside this package
sees redis or asyncio.

Hot, small calls (an event-log append per session and per notification, a listener's read) can instead be
*batched*: a caller queues its commands and one writer task sends everything queued as one pipeline (group commit),
so 10,000 appends cost a few dozen round trips instead of 10,000. Writes and reads have a lane (queue and writer,
see `batching`) each, both owned by `run`.

With `cluster=True` the client is redis-py's cluster client (`REFSERVER_REDIS_URL` names any node; it discovers
the rest): the same calls, each command routed to its key's slot, pipelines split per node. The key layout keeps
every script and every multi-key command within one slot (see `keys`). The bus's subscribers are plain
connections to the node owning each channel's slot (`open_subscribers`), re-resolved at every reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Final, TypeVar, cast

import attrs
import trio
import trio_asyncio
from redis import exceptions as rx
from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.client import Pipeline, PubSub
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from refserver.backend.redis.batching import BATCH_MAX_CALLS, BatchedCall, BatchedScript, BatchLane, script_call
from refserver.backend.redis.errors import map_redis_error
from refserver.errors import BackendSlow, BackendUnavailable, InternalError
from refserver.observability.tracing import TRACING

T = TypeVar("T")

COMMAND_TIMEOUT: Final = 2.0
"""Seconds one call may take end to end (waiting for a pooled connection included): far above a healthy round
trip (well under 1 ms locally), short enough that a dead Redis turns into a 503 before clients give up."""
CONNECT_TIMEOUT: Final = 1.0
"""Seconds to open a TCP connection; below COMMAND_TIMEOUT so a failed connect still leaves a clear error."""
CLOSE_TIMEOUT: Final = 2.0
"""Seconds shutdown spends closing pooled sockets before abandoning them to the OS."""
MAX_CONNECTIONS: Final = 8
"""Sockets per process (per cluster node on a cluster): calls take well under a millisecond, so 8 serve thousands
of calls per second, and the Redis connection count stays 8 x processes however many sessions or requests there
are (extra callers queue). The bus's subscribers come on top: one per node owning one of its two channels."""
CLIENT_NAME: Final = "refserver"
"""CLIENT SETNAME on every connection, so CLIENT LIST shows which sockets are ours."""


@attrs.frozen(kw_only=True)
class RedisConnectionStatistics:
    running: bool
    max_connections: int
    connections: int
    """Connection objects in the pool, at most max_connections."""
    in_use: int
    in_flight: int
    asyncio_tasks: int
    commands: int
    errors: int
    timeouts: int
    # Batched calls, both lanes: pipelines sent, calls in them, calls that gave up waiting, calls queued.
    batches: int
    batched_calls: int
    read_batches: int
    largest_batch: int
    batch_timeouts: int
    batch_queued: int


REDIS_SPAN: Final = {"db.system.name": "redis"}
REDIS_BATCHED_SPAN: Final = {"db.system.name": "redis", "refserver.redis.batched": True}
"""A call queued for the next pipeline of its lane: the span covers the wait for the batch and its round trip."""


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
        cluster: bool = False,
    ) -> None:
        self.url = url
        self.cluster = cluster
        self.max_connections = max_connections
        self.command_timeout = command_timeout
        self.client_name = client_name
        self._loop: Any = None  # trio_asyncio.TrioEventLoop while running
        self._client: Redis | None = None
        self._pool: BlockingConnectionPool | None = None
        self._cluster_client: RedisCluster | None = None
        self._calls_allowed = trio.Semaphore(max_connections)
        """On a cluster, calls in flight at most: redis-py's cluster pools fail (MaxConnectionsError) rather than
        wait once a node's max_connections are busy, and a call holds at most one connection per node."""
        self._started = False
        self._commands = 0
        self._errors = 0
        self._timeouts = 0
        self._in_flight = 0
        self.max_batch = BATCH_MAX_CALLS
        # A lane each for writes and reads (two pooled sockets at most): reads need no order among writes, and a
        # burst of appends (a notifier round) must not hold up the reads of the listeners it wakes.
        self._writes = BatchLane(self)
        self._reads = BatchLane(self)
        self.on_call: Callable[[Callable[[Redis], Awaitable[Any]], float], None] | None = None
        """Called with each call's command and the seconds it took, failed or not (the app's metrics set it)."""

    async def run(self, *, task_status: trio.TaskStatus[RedisConnection] = trio.TASK_STATUS_IGNORED) -> None:
        if self._started:
            raise RuntimeError("RedisConnection.run() may be called only once")
        self._started = True
        async with trio_asyncio.open_loop() as loop:
            # Built inside the loop's context, so anything redis-py binds to "the running loop" binds to this one.
            if self.cluster:
                await self._run_cluster(loop, task_status)
                return
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
                await self._run_lanes(task_status)
            finally:
                # From here new calls fail fast; calls still in flight are cancelled by open_loop's exit and
                # surface as BackendUnavailable (asyncio.CancelledError without a Trio cancellation).
                self._loop = self._client = None
                # A dead peer must not mask the reason we are exiting: the sockets are dropped either way.
                with trio.move_on_after(CLOSE_TIMEOUT, shield=True), contextlib.suppress(rx.RedisError, OSError):
                    await loop.run_aio_coroutine(pool.aclose())

    async def _run_cluster(self, loop: Any, task_status: trio.TaskStatus[RedisConnection]) -> None:
        cluster = RedisCluster.from_url(
            self.url,
            max_connections=self.max_connections,  # per node
            socket_timeout=None,  # as for a single Redis: `call`'s deadline bounds every call
            socket_connect_timeout=min(CONNECT_TIMEOUT, self.command_timeout),
            client_name=self.client_name,
            # On a connection error or CLUSTERDOWN redis-py refreshes the slot map and tries again (MOVED and ASK
            # are followed on their own): a failover heals by itself, within `call`'s deadline or as a 503.
            retry=Retry(NoBackoff(), 2, supported_errors=(rx.ConnectionError, rx.ClusterDownError)),
        )
        # The cluster client offers the same commands as `Redis` for what refserver sends (single-slot scripts,
        # per-key commands, pipelines without transactions), so callers see one client type.
        self._loop, self._client, self._cluster_client = loop, cast(Redis, cluster), cluster
        try:
            with contextlib.suppress(BackendUnavailable, InternalError):
                await self.call(lambda _client: cluster.initialize())
            await self._run_lanes(task_status)
        finally:
            self._loop = self._client = None
            with trio.move_on_after(CLOSE_TIMEOUT, shield=True), contextlib.suppress(rx.RedisError, OSError):
                await loop.run_aio_coroutine(cluster.aclose())

    async def _run_lanes(self, task_status: trio.TaskStatus[RedisConnection]) -> None:
        async with trio.open_nursery() as writers:
            writers.start_soon(self._writes.write_batches)
            writers.start_soon(self._reads.write_batches)
            task_status.started(self)

    async def open_subscribers(self, channels: Sequence[str]) -> list[PubSub]:
        """Sharded subscriptions to `channels`: one connection per node owning any of them (one on a single Redis).

        Not from the command pool (a subscriber holds its socket): each has a pool of one of its own, closed by
        `close_subscriber`. redis-py does not reconnect them by itself (no retry), so a lost subscriber surfaces
        as BackendUnavailable and its owner opens new ones, against the slot map as it is then (after a failover,
        the promoted replica).
        """
        cluster = self._cluster_client

        async def open_all(_client: Redis) -> list[PubSub]:
            by_node: dict[tuple[str, int] | None, list[str]] = {}
            if cluster is not None:
                await cluster.nodes_manager.initialize()
                for channel in channels:
                    node = cluster.get_node_from_key(channel)
                    if node is None:
                        raise rx.ClusterDownError(f"no node serves the slot of {channel}")
                    by_node.setdefault((node.host, int(node.port)), []).append(channel)
            else:
                by_node[None] = list(channels)
            opened: list[PubSub] = []
            try:
                for address, node_channels in by_node.items():
                    pool = ConnectionPool.from_url(
                        self.url,
                        max_connections=1,
                        socket_timeout=None,
                        socket_connect_timeout=min(CONNECT_TIMEOUT, self.command_timeout),
                        client_name=self.client_name,
                        retry=Retry(NoBackoff(), 0),
                    )
                    if address is not None:
                        pool.connection_kwargs.update(host=address[0], port=address[1])
                    pubsub = Redis(connection_pool=pool).pubsub()
                    opened.append(pubsub)
                    for channel in node_channels:  # one SSUBSCRIBE each: on a cluster, one may name one slot only
                        await pubsub.ssubscribe(channel)
            except BaseException:
                for pubsub in opened:
                    await _close_pubsub(pubsub)
                raise
            return opened

        return await self.call(open_all)

    async def close_subscriber(self, pubsub: PubSub) -> None:
        """Close a subscriber from `open_subscribers` and its connection (bounded; errors ignored: it is going)."""
        with trio.move_on_after(CLOSE_TIMEOUT, shield=True), contextlib.suppress(BackendUnavailable, InternalError):
            await self.call(lambda _client: _close_pubsub(pubsub))

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

    async def call(self, command: Callable[[Redis], Awaitable[T]], *, within: float | None = None) -> T:
        """Run `command(client)` on the asyncio side and return its result, within `within` seconds (default:
        `command_timeout`).

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
        bound = self.command_timeout if within is None else within
        try:
            with TRACING.client_span("redis", REDIS_SPAN), trio.fail_after(bound):
                if self._cluster_client is None:
                    return cast(T, await loop.run_aio_coroutine(on_asyncio_side()))
                async with self._calls_allowed:
                    return cast(T, await loop.run_aio_coroutine(on_asyncio_side()))
        except trio.TooSlowError as exc:
            self._errors += 1
            self._timeouts += 1
            raise BackendSlow(f"Redis did not answer within {bound}s") from exc
        except asyncio.CancelledError as exc:
            # Our own cancellation arrives as trio.Cancelled; this one means the loop shut down under the call.
            self._errors += 1
            raise BackendUnavailable("Redis connection closed") from exc
        except rx.RedisError as exc:
            self._errors += 1
            # Not a hung Redis (redis-py has no read timeout of its own, see `run`): a connect timeout, say.
            self._timeouts += isinstance(exc, rx.TimeoutError)
            raise map_redis_error(exc) from exc
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
        return await self._queue(self._reads, BatchedCall(stage))

    async def write_batched(self, stage: Callable[[Pipeline], object]) -> list[Any]:
        """Like `read_batched`, on the write lane: after the writes queued before it, in the same pipelines."""
        return await self._queue(self._writes, BatchedCall(stage))

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
        return (await self._queue(self._writes, script_call(script, keys, args, on_outcome)))[0]

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
        await self._writes.submit_many(script_call(script, keys, args, on_outcome) for keys, args, on_outcome in calls)

    async def _queue(self, lane: BatchLane, call: BatchedCall) -> list[Any]:
        if self._loop is None:
            raise BackendUnavailable("Redis connection is not running")
        with TRACING.client_span("redis batched", REDIS_BATCHED_SPAN):
            return await lane.submit(call)

    def statistics(self) -> RedisConnectionStatistics:
        pool, cluster = self._pool, self._cluster_client
        idle = in_use = 0
        if pool is not None:
            idle, in_use = (count for count, _ in pool.get_connection_count())
        elif cluster is not None:
            for node in cluster.get_nodes():
                idle += len(node._free)
                in_use += len(node._connections) - len(node._free)
        loop = self._loop
        writes, reads = self._writes, self._reads
        return RedisConnectionStatistics(
            running=loop is not None,
            max_connections=self.max_connections,
            connections=idle + in_use,
            in_use=in_use,
            in_flight=self._in_flight,
            asyncio_tasks=len(asyncio.all_tasks(loop)) if loop is not None else 0,
            commands=self._commands,
            errors=self._errors,
            timeouts=self._timeouts,
            batches=writes.batches + reads.batches,
            batched_calls=writes.calls + reads.calls,
            read_batches=reads.batches,
            largest_batch=max(writes.largest, reads.largest),
            batch_timeouts=writes.timeouts + reads.timeouts,
            batch_queued=writes.queued + reads.queued,
        )


async def _close_pubsub(pubsub: PubSub) -> None:
    with contextlib.suppress(rx.RedisError, OSError):
        await pubsub.aclose()
    await pubsub.connection_pool.aclose()
