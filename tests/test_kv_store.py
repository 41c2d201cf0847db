"""The KeyValueStore contract, run against the memory store and against Redis (a real redis-server), then the
Redis adapter's own promises: calls from unrelated tasks, bounded time when Redis dies or hangs, exact
cancellation, survival of a restart, a constant connection count.

Memory tests move an injected clock; Redis tests wait in real time, with TTLs of ~0.1 s.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import attrs
import pytest
import trio
import trio_asyncio

from refserver.backend.kv import KeyValueStore
from refserver.backend.memory_kv import MemoryKeyValueStatistics, MemoryKeyValueStore
from refserver.backend.redis.connection import MAX_CONNECTIONS, RedisConnection
from refserver.backend.redis.kv import RedisKeyValueStatistics, RedisKeyValueStore
from refserver.errors import BackendUnavailable, InternalError
from tests.conftest import wait_until
from tests.redis_server import RedisServer

MARGIN = 1.0
"""Seconds of slack on wall-clock bounds (a loaded CI machine), never part of what is asserted to be fast."""


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@attrs.define
class Harness:
    kind: str
    store: KeyValueStore
    peer: KeyValueStore
    """A second instance over the same data (memory: the same store; Redis: another connection)."""
    advance: Callable[[float], Awaitable[None]]
    short_ttl: float
    """A TTL the test can afford to wait out (memory: virtual; Redis: real)."""


@pytest.fixture(params=["memory", "redis"])
async def kv(request: pytest.FixtureRequest, shared_redis_server: RedisServer) -> AsyncIterator[Harness]:
    if request.param == "memory":
        clock = FakeClock()
        memory = MemoryKeyValueStore(clock)

        async def advance(seconds: float) -> None:
            clock.now += seconds

        yield Harness("memory", memory, memory, advance, short_ttl=10.0)
        return
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    async with trio.open_nursery() as nursery:
        first = await nursery.start(RedisConnection(shared_redis_server.url).run)
        second = await nursery.start(RedisConnection(shared_redis_server.url).run)
        store, peer = RedisKeyValueStore(first, prefix), RedisKeyValueStore(second, prefix)
        # Redis expires keys by its own clock: a real wait, with a TTL just long enough to read a key before it goes.
        yield Harness("redis", store, peer, trio.sleep, short_ttl=0.1)
        nursery.cancel_scope.cancel()


# --- the contract ---


async def test_get_set_overwrite(kv: Harness) -> None:
    store = kv.store
    assert await store.get("a") is None
    await store.set("a", b"one", 60)
    assert await store.get("a") == b"one"
    assert await kv.peer.get("a") == b"one"
    await store.set("a", b"\x00two\xff", 60)
    assert await store.get("a") == b"\x00two\xff"
    await store.ping()


async def test_ttl_expiry(kv: Harness) -> None:
    store, ttl = kv.store, kv.short_ttl
    await store.set("gone", b"x", ttl)
    await store.set("renewed", b"x", ttl)
    await store.set("renewed", b"y", 100 * ttl)  # overwriting replaces the TTL too
    assert await store.get("gone") == b"x"
    await kv.advance(1.5 * ttl)
    assert await store.get("gone") is None
    assert await store.get_many(["gone", "renewed"]) == [None, b"y"]
    assert await store.take("gone") is None
    assert await store.set_if_absent("gone", b"new", ttl)
    assert await store.get("gone") == b"new"


@pytest.mark.parametrize("ttl", [0, -1, math.nan, math.inf])
async def test_ttl_must_be_positive(kv: Harness, ttl: float) -> None:
    with pytest.raises(ValueError, match="ttl"):
        await kv.store.set("k", b"v", ttl)
    with pytest.raises(ValueError, match="ttl"):
        await kv.store.set_if_absent("k", b"v", ttl)


async def test_set_if_absent(kv: Harness) -> None:
    store = kv.store
    assert await store.set_if_absent("k", b"first", 60)
    assert not await kv.peer.set_if_absent("k", b"second", 60)
    assert await store.get("k") == b"first"
    await store.delete("k")
    assert await store.set_if_absent("k", b"third", 60)
    assert await store.get("k") == b"third"


async def test_take_returns_once(kv: Harness) -> None:
    store = kv.store
    assert await store.take("missing") is None
    await store.set("code", b"abc", 60)
    assert await store.take("code") == b"abc"
    assert await store.take("code") is None
    assert await store.get("code") is None


async def test_take_is_atomic_across_tasks_and_instances(kv: Harness) -> None:
    rounds, takers = 10, 20
    for n in range(rounds):
        await kv.store.set(f"code{n}", f"value{n}".encode(), 60)
    won: list[bytes] = []

    async def taker(store: KeyValueStore, key: str) -> None:
        value = await store.take(key)
        if value is not None:
            won.append(value)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for n in range(rounds):
                for i in range(takers):
                    nursery.start_soon(taker, kv.store if i % 2 else kv.peer, f"code{n}")
    assert sorted(won) == sorted(f"value{n}".encode() for n in range(rounds))


async def test_get_many(kv: Harness) -> None:
    store = kv.store
    assert await store.get_many([]) == []
    await store.set("a", b"1", 60)
    await store.set("c", b"3", 60)
    await store.set("short", b"s", kv.short_ttl)
    await kv.advance(1.5 * kv.short_ttl)
    assert await store.get_many(["c", "b", "a", "short", "a"]) == [b"3", None, b"1", None, b"1"]


async def test_delete(kv: Harness) -> None:
    store = kv.store
    await store.set("a", b"1", 60)
    await store.set("b", b"2", 60)
    await store.set("c", b"3", 60)
    await store.delete("a", "b", "never-written")
    await store.delete()
    assert await store.get_many(["a", "b", "c"]) == [None, None, b"3"]


async def test_token_bucket_capacity_and_independence(kv: Harness) -> None:
    store = kv.store
    assert [await store.take_rate_token("ip:1", 3, 0.01) for _ in range(4)] == [True, True, True, False]
    assert not await kv.peer.take_rate_token("ip:1", 3, 0.01)  # the bucket is shared by all instances
    assert await store.take_rate_token("ip:2", 3, 0.01)  # another key has its own full bucket
    assert await store.get("ip:1") is None  # bucket state is not a value


async def test_token_bucket_refills_up_to_capacity(kv: Harness) -> None:
    store, rate = kv.store, 4.0
    assert [await store.take_rate_token("k", 2, rate) for _ in range(3)] == [True, True, False]
    await kv.advance(1.5 / rate)  # 1.5 tokens back
    assert [await store.take_rate_token("k", 2, rate) for _ in range(2)] == [True, False]
    await kv.advance(3.5 / rate)  # more than capacity: the bucket holds only 2
    assert [await store.take_rate_token("k", 2, rate) for _ in range(3)] == [True, True, False]


@pytest.mark.parametrize(("capacity", "rate"), [(0, 1.0), (1, 0.0), (1, -1.0), (1, math.inf)])
async def test_token_bucket_rejects_bad_parameters(kv: Harness, capacity: int, rate: float) -> None:
    with pytest.raises(ValueError, match=r"capacity|refill"):
        await kv.store.take_rate_token("k", capacity, rate)


async def test_statistics(kv: Harness) -> None:
    await kv.store.set("a", b"1", 60)
    stats = kv.store.statistics()
    assert stats.backend == kv.kind
    if isinstance(stats, MemoryKeyValueStatistics):
        assert stats.keys == 1
    else:
        assert isinstance(stats, RedisKeyValueStatistics)
        conn = stats.connection
        assert conn.running and conn.commands >= 1 and conn.errors == 0
        assert 1 <= conn.connections <= conn.max_connections == MAX_CONNECTIONS
        assert conn.in_use == conn.in_flight == conn.asyncio_tasks == 0


# --- memory store: exact expiry and bounded memory ---


async def test_memory_expiry_is_exact() -> None:
    clock = FakeClock()
    store = MemoryKeyValueStore(clock)
    await store.set("k", b"v", 5.0)
    clock.now += 4.999
    assert await store.get("k") == b"v"
    clock.now += 0.001
    assert await store.get("k") is None
    assert await store.set_if_absent("k", b"again", 1.0)


async def test_memory_purges_expired_entries_on_write() -> None:
    clock = FakeClock()
    store = MemoryKeyValueStore(clock)
    for n in range(1000):
        await store.set(f"k{n}", b"v", 1.0)
    for _ in range(1000):  # overwriting a long-lived key must not grow the expiry heap without bound
        await store.set("long", b"v", 3600.0)
    assert store.statistics().expiry_heap <= 2 * 1001 + 64
    clock.now += 2.0
    await store.set("fresh", b"v", 1.0)
    stats = store.statistics()
    assert stats.keys == 2
    assert stats.expiry_heap <= 2 * 2 + 64


async def test_memory_token_bucket_exact_refill_and_state_expiry() -> None:
    clock = FakeClock()
    store = MemoryKeyValueStore(clock)
    assert [await store.take_rate_token("a", 2, 2.0) for _ in range(3)] == [True, True, False]
    clock.now += 0.499
    assert not await store.take_rate_token("a", 2, 2.0)
    clock.now += 0.001
    assert await store.take_rate_token("a", 2, 2.0)
    clock.now += 1.0  # exactly full again: the state has expired
    assert await store.take_rate_token("b", 1, 1.0)  # a write purges "a"
    assert store.statistics().buckets == 1


# --- Redis: keys, fault injection, cancellation, connection bound ---


@pytest.fixture
async def redis_conn(redis_server: RedisServer) -> AsyncIterator[RedisConnection]:
    async with trio.open_nursery() as nursery:
        conn = await nursery.start(RedisConnection(redis_server.url, command_timeout=0.5).run)
        yield conn
        nursery.cancel_scope.cancel()


async def test_redis_every_key_has_a_ttl(shared_redis_server: RedisServer) -> None:
    prefix = f"ttl-{uuid.uuid4().hex[:8]}:"
    async with trio.open_nursery() as nursery:
        store = RedisKeyValueStore(await nursery.start(RedisConnection(shared_redis_server.url).run), prefix)
        await store.set("a", b"1", 60)
        await store.set_if_absent("b", b"2", 0.5)
        await store.take_rate_token("bucket", 5, 1.0)
        await store.take_rate_token("fast-bucket", 1, 20.0)
        raw = shared_redis_server.client()
        ttls = {key.decode(): raw.pttl(key) for key in raw.scan_iter(match=f"{prefix}*")}
        assert set(ttls) == {f"{prefix}kv:a", f"{prefix}kv:b", f"{prefix}rate:bucket", f"{prefix}rate:fast-bucket"}
        assert 59_000 < ttls[f"{prefix}kv:a"] <= 60_000
        assert 0 < ttls[f"{prefix}kv:b"] <= 500
        assert 0 < ttls[f"{prefix}rate:bucket"] <= 1000  # one token short of full: full again in 1 s
        assert 0 < ttls[f"{prefix}rate:fast-bucket"] <= 50  # full again after 50 ms, so its state goes then
        await wait_until(lambda: not raw.exists(f"{prefix}rate:fast-bucket"), 1.0, "the full bucket's state to go")
        nursery.cancel_scope.cancel()


async def test_redis_calls_from_a_task_outside_the_loop_tree(redis_server: RedisServer) -> None:
    """Like a Hypercorn request handler: a task that does not descend from the one that opened the loop."""
    results: list[Any] = []
    done = trio.Event()

    async def handler(store: RedisKeyValueStore) -> None:
        try:
            # The implicit route is closed here: trio-asyncio finds no loop in this task's context...
            assert trio_asyncio.current_loop.get() is None
            coro = asyncio.sleep(0)
            try:
                with pytest.raises(RuntimeError, match="not within a trio_asyncio loop"):
                    await trio_asyncio.run_aio_coroutine(coro)
            finally:
                coro.close()
            # ...while the store calls through the loop it keeps.
            await store.set("k", b"from elsewhere", 60)
            results.append(await store.get("k"))
            results.append(await store.take_rate_token("b", 1, 1.0))
        except BaseException as exc:  # a system task must not raise; hand the failure to the test
            results.append(exc)
        finally:
            done.set()

    async with trio.open_nursery() as nursery:
        store = RedisKeyValueStore(await nursery.start(RedisConnection(redis_server.url).run))
        trio.lowlevel.spawn_system_task(handler, store)
        with trio.fail_after(5):
            await done.wait()
        nursery.cancel_scope.cancel()
    assert results == [b"from elsewhere", True]


async def test_redis_killed_then_restarted(redis_server: RedisServer) -> None:
    async with trio.open_nursery() as nursery:
        conn = await nursery.start(RedisConnection(redis_server.url).run)
        store = RedisKeyValueStore(conn)
        await store.set("k", b"v", 60)
        async with trio.open_nursery() as warm:  # several pooled sockets, all about to die
            for _ in range(MAX_CONNECTIONS * 4):
                warm.start_soon(store.get, "k")
        assert conn.statistics().connections > 1

        redis_server.kill()
        calls: list[Callable[[], Awaitable[object]]] = [
            store.ping,
            lambda: store.get("k"),
            lambda: store.set("k", b"v", 1),
            lambda: store.take_rate_token("b", 1, 1.0),
        ]
        for call in calls:
            started = time.monotonic()
            with pytest.raises(BackendUnavailable):
                await call()
            assert time.monotonic() - started < conn.command_timeout + MARGIN

        redis_server.start()  # same port, empty (no persistence), no script cache
        await store.ping()
        async with trio.open_nursery() as again:  # every pooled socket is replaced, none fails a caller
            for n in range(MAX_CONNECTIONS * 4):
                again.start_soon(store.set, f"k{n}", b"v", 60)
        assert await store.get("k0") == b"v"
        assert await store.take_rate_token("b", 1, 1.0)  # NOSCRIPT: reloaded transparently
        assert conn.statistics().errors == 4
        nursery.cancel_scope.cancel()


async def test_redis_hung_times_out_and_recovers(redis_server: RedisServer, redis_conn: RedisConnection) -> None:
    store = RedisKeyValueStore(redis_conn)
    await store.set("k", b"v", 60)
    redis_server.pause()
    try:
        started = time.monotonic()
        with pytest.raises(BackendUnavailable):
            await store.get("k")
        assert redis_conn.command_timeout <= time.monotonic() - started < redis_conn.command_timeout + MARGIN
        stats = redis_conn.statistics()
        assert stats.timeouts == 1
        assert stats.asyncio_tasks == stats.in_use == 0  # nothing left running on the asyncio side
    finally:
        redis_server.resume()
    assert await store.get("k") == b"v"


async def test_redis_cancelled_caller_leaves_nothing_behind(redis_server: RedisServer) -> None:
    async with trio.open_nursery() as nursery:
        # One socket, so the call after the cancelled one must reuse (or replace) the very same connection.
        conn = await nursery.start(RedisConnection(redis_server.url, max_connections=1).run)
        store = RedisKeyValueStore(conn)
        await store.set("a", b"A", 60)
        await store.set("b", b"B", 60)
        redis_server.pause()
        try:
            started = time.monotonic()
            with trio.move_on_after(0.2) as scope:
                await store.get("a")  # sent; the reply will come only after the cancellation
            assert scope.cancelled_caught
            assert time.monotonic() - started < 0.2 + MARGIN
            stats = conn.statistics()
            assert stats.asyncio_tasks == stats.in_use == stats.in_flight == 0
            assert stats.errors == 0  # a cancellation is not a Redis error
        finally:
            redis_server.resume()
        # The late reply to GET a must not be read as the answer to GET b.
        assert await store.get("b") == b"B"
        nursery.cancel_scope.cancel()


async def test_redis_shutdown_with_a_call_in_flight(redis_server: RedisServer) -> None:
    outcome: list[BaseException] = []
    caller_done = trio.Event()
    conn = RedisConnection(redis_server.url)

    async def caller(store: RedisKeyValueStore) -> None:
        try:
            await store.get("k")
        except BaseException as exc:
            outcome.append(exc)
        finally:
            caller_done.set()

    redis_server.pause()
    try:
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                store = RedisKeyValueStore(await nursery.start(conn.run))
                trio.lowlevel.spawn_system_task(caller, store)
                await wait_until(lambda: conn.statistics().in_flight == 1, 5, "the call to be in flight")
                nursery.cancel_scope.cancel()
            await caller_done.wait()
    finally:
        redis_server.resume()
    assert len(outcome) == 1 and isinstance(outcome[0], BackendUnavailable)
    with pytest.raises(BackendUnavailable, match="not running"):
        await store.get("k")
    assert not conn.statistics().running


async def test_redis_errors_are_mapped(redis_server: RedisServer, redis_conn: RedisConnection) -> None:
    store = RedisKeyValueStore(redis_conn, "m:")
    raw = redis_server.client()
    raw.lpush("m:kv:list", b"x")
    with pytest.raises(InternalError, match="WRONGTYPE"):  # our bug, not an outage
        await store.get("list")
    raw.config_set("maxmemory", 1)
    with pytest.raises(BackendUnavailable, match="maxmemory"):
        await store.set("k", b"v", 60)
    raw.config_set("maxmemory", 0)
    await store.set("k", b"v", 60)


async def test_redis_connection_count_is_bounded(shared_redis_server: RedisServer) -> None:
    name = f"bounded-{uuid.uuid4().hex[:8]}"
    raw = shared_redis_server.client()
    peak = 0

    def ours() -> int:
        return sum(1 for client in raw.client_list() if client.get("name") == name)

    async with trio.open_nursery() as nursery:
        conn = await nursery.start(RedisConnection(shared_redis_server.url, client_name=name).run)
        store = RedisKeyValueStore(conn, f"{name}:")

        async def one(n: int) -> None:
            nonlocal peak
            await store.set(f"k{n}", b"v", 60)
            peak = max(peak, conn.statistics().in_use)
            assert await store.take(f"k{n}") == b"v"

        with trio.fail_after(10):
            async with trio.open_nursery() as calls:
                for n in range(200):
                    calls.start_soon(one, n)
        assert 1 < peak <= MAX_CONNECTIONS
        assert 1 < ours() <= MAX_CONNECTIONS
        assert conn.statistics().commands == 401  # 400 calls and the start-up fill of the pool
        nursery.cancel_scope.cancel()
    # Shutdown closed every socket; Redis may list a closed one until its event loop has seen the EOF.
    await wait_until(lambda: ours() == 0, 1.0, "Redis to drop our closed connections")
