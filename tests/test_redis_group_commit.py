"""Group commit of the Redis event log: appends queued by many tasks go out as a few pipelines, each caller gets
its own result, and order, cancellation, deleted sessions and a dead or hung Redis behave as with one call each.

Everything runs against a real redis-server (tests/redis_server.py); nothing of Redis is mocked.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable

import attrs
import pytest
import trio
import trio.lowlevel

from refserver.backend.events import STANDALONE_STREAM
from refserver.backend.messages import (
    CancelRequest,
    EventAppended,
    SessionDeleted,
    SessionMessage,
    StateChanged,
)
from refserver.backend.redis.bus import RedisBus
from refserver.backend.redis.connection import RedisConnection
from refserver.backend.redis.events import RedisEventLog
from refserver.backend.redis.keys import events_key, session_key
from refserver.backend.sessions import SessionRecord
from refserver.errors import BackendUnavailable, SessionGone
from tests.conftest import wait_until
from tests.redis_server import RedisServer

MARGIN = 1.0
"""Seconds of slack on wall-clock bounds (a loaded CI machine), never part of what is asserted to be fast."""


@attrs.define
class Harness:
    server: RedisServer
    conn: RedisConnection
    log: RedisEventLog

    def new_session(self) -> str:
        """A session id whose record exists, so the append script accepts events for it."""
        session_id = f"group-{uuid.uuid4().hex[:12]}"
        self.server.client().set(session_key(session_id), b"{}", px=600_000)
        return session_id

    def stored(self, session_id: str) -> dict[int, str]:
        """seq -> data of the standalone stream, as Redis holds it."""
        entries = self.server.client().xrange(events_key(session_id, STANDALONE_STREAM))
        return {int(entry_id.split(b"-")[1]): fields[b"d"].decode() for entry_id, fields in entries}

    def evalsha_calls(self) -> int:
        stats = self.server.client().info("commandstats")
        return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def open_harness(server: RedisServer, command_timeout: float) -> AsyncIterator[Harness]:
    async with trio.open_nursery() as nursery:
        conn = await nursery.start(RedisConnection(server.url, command_timeout=command_timeout).run)
        log = RedisEventLog(conn, instance_id="group-commit-test", max_events=10_000, ttl=600)
        yield Harness(server, conn, log)
        nursery.cancel_scope.cancel()


@pytest.fixture
async def shared(shared_redis_server: RedisServer) -> AsyncIterator[Harness]:
    async for harness in open_harness(shared_redis_server, command_timeout=2.0):
        yield harness


@pytest.fixture
async def own(redis_server: RedisServer) -> AsyncIterator[Harness]:
    """On a redis-server of the test's own: free to pause, kill, and to read its command counts."""
    async for harness in open_harness(redis_server, command_timeout=1.0):
        yield harness


async def test_concurrent_appends_share_pipelines_and_keep_each_streams_order(own: Harness) -> None:
    sessions = [own.new_session() for _ in range(5)]
    per_session = 300
    called: dict[str, list[str]] = {s: [] for s in sessions}
    answered: dict[str, dict[str, int]] = {s: {} for s in sessions}

    async def append(session_id: str, n: int) -> None:
        data = f"event-{n}"
        # Recorded right before the call, with no checkpoint in between: this is the order of the calls.
        called[session_id].append(data)
        answered[session_id][data] = await own.log.append(session_id, STANDALONE_STREAM, data)

    batches_before, evalsha_before = own.conn.statistics().batches, own.evalsha_calls()
    async with trio.open_nursery() as nursery:
        for n in range(per_session):
            for session_id in sessions:
                nursery.start_soon(append, session_id, n)

    calls = per_session * len(sessions)
    batches = own.conn.statistics().batches - batches_before
    assert batches <= 2 * calls / own.conn.max_batch + 2, batches  # 1,500 appends: a handful of round trips
    # One EVALSHA per append, plus the first batch again after its NOSCRIPT (a fresh Redis has no scripts).
    assert calls <= own.evalsha_calls() - evalsha_before <= calls + own.conn.max_batch
    for session_id in sessions:
        seqs_in_call_order = [answered[session_id][data] for data in called[session_id]]
        assert seqs_in_call_order == list(range(1, per_session + 1))
        assert own.stored(session_id) == {seq: data for data, seq in answered[session_id].items()}


async def test_a_lone_append_is_sent_at_once(shared: Harness) -> None:
    session_id = shared.new_session()
    batches_before = shared.conn.statistics().batches
    for n in range(1, 6):
        started = time.monotonic()
        assert await shared.log.append(session_id, STANDALONE_STREAM, f"e{n}") == n
        assert time.monotonic() - started < 0.5  # no timer to wait for (a round trip is well under 1 ms)
    assert shared.conn.statistics().batches - batches_before == 5


async def test_appends_to_a_deleted_session_fail_alone(shared: Harness) -> None:
    live, deleted = shared.new_session(), shared.new_session()
    await shared.log.append(deleted, STANDALONE_STREAM, "before")
    shared.server.client().delete(session_key(deleted))
    outcomes: dict[str, object] = {}

    async def append(session_id: str, label: str) -> None:
        try:
            outcomes[label] = await shared.log.append(session_id, STANDALONE_STREAM, label)
        except SessionGone as exc:
            outcomes[label] = exc

    batches_before = shared.conn.statistics().batches
    async with trio.open_nursery() as nursery:  # all in the same pipeline
        for n in range(10):
            nursery.start_soon(append, live, f"live-{n}")
            nursery.start_soon(append, deleted, f"deleted-{n}")
    assert shared.conn.statistics().batches - batches_before == 1
    assert sorted(seq for label, seq in outcomes.items() if label.startswith("live") and isinstance(seq, int)) == [
        *range(1, 11)
    ]
    assert all(isinstance(outcomes[f"deleted-{n}"], SessionGone) for n in range(10))
    assert shared.stored(deleted) == {1: "before"}  # nothing written after the session went away


async def test_a_cancelled_caller_disturbs_no_one(own: Harness) -> None:
    session_id = own.new_session()
    await own.log.append(session_id, STANDALONE_STREAM, "warm-up")  # the script is loaded
    answered: dict[str, int] = {}

    async def append(data: str) -> None:
        answered[data] = await own.log.append(session_id, STANDALONE_STREAM, data)

    own.server.pause()
    try:
        async with trio.open_nursery() as nursery:
            sent_scopes: list[trio.CancelScope] = []
            queued_scopes: list[trio.CancelScope] = []
            gave_up = 0

            async def append_within(scopes: list[trio.CancelScope], data: str) -> None:
                nonlocal gave_up
                with trio.CancelScope() as scope:
                    scopes.append(scope)
                    await append(data)
                gave_up += scope.cancelled_caught

            # Wave 1 goes out as one pipeline that hangs; half of its callers give up while it is in flight.
            for n in range(20):
                nursery.start_soon(append_within, sent_scopes, f"sent-cancelled-{n}")
                nursery.start_soon(append, f"sent-{n}")
            await wait_until(lambda: own.conn.statistics().in_flight == 1, 5.0, "wave 1 on its way")
            # Wave 2 queues behind it; half of those callers give up before it is sent.
            for n in range(20):
                nursery.start_soon(append_within, queued_scopes, f"queued-cancelled-{n}")
                nursery.start_soon(append, f"queued-{n}")
            await wait_until(lambda: own.conn.statistics().batch_queued == 40, 5.0, "wave 2 queued")
            for scope in sent_scopes + queued_scopes:
                scope.cancel()
            await wait_until(lambda: gave_up == 40, 5.0, "the cancelled callers to give up")
            own.server.resume()
    finally:
        own.server.resume()

    stored = own.stored(session_id)
    # Every caller that waited got the seq of its own event: no reply was handed to the wrong caller.
    assert set(answered) == {f"sent-{n}" for n in range(20)} | {f"queued-{n}" for n in range(20)}
    assert all(stored[seq] == data for data, seq in answered.items())
    # Already sent: the append happened although its caller stopped waiting. Not sent yet: it was dropped.
    assert {f"sent-cancelled-{n}" for n in range(20)} <= set(stored.values())
    assert not any(data.startswith("queued-cancelled") for data in stored.values())
    assert list(stored) == list(range(1, len(stored) + 1))
    stats = own.conn.statistics()
    assert stats.asyncio_tasks == stats.in_flight == stats.batch_queued == 0


async def test_script_cache_flushed_between_appends(own: Harness) -> None:
    session_id = own.new_session()
    assert await own.log.append(session_id, STANDALONE_STREAM, "one") == 1
    own.server.client().script_flush()
    assert await own.log.append(session_id, STANDALONE_STREAM, "two") == 2  # NOSCRIPT: loaded, sent again
    assert own.stored(session_id) == {1: "one", 2: "two"}


@pytest.mark.parametrize("failure", ["killed", "hung"])
async def test_redis_failure_fails_every_waiting_caller_within_the_timeout(own: Harness, failure: str) -> None:
    session_id = own.new_session()
    await own.log.append(session_id, STANDALONE_STREAM, "before")
    fail: Callable[[], None] = own.server.kill if failure == "killed" else own.server.pause
    fail()
    outcomes: list[BaseException] = []

    async def append(n: int) -> None:
        try:
            await own.log.append(session_id, STANDALONE_STREAM, f"e{n}")
        except BackendUnavailable as exc:
            outcomes.append(exc)

    try:
        started = time.monotonic()
        async with trio.open_nursery() as nursery:
            for n in range(own.conn.max_batch * 2):  # more than one pipeline's worth
                nursery.start_soon(append, n)
            with pytest.raises(BackendUnavailable):
                await own.log.read_after(session_id, STANDALONE_STREAM, 0)
        assert time.monotonic() - started < own.conn.command_timeout + MARGIN
        assert len(outcomes) == own.conn.max_batch * 2
    finally:
        if failure == "hung":
            own.server.resume()
        else:
            own.server.start()
    # Back to normal once Redis is: a killed one restarted empty, so the session is gone.
    if failure == "hung":
        assert await own.log.append(session_id, STANDALONE_STREAM, "after") > 1
    else:
        with pytest.raises(SessionGone):
            await own.log.append(session_id, STANDALONE_STREAM, "after")


async def test_shutdown_fails_queued_callers(redis_server: RedisServer) -> None:
    outcomes: list[BaseException] = []
    callers_done = trio.Event()
    pending = 0
    session_id = f"shutdown-{uuid.uuid4().hex[:8]}"
    redis_server.client().set(session_key(session_id), b"{}")

    async def caller(log: RedisEventLog) -> None:
        nonlocal pending
        try:
            await log.append(session_id, STANDALONE_STREAM, "x")
        except BaseException as exc:
            outcomes.append(exc)
        finally:
            pending -= 1
            if pending == 0:
                callers_done.set()

    redis_server.pause()
    try:
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                conn = await nursery.start(RedisConnection(redis_server.url, command_timeout=3.0).run)
                log = RedisEventLog(conn, instance_id="shutdown-test", max_events=100, ttl=60)
                # Callers that Hypercorn would run outside the connection's task tree: one pipeline in flight,
                # the rest queued behind it.
                pending = conn.max_batch + 10
                for _ in range(pending):
                    trio.lowlevel.spawn_system_task(caller, log)

                def one_sent_ten_queued() -> bool:
                    stats = conn.statistics()
                    return bool(stats.in_flight == 1 and stats.batch_queued == 10)

                await wait_until(one_sent_ten_queued, 5, "one pipeline in flight and ten calls queued")
                nursery.cancel_scope.cancel()
            await callers_done.wait()
    finally:
        redis_server.resume()
    assert len(outcomes) == conn.max_batch + 10
    assert all(isinstance(exc, BackendUnavailable) for exc in outcomes), outcomes
    with pytest.raises(BackendUnavailable, match="not running"):
        await log.append(session_id, STANDALONE_STREAM, "late")


async def test_listeners_read_this_instances_appends_from_memory_and_others_from_redis(
    shared_redis_server: RedisServer,
) -> None:
    async with trio.open_nursery() as nursery:
        here_conn = await nursery.start(RedisConnection(shared_redis_server.url).run)
        there_conn = await nursery.start(RedisConnection(shared_redis_server.url).run)
        here = RedisEventLog(here_conn, instance_id="here", max_events=100, ttl=600)
        there = RedisEventLog(there_conn, instance_id="there", max_events=100, ttl=600)
        bus = await nursery.start(RedisBus(here_conn, instance_id="here", holder_ttl=600).run)
        marker_arrived = trio.Event()

        async def on_message(session_id: str, message: SessionMessage) -> None:
            if isinstance(message, EventAppended):
                here.notice(session_id, message.stream_id, message.seq)
                if message.stream_id == "marker":
                    marker_arrived.set()

        bus.set_handler(on_message)
        session_id = Harness(shared_redis_server, here_conn, here).new_session()
        await bus.subscribe(session_id)

        async def next_read(after_seq: int) -> tuple[list[str], int]:
            """What a listener here gets after `after_seq`, and how many Redis reads that took."""
            reads_before = here_conn.statistics().batched_calls
            with trio.fail_after(5):
                await here.wait_for_events(session_id, STANDALONE_STREAM, after_seq)
            read = await here.read_after(session_id, STANDALONE_STREAM, after_seq)
            assert not read.closed and read.exists
            return [e.data for e in read.events], here_conn.statistics().batched_calls - reads_before

        with here.watching(session_id, STANDALONE_STREAM):
            assert await here.append(session_id, STANDALONE_STREAM, "a1") == 1
            assert await next_read(0) == (["a1"], 0)  # appended here: no read
            assert await there.append(session_id, STANDALONE_STREAM, "b2") == 2
            assert await next_read(1) == (["b2"], 1)  # announced on the bus by the other instance: read
            assert await here.append(session_id, STANDALONE_STREAM, "a3") == 3
            assert await here.append(session_id, STANDALONE_STREAM, "a4") == 4
            assert await next_read(2) == (["a3", "a4"], 0)
            assert await next_read(0) == (["a1", "b2", "a3", "a4"], 1)  # b2 is not kept here: read
            await here.close_stream(session_id, STANDALONE_STREAM)
            read = await here.read_after(session_id, STANDALONE_STREAM, 4)
            assert read.closed and not read.events
        # Only the other instance's append was announced to this one: its own are not echoed back. A marker from
        # the other instance is published after them all, and one subscriber gets messages in publishing order.
        await there.append(session_id, "marker", "m")
        with trio.fail_after(5):
            await marker_arrived.wait()
        assert bus.statistics().received == 2  # b2 and the marker
        assert here.statistics().reads_answered_here == 3
        nursery.cancel_scope.cancel()


async def test_an_append_whose_caller_gave_up_still_reaches_the_listeners_here(own: Harness) -> None:
    session_id = own.new_session()
    await own.log.append(session_id, STANDALONE_STREAM, "warm-up")
    with own.log.watching(session_id, STANDALONE_STREAM):
        own.server.pause()
        try:
            with trio.move_on_after(0.2) as scope:
                await own.log.append(session_id, STANDALONE_STREAM, "late")  # sent, then its caller leaves
            assert scope.cancelled_caught
        finally:
            own.server.resume()
        with trio.fail_after(own.conn.command_timeout + MARGIN):
            await own.log.wait_for_events(session_id, STANDALONE_STREAM, 1)
        read = await own.log.read_after(session_id, STANDALONE_STREAM, 1)
        assert [(e.seq, e.data) for e in read.events] == [(2, "late")]


async def test_events_appended_while_a_stream_is_being_persisted_are_not_lost(shared: Harness) -> None:
    """A request stream kept in memory is written to Redis when it is first served as SSE; the request goes on
    appending during that write (and may finish), and all of it must reach Redis."""
    session_id = shared.new_session()
    stream_id = "r-persist-race"
    log = shared.log
    await log.open_stream(session_id, stream_id, [1])
    await log.append(session_id, stream_id, '{"n":1}')
    async with trio.open_nursery() as nursery:
        nursery.start_soon(log.persist, session_id, stream_id)
        while shared.conn.statistics().in_flight == 0:  # until persist's write is on its way to Redis
            await trio.lowlevel.checkpoint()
        await log.append(session_id, stream_id, '{"n":2}')
        await log.append(session_id, stream_id, '{"id":1}', is_response=True)
        await log.close_stream(session_id, stream_id)
    entries = shared.server.client().xrange(events_key(session_id, stream_id))
    stored = [
        (int(entry_id.split(b"-")[1]), fields.get(b"d", b"").decode(), b"c" in fields) for entry_id, fields in entries
    ]
    assert stored == [(1, '{"n":1}', False), (2, '{"n":2}', False), (3, '{"id":1}', False), (4, "", True)]
    read = await log.read_after(session_id, stream_id, 0)
    assert [e.data for e in read.events] == ['{"n":1}', '{"n":2}', '{"id":1}'] and read.closed


async def test_append_many_is_a_few_pipelines_and_wakes_each_listener_with_its_own_event(own: Harness) -> None:
    """A notifier round: one append per session, no task per append, each listener served from memory."""
    sessions = [own.new_session() for _ in range(3 * own.conn.max_batch)]
    gone = sessions[::97]
    for session_id in gone:
        own.server.client().delete(session_key(session_id))
    await own.log.append(sessions[1], STANDALONE_STREAM, "warm-up")  # the script is loaded
    woken: dict[str, list[str]] = {}

    async def listen(session_id: str, task_status: trio.TaskStatus[None]) -> None:
        with own.log.watching(session_id, STANDALONE_STREAM):
            after = (await own.log.read_after(session_id, STANDALONE_STREAM, 0)).events
            task_status.started()
            cursor = after[-1].seq if after else 0
            await own.log.wait_for_events(session_id, STANDALONE_STREAM, cursor)
            read = await own.log.read_after(session_id, STANDALONE_STREAM, cursor)
            woken[session_id] = [e.data for e in read.events]

    live = [s for s in sessions if s not in gone]
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for session_id in live:
                await nursery.start(listen, session_id)
            batches_before = own.conn.statistics().batches
            reads_before = own.log.statistics().reads_answered_here
            with trio.fail_after(own.conn.command_timeout * 4):
                await own.log.append_many((s, STANDALONE_STREAM, f"round-1 {s}") for s in sessions)
    assert own.conn.statistics().batches - batches_before <= 4  # 1,536 appends, at most 512 per pipeline
    assert woken == {s: [f"round-1 {s}"] for s in live}
    assert own.log.statistics().reads_answered_here - reads_before == len(live)  # no Redis read to serve them
    assert own.stored(sessions[1]) == {1: "warm-up", 2: f"round-1 {sessions[1]}"}
    assert all(own.stored(s) == {} for s in gone)  # nothing written for a session that went away


async def test_append_many_with_redis_hung_ends_within_its_bound_and_wakes_listeners_to_read(own: Harness) -> None:
    session_id = own.new_session()
    await own.log.append(session_id, STANDALONE_STREAM, "before")
    calls = 3 * own.conn.max_batch
    woken = trio.Event()

    async def listen(task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        await own.log.wait_for_events(session_id, STANDALONE_STREAM, 1)
        woken.set()

    with own.log.watching(session_id, STANDALONE_STREAM):
        async with trio.open_nursery() as nursery:
            await nursery.start(listen)
            own.server.pause()
            try:
                started = time.monotonic()
                # Each pipeline is bounded by the command timeout: the round ends, however many calls are queued.
                with trio.fail_after(own.conn.command_timeout * (calls / own.conn.max_batch + 1) + MARGIN):
                    await own.log.append_many((session_id, STANDALONE_STREAM, f"e{n}") for n in range(calls))
                elapsed = time.monotonic() - started
            finally:
                own.server.resume()
        assert elapsed >= own.conn.command_timeout
        # Their outcome is unknown (they may have run): the listener was woken, and reads Redis, not `recent`.
        assert woken.is_set()
        reads_before = own.log.statistics().reads_answered_here
        read = await own.log.read_after(session_id, STANDALONE_STREAM, 0)
        assert read.events[0].data == "before"
        assert own.log.statistics().reads_answered_here == reads_before
    assert own.conn.statistics().batch_queued == 0


async def test_append_many_cancelled_drops_what_it_has_not_sent(own: Harness) -> None:
    session_id = own.new_session()
    await own.log.append(session_id, STANDALONE_STREAM, "before")
    own.server.pause()
    try:
        with trio.move_on_after(0.3):
            await own.log.append_many((session_id, STANDALONE_STREAM, f"e{n}") for n in range(4 * own.conn.max_batch))
    finally:
        own.server.resume()
    # The pipeline in flight may have run; nothing queued behind it is sent later.
    await wait_until(lambda: not own.conn.statistics().batch_queued, own.conn.command_timeout + MARGIN, "the queue")
    assert await own.log.append(session_id, STANDALONE_STREAM, "after") <= own.conn.max_batch + 2
    assert len(own.stored(session_id)) <= own.conn.max_batch + 2


MARKER = "s-marker"
"""A session both instances hold, for the messages that show everything published before them has arrived."""


async def test_a_sessions_messages_reach_the_instances_holding_it_and_only_those(redis_server: RedisServer) -> None:
    """The bus: two channels per instance whatever the number of sessions, messages addressed by holders set."""
    received: dict[str, list[tuple[str, str]]] = {"a": [], "b": []}
    async with trio.open_nursery() as nursery:
        buses = {}
        logs = {}
        for name in ("a", "b"):
            conn = await nursery.start(RedisConnection(redis_server.url, command_timeout=1.0).run)
            logs[name] = RedisEventLog(conn, instance_id=name, max_events=100, ttl=600)
            buses[name] = bus = await nursery.start(RedisBus(conn, instance_id=name, holder_ttl=600).run)

            async def on_message(session_id: str, message: SessionMessage, name: str = name) -> None:
                received[name].append((session_id, type(message).__name__))

            bus.set_handler(on_message)
        shared, only_b = "s-shared", "s-only-b"
        for session_id in (shared, only_b, MARKER):
            redis_server.client().set(session_key(session_id), b"{}", px=600_000)
        await buses["a"].subscribe(shared)
        await buses["b"].subscribe(shared)
        for bus in buses.values():
            await bus.subscribe(MARKER)
        await buses["b"].subscribe(only_b)
        many = [f"s-{n}" for n in range(200)]
        for session_id in many:
            await buses["b"].subscribe(session_id)
        channels = {c.decode() for c in redis_server.client().pubsub_shardchannels("refserver:*")}
        assert channels == {"refserver:{bus}", "refserver:{inbox:a}", "refserver:{inbox:b}"}  # not one per session

        async def settle(expected: dict[str, list[tuple[str, str]]]) -> None:
            # A marker to each instance from the other, published after what is expected: one subscriber gets
            # messages in publishing order, so once the markers are in, anything else sent before them is too.
            await buses["a"].publish(MARKER, CancelRequest("to b"))
            await buses["b"].publish(MARKER, CancelRequest("to a"))
            await wait_until(lambda: all((MARKER, "CancelRequest") in got for got in received.values()), 5, "markers")
            assert {name: [m for m in got if m[0] != MARKER] for name, got in received.items()} == expected
            assert all(got.count((MARKER, "CancelRequest")) == 1 for got in received.values()), received
            for lst in received.values():
                lst.clear()

        await buses["a"].publish(only_b, CancelRequest(1))
        await settle({"a": [], "b": [(only_b, "CancelRequest")]})
        await buses["a"].publish(shared, StateChanged(SessionRecord(shared, "streamable", None)))
        # Not back to the publisher, although it holds the session: it acted on the message itself first.
        await settle({"a": [], "b": [(shared, "StateChanged")]})
        await logs["a"].append(shared, STANDALONE_STREAM, "from a")
        await settle({"a": [], "b": [(shared, "EventAppended")]})  # not announced back to the instance that appended
        await buses["b"].unsubscribe(shared)
        await wait_until(
            lambda: redis_server.client().smembers(f"refserver:{{{shared}}}:holders") == {b"a"}, 5, "b gone"
        )
        await logs["a"].append(shared, STANDALONE_STREAM, "b left")
        await buses["b"].publish(shared, SessionDeleted())
        await settle({"a": [(shared, "SessionDeleted")], "b": []})

        # Redis restarted empty: the instances join the holders sets again when their subscriber is back.
        redis_server.kill()
        redis_server.start()
        await wait_until(lambda: buses["b"].connected and buses["b"].statistics().reconnects > 0, 10, "b back")
        received["a"].clear()
        received["b"].clear()  # the resyncs of the reconnect
        await wait_until(
            lambda: redis_server.client().sismember(f"refserver:{{{only_b}}}:holders", "b"), 5, "b rejoined"
        )
        await wait_until(
            lambda: redis_server.client().smembers(f"refserver:{{{MARKER}}}:holders") == {b"a", b"b"},
            5,
            "both rejoined the markers' session",
        )
        await buses["a"].publish(only_b, CancelRequest(2))
        await settle({"a": [], "b": [(only_b, "CancelRequest")]})
        nursery.cancel_scope.cancel()


async def test_dead_holders_are_forgotten_and_a_lapsed_instance_joins_again(redis_server: RedisServer) -> None:
    """An instance killed without leaving drops out of the holders sets at the next message; a live instance
    whose liveness lapsed (stalled past INSTANCE_TTL) and was dropped joins again at its next refresh."""
    received: list[tuple[str, str]] = []
    resynced: list[list[str]] = []
    client = redis_server.client()
    async with trio.open_nursery() as nursery:
        conn = await nursery.start(RedisConnection(redis_server.url, command_timeout=1.0).run)
        bus = await nursery.start(RedisBus(conn, instance_id="alive", holder_ttl=600).run)
        other_conn = await nursery.start(RedisConnection(redis_server.url, command_timeout=1.0).run)
        other = await nursery.start(RedisBus(other_conn, instance_id="other", holder_ttl=600).run)

        async def on_message(session_id: str, message: SessionMessage) -> None:
            received.append((session_id, type(message).__name__))

        async def on_resync(session_ids: list[str]) -> None:
            resynced.append(session_ids)

        bus.set_handler(on_message)
        bus.set_resync_handler(on_resync)
        session_id = "s-holders"
        holders = f"refserver:{{{session_id}}}:holders"
        await bus.subscribe(session_id)
        client.sadd(holders, "crashed")  # an instance that died: its liveness key is gone
        await other.publish(
            session_id, StateChanged(SessionRecord(session_id, "streamable", None))
        )  # a message from another instance
        await wait_until(lambda: received == [(session_id, "StateChanged")], 5, "the live holder's message")
        assert client.smembers(holders) == {b"alive"}

        client.delete("refserver:instance:alive")  # as if this instance had stalled past INSTANCE_TTL...
        client.srem(holders, "alive")  # ...and another instance's message had dropped it
        await wait_until(lambda: client.sismember(holders, "alive") and resynced, 10, "the instance to join and resync")
        assert bus.statistics().liveness_lapses == 1
        assert resynced == [[session_id]]  # what was published meanwhile is re-read
        nursery.cancel_scope.cancel()
