"""The TaskStore contract, run against the memory store and against Redis (a real redis-server), then the Redis
store's own promises: its key layout and expiries, atomic bounds across instances, survival of a restart.

Memory tests move an injected clock; Redis expires keys and measures leases (idle times) by its own clock, so its
tests wait in real time, with a lease of 0.3 s and a TTL of 0.2 s.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import attrs
import pytest
import redis
import trio

from refserver.backend.redis.connection import RedisConnection
from refserver.backend.redis.tasks import RedisTaskStore
from refserver.backend.tasks import Claim, MemoryTaskStore, TaskStore
from refserver.errors import TaskLimitReached
from refserver.protocol.tasks import TaskRecord, completed, progressed
from tests.redis_server import RedisServer

PLENTY = 1000
"""A bound the test does not mean to reach."""


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@attrs.define
class Harness:
    kind: str
    store: TaskStore
    peer: TaskStore
    """A second instance over the same data (memory: the same store; Redis: another connection and store)."""
    now: Callable[[], float]
    advance: Callable[[float], Awaitable[None]]
    lease: float
    short_ttl_ms: int
    """A TTL the test can afford to wait out (memory: virtual; Redis: real)."""

    def record(self, task_id: str | None = None, owner: str = "alice", ttl_ms: int = 600_000) -> TaskRecord:
        now = self.now()
        return TaskRecord(
            task_id=task_id or uuid.uuid4().hex,
            owner=owner,
            protocol_version="2026-07-28",
            tool="slow",
            arguments={"n": 1},
            client_capabilities={},
            client_info={"name": "tests", "version": "0"},
            idempotent=True,
            created_at=now,
            updated_at=now,
            ttl_ms=ttl_ms,
            poll_interval_ms=500,
        )

    async def create(self, record: TaskRecord, *, per_owner: int = PLENTY, queue_limit: int = PLENTY) -> None:
        await self.store.create(record, per_owner=per_owner, queue_limit=queue_limit)


def _unique_prefix() -> str:
    return f"test-{uuid.uuid4().hex[:8]}:"


@pytest.fixture(params=["memory", "redis"])
async def tasks(request: pytest.FixtureRequest, shared_redis_server: RedisServer) -> AsyncIterator[Harness]:
    if request.param == "memory":
        clock = FakeClock()
        memory = MemoryTaskStore(clock)

        async def advance(seconds: float) -> None:
            clock.now += seconds

        yield Harness("memory", memory, memory, clock, advance, lease=30.0, short_ttl_ms=10_000)
        return
    prefix = _unique_prefix()
    async with trio.open_nursery() as nursery:
        first = await nursery.start(RedisConnection(shared_redis_server.url).run)
        second = await nursery.start(RedisConnection(shared_redis_server.url).run)
        store, peer = RedisTaskStore(first, prefix), RedisTaskStore(second, prefix)
        # Real waits: Redis measures idle times and expires keys by its own clock.
        yield Harness("redis", store, peer, time.time, trio.sleep, lease=0.3, short_ttl_ms=200)
        nursery.cancel_scope.cancel()


async def _create_and_claim(tasks: Harness, count: int) -> list[Claim]:
    for _ in range(count):
        await tasks.create(tasks.record())
    claims = await tasks.store.claim("a", count, tasks.lease)
    assert len(claims) == count
    return claims


# --- the contract ---


async def test_create_then_load(tasks: Harness) -> None:
    record = tasks.record()
    assert await tasks.store.load(record.task_id) is None
    await tasks.create(record)
    assert await tasks.store.load(record.task_id) == record
    assert await tasks.peer.load(record.task_id) == record
    assert await tasks.store.unfinished("alice") == 1
    assert await tasks.store.unfinished("bob") == 0
    stats = tasks.store.statistics()
    assert (stats.created, stats.refused, stats.queued) == (1, 0, 1)
    assert stats.tasks == (1 if tasks.kind == "memory" else -1)


async def test_replace_is_a_compare_and_set(tasks: Harness) -> None:
    original = tasks.record()
    await tasks.create(original)
    first = progressed(original, "halfway", tasks.now())
    assert await tasks.store.replace(first)
    assert not await tasks.peer.replace(first)  # the same version again: stale
    assert not await tasks.peer.replace(progressed(original, "a rival from version 0", tasks.now()))
    assert await tasks.store.load(original.task_id) == first
    second = progressed(first, "nearly", tasks.now())
    assert await tasks.peer.replace(second)
    assert await tasks.store.load(original.task_id) == second
    assert not await tasks.store.replace(progressed(tasks.record(), "never created", tasks.now()))


async def test_replace_race_has_one_winner(tasks: Harness) -> None:
    original = tasks.record()
    await tasks.create(original)
    wins: list[TaskRecord] = []

    async def writer(store: TaskStore, n: int) -> None:
        candidate = progressed(original, f"writer {n}", tasks.now())
        if await store.replace(candidate):
            wins.append(candidate)

    async with trio.open_nursery() as nursery:
        for n in range(20):
            nursery.start_soon(writer, tasks.store if n % 2 else tasks.peer, n)
    assert len(wins) == 1
    assert await tasks.store.load(original.task_id) == wins[0]


async def test_per_owner_bound(tasks: Harness) -> None:
    kept = [tasks.record() for _ in range(3)]
    for record in kept:
        await tasks.create(record, per_owner=3)
    refused = tasks.record()
    with pytest.raises(TaskLimitReached, match="at most 3 unfinished tasks per user"):
        await tasks.create(refused, per_owner=3)
    assert await tasks.store.load(refused.task_id) is None
    assert await tasks.store.unfinished("alice") == 3
    await tasks.create(tasks.record(owner="bob"), per_owner=3)  # the bound is per owner
    stats = tasks.store.statistics()
    assert (stats.created, stats.refused, stats.queued) == (4, 1, 4)
    claimed = await tasks.store.claim("a", 10, tasks.lease)
    assert refused.task_id not in {claim.task_id for claim in claimed}  # nothing was queued for it either

    assert await tasks.store.replace(progressed(kept[0], "still running", tasks.now()))
    assert await tasks.store.unfinished("alice") == 3  # a live task keeps its slot
    assert await tasks.store.replace(completed(kept[1], {"content": []}, tasks.now()))
    assert await tasks.store.unfinished("alice") == 2
    await tasks.create(refused, per_owner=3)
    assert await tasks.store.load(refused.task_id) == refused


async def test_per_owner_bound_holds_across_instances(tasks: Harness) -> None:
    outcomes: list[bool] = []

    async def creator(store: TaskStore) -> None:
        try:
            await store.create(tasks.record(), per_owner=2, queue_limit=PLENTY)
            outcomes.append(True)
        except TaskLimitReached:
            outcomes.append(False)

    async with trio.open_nursery() as nursery:
        for n in range(20):
            nursery.start_soon(creator, tasks.store if n % 2 else tasks.peer)
    assert sorted(outcomes) == [False] * 18 + [True] * 2
    assert await tasks.store.unfinished("alice") == 2


async def test_queue_bound(tasks: Harness) -> None:
    first = tasks.record(owner="u1")
    await tasks.create(first, queue_limit=2)
    await tasks.create(tasks.record(owner="u2"), queue_limit=2)
    refused = tasks.record(owner="u3")
    with pytest.raises(TaskLimitReached, match=r"the task queue is full \(2 tasks\)"):
        await tasks.create(refused, queue_limit=2)
    assert await tasks.store.load(refused.task_id) is None
    assert await tasks.store.unfinished("u3") == 0
    claims = await tasks.store.claim("a", 1, tasks.lease)
    with pytest.raises(TaskLimitReached):  # a running entry still counts
        await tasks.create(refused, queue_limit=2)
    await tasks.store.done(claims)
    await tasks.create(refused, queue_limit=2)
    await tasks.store.enqueue(first)  # not bounded: the task is already counted
    assert tasks.store.statistics().queued == 3


async def test_claim_hands_out_each_entry_once(tasks: Harness) -> None:
    records = [tasks.record() for _ in range(3)]
    for record in records:
        await tasks.create(record)
    assert await tasks.store.claim("a", 0, tasks.lease) == []
    first = await tasks.store.claim("a", 2, tasks.lease)
    assert [claim.task_id for claim in first] == [r.task_id for r in records[:2]]  # in queue order
    second = await tasks.peer.claim("b", 5, tasks.lease)
    assert [claim.task_id for claim in second] == [records[2].task_id]
    assert await tasks.peer.claim("b", 5, tasks.lease) == []
    assert await tasks.store.claim("a", 5, tasks.lease) == []
    assert len({claim.entry_id for claim in first + second}) == 3


async def test_lapsed_lease_is_claimed_by_another_consumer(tasks: Harness) -> None:
    (held,) = await _create_and_claim(tasks, 1)
    assert await tasks.peer.claim("b", 1, tasks.lease) == []
    await tasks.advance(1.5 * tasks.lease)
    assert await tasks.peer.claim("b", 1, tasks.lease) == [held]
    assert await tasks.store.renew("a", [held], tasks.lease) == []  # it is b's now
    assert await tasks.store.claim("a", 1, tasks.lease) == []


async def test_renewed_lease_is_kept(tasks: Harness) -> None:
    (held,) = await _create_and_claim(tasks, 1)
    # Two thirds of a lease twice: more than a lease since the claim, a third of one to spare since the renewal.
    await tasks.advance(2 / 3 * tasks.lease)
    assert await tasks.store.renew("a", [held], tasks.lease) == [held]
    assert await tasks.peer.renew("b", [held], tasks.lease) == []  # not b's to renew
    await tasks.advance(2 / 3 * tasks.lease)
    assert await tasks.peer.claim("b", 1, tasks.lease) == []
    assert await tasks.store.renew("a", [], tasks.lease) == []
    await tasks.advance(1.5 * tasks.lease)
    assert await tasks.peer.claim("b", 1, tasks.lease) == [held]


async def test_done_removes_entries(tasks: Harness) -> None:
    finished, running = await _create_and_claim(tasks, 2)
    assert tasks.store.statistics().queued == 2
    await tasks.store.done([finished])
    await tasks.store.done([])
    assert tasks.store.statistics().queued == 1
    await tasks.advance(1.5 * tasks.lease)
    assert await tasks.peer.claim("b", 5, tasks.lease) == [running]  # the finished one is never handed out again
    await tasks.peer.done([running])
    assert tasks.peer.statistics().queued == 0


async def test_release_makes_entries_claimable_at_once(tasks: Harness) -> None:
    given_back, kept = await _create_and_claim(tasks, 2)
    await tasks.store.release("b", [given_back, kept])  # not b's: ignored
    assert await tasks.peer.claim("c", 5, tasks.lease) == []
    await tasks.store.release("a", [given_back])
    await tasks.store.release("a", [])
    assert await tasks.peer.claim("c", 5, tasks.lease) == [given_back]
    assert await tasks.store.renew("a", [given_back, kept], tasks.lease) == [kept]


async def test_enqueue_queues_another_run(tasks: Harness) -> None:
    record = tasks.record()
    await tasks.create(record)
    first = await tasks.store.claim("a", 1, tasks.lease)
    await tasks.store.done(first)
    assert await tasks.store.claim("a", 1, tasks.lease) == []
    await tasks.store.enqueue(record)
    (again,) = await tasks.peer.claim("b", 1, tasks.lease)
    assert again.task_id == record.task_id
    assert again.entry_id != first[0].entry_id


async def test_expired_task_is_gone(tasks: Harness) -> None:
    short = tasks.record(ttl_ms=tasks.short_ttl_ms)
    await tasks.create(short, per_owner=1)
    assert await tasks.store.load(short.task_id) == short
    await tasks.advance(1.5 * tasks.short_ttl_ms / 1000)
    assert await tasks.store.load(short.task_id) is None
    assert not await tasks.store.replace(progressed(short, "too late", tasks.now()))
    assert await tasks.store.unfinished("alice") == 0
    await tasks.create(tasks.record(), per_owner=1)  # the expired task no longer holds the slot


async def test_owned_lists_live_tasks_newest_first(tasks: Harness) -> None:
    def aged(record: TaskRecord, tenths: int) -> TaskRecord:
        """Created `tenths` tenths of the short TTL ago: distinct creation times, within the short TTL."""
        created = record.created_at - tenths * tasks.short_ttl_ms / 10_000
        return attrs.evolve(record, created_at=created, updated_at=created)

    oldest, middle = aged(tasks.record(), 3), aged(tasks.record(), 2)
    short = aged(tasks.record(ttl_ms=tasks.short_ttl_ms), 1)
    newest = tasks.record()
    for record in (middle, oldest, newest, short):  # not in creation order: the list is ordered by created_at
        await tasks.create(record)
    await tasks.create(tasks.record(owner="bob"))
    finished = completed(middle, {"content": []}, tasks.now())
    assert await tasks.store.replace(finished)
    assert await tasks.peer.owned("alice", 10) == [newest, short, finished, oldest]
    assert await tasks.store.owned("alice", 2) == [newest, short]
    assert await tasks.store.owned("alice", 0) == []
    assert await tasks.store.owned("carol", 10) == []
    # Past short's expiry after this wait (memory: virtual; Redis: real).
    await tasks.advance(1.5 * tasks.short_ttl_ms / 1000)
    assert await tasks.store.owned("alice", 10) == [newest, finished, oldest]


# --- Redis only ---


@attrs.frozen
class RedisFixture:
    store: RedisTaskStore
    conn: RedisConnection
    prefix: str
    raw: redis.Redis
    """For inspecting what the store wrote."""

    @property
    def base(self) -> str:
        return f"{self.prefix}{{tasks}}:"


@pytest.fixture
async def redis_store(shared_redis_server: RedisServer) -> AsyncIterator[RedisFixture]:
    prefix = _unique_prefix()
    async with trio.open_nursery() as nursery:
        conn = await nursery.start(RedisConnection(shared_redis_server.url).run)
        raw = shared_redis_server.client()
        yield RedisFixture(RedisTaskStore(conn, prefix), conn, prefix, raw)
        raw.close()
        nursery.cancel_scope.cancel()


def _record(task_id: str, owner: str = "alice", ttl_ms: int = 60_000) -> TaskRecord:
    now = time.time()
    return TaskRecord(
        task_id=task_id,
        owner=owner,
        protocol_version="2025-11-25",
        tool="slow",
        arguments={},
        client_capabilities={},
        client_info=None,
        idempotent=False,
        created_at=now,
        updated_at=now,
        ttl_ms=ttl_ms,
        poll_interval_ms=1000,
    )


async def test_redis_key_layout_and_expiries(redis_store: RedisFixture) -> None:
    store, raw, base = redis_store.store, redis_store.raw, redis_store.base
    assert await store.claim("a", 5, 1.0) == []
    assert not list(raw.scan_iter(match=f"{redis_store.prefix}*"))  # claiming from no queue creates none
    first, second = _record("t1", ttl_ms=60_000), _record("t2", ttl_ms=120_000)
    await store.create(first, per_owner=10, queue_limit=10)
    await store.create(second, per_owner=10, queue_limit=10)
    keys = {key.decode() for key in raw.scan_iter(match=f"{redis_store.prefix}*")}
    owner_sets = {f"{base}owner:alice", f"{base}owned:alice", f"{base}expiring:alice"}
    assert keys == {f"{base}task:t1", f"{base}task:t2", f"{base}queue", *owner_sets}
    stored: dict[bytes, Any] = raw.hgetall(f"{base}task:t1")  # type: ignore[assignment]
    assert stored == {b"v": b"0", b"json": first.to_json()}
    assert 59_000 < raw.pttl(f"{base}task:t1") <= 60_000
    for key in owner_sets:  # an owner's sets live as long as its last task
        assert 119_000 < raw.pttl(key) <= 120_000
    assert raw.xlen(f"{base}queue") == 2
    assert 119_000 < raw.pttl(f"{base}queue") <= 120_000  # the queue outlives its last task, and no longer
    assert raw.xinfo_groups(f"{base}queue")[0]["name"] == b"workers"

    assert await store.replace(completed(second, {"content": []}, time.time()))
    assert raw.zrange(f"{base}owner:alice", 0, -1) == [b"t1"]
    assert raw.zrange(f"{base}owned:alice", 0, -1) == [b"t1", b"t2"]  # finished, still listed
    assert raw.hget(f"{base}task:t2", "v") == b"1"
    assert 119_000 < raw.pttl(f"{base}task:t2") <= 120_000  # a replace keeps the record to its expiry

    await store.done(await store.claim("a", 5, 1.0))
    assert raw.xlen(f"{base}queue") == 0
    assert raw.xpending(f"{base}queue", "workers")["pending"] == 0


async def test_redis_owner_sets_are_pruned(redis_store: RedisFixture) -> None:
    store, raw, base = redis_store.store, redis_store.raw, redis_store.base
    await store.create(_record("short", ttl_ms=100), per_owner=10, queue_limit=10)
    await store.create(_record("long"), per_owner=10, queue_limit=10)
    await trio.sleep(0.2)  # a real wait: the short task expires by the wall clock
    assert [record.task_id for record in await store.owned("alice", 10)] == ["long"]
    assert raw.zrange(f"{base}owned:alice", 0, -1) == raw.zrange(f"{base}expiring:alice", 0, -1) == [b"long"]
    await store.create(_record("next"), per_owner=10, queue_limit=10)
    assert raw.zrange(f"{base}owner:alice", 0, -1) == [b"long", b"next"]


async def test_redis_expiry_follows_the_store_clock(redis_store: RedisFixture) -> None:
    """An instance whose clock is ahead sees a task expire on time by its clock, though Redis still keeps it."""
    store = redis_store.store
    record = _record("t1", ttl_ms=60_000)
    await store.create(record, per_owner=10, queue_limit=10)
    ahead = RedisTaskStore(redis_store.conn, redis_store.prefix, clock=lambda: time.time() + 120)
    assert await ahead.load("t1") is None
    assert not await ahead.replace(progressed(record, "late", time.time()))
    assert await ahead.owned("alice", 10) == []
    assert await ahead.unfinished("alice") == 0
    assert await store.load("t1") == record


async def test_redis_group_lost_with_its_stream_kept(redis_store: RedisFixture) -> None:
    """The group is re-created at the stream's start: every entry still in the stream has a run owed."""
    store = redis_store.store
    await store.create(_record("t1"), per_owner=10, queue_limit=10)
    await store.create(_record("t2"), per_owner=10, queue_limit=10)
    await store.claim("a", 1, 60.0)
    redis_store.raw.xgroup_destroy(f"{redis_store.base}queue", "workers")
    assert [claim.task_id for claim in await store.claim("b", 5, 60.0)] == ["t1", "t2"]
    assert await store.renew("a", [Claim("t1", "0-1")], 60.0) == []


async def test_redis_survives_a_restart(redis_server: RedisServer) -> None:
    async with trio.open_nursery() as nursery:
        store = RedisTaskStore(await nursery.start(RedisConnection(redis_server.url).run))
        await store.create(_record("before"), per_owner=1, queue_limit=10)
        held = await store.claim("a", 1, 60.0)

        redis_server.restart()  # same port, no persistence: data, group and script cache are gone

        assert await store.load("before") is None
        assert await store.renew("a", held, 60.0) == []
        await store.release("a", held)
        assert await store.claim("a", 1, 60.0) == []  # NOGROUP: the group is re-created on demand
        await store.done(held)
        await store.enqueue(_record("again"))
        await store.create(_record("after"), per_owner=1, queue_limit=10)
        assert [claim.task_id for claim in await store.claim("b", 5, 60.0)] == ["again", "after"]
        assert await store.unfinished("alice") == 1
        nursery.cancel_scope.cancel()
