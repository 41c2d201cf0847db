"""After the subscriber connection comes back, one resync for every session held: listeners re-read, and the
sessions Redis lost end here. Real registry, sessions, event log, store and bus on a real redis-server."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import attrs
import pytest
import trio

from refserver.backend.events import STANDALONE_STREAM
from refserver.backend.redis.bus import RedisBus
from refserver.backend.redis.connection import RedisConnection
from refserver.backend.redis.events import RedisEventLog
from refserver.backend.redis.sessions import RedisSessionStore
from refserver.dispatch import RequestCore
from refserver.errors import BackendUnavailable
from refserver.features import reference
from refserver.features.catalog import FeatureIndex
from refserver.protocol.jsonrpc import Request, Response
from refserver.registry import SessionRegistry
from refserver.session import Session
from refserver.session_calls import answer_request
from tests.conftest import wait_until
from tests.redis_server import RedisServer

SESSIONS = 300
INIT = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}


@attrs.define
class Instance:
    registry: SessionRegistry
    bus: RedisBus
    events: RedisEventLog
    core: RequestCore


@pytest.fixture
async def instance(redis_server: RedisServer) -> AsyncIterator[Instance]:
    async with trio.open_nursery() as nursery:
        conn = await nursery.start(RedisConnection(redis_server.url, command_timeout=2.0).run)
        events = RedisEventLog(conn, instance_id="resync", max_events=100, ttl=600)
        bus = await nursery.start(RedisBus(conn, instance_id="resync", holder_ttl=600).run)
        core = RequestCore(FeatureIndex.build([reference.build_catalog()]))
        registry = SessionRegistry(
            events=events,
            store=RedisSessionStore(conn, bus),
            bus=bus,
            core=core,
            idle_ttl=600.0,
            max_sessions=SESSIONS + 10,
            client_request_timeout=30.0,
        )
        await nursery.start(registry.run)
        yield Instance(registry, bus, events, core)
        nursery.cancel_scope.cancel()


async def initialized_session(instance: Instance) -> Session:
    """A session as a client makes one: it reaches Redis (and its holders set) with its initialize answer."""
    session = await instance.registry.create_session("streamable")
    stream_id = await session.start_requests([Request(0, "initialize", INIT)])

    async def answered() -> bool:
        return (await instance.events.read_after(session.id, stream_id, 0)).closed

    await wait_until(answered, 5, "initialize to be answered")
    assert session.stored
    return session


def calls(server: RedisServer, command: str) -> int:
    return int(server.client().info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))


async def test_a_dropped_subscriber_resyncs_every_session_in_a_few_round_trips(
    redis_server: RedisServer, instance: Instance
) -> None:
    sessions = [await initialized_session(instance) for _ in range(SESSIONS)]
    woken: list[str] = []

    async def listen(session_id: str, task_status: trio.TaskStatus[None]) -> None:
        with instance.events.watching(session_id, STANDALONE_STREAM):
            task_status.started()
            await instance.events.wait_for_events(session_id, STANDALONE_STREAM, 0)
            woken.append(session_id)

    async with trio.open_nursery() as nursery:
        for session in sessions[:10]:
            await nursery.start(listen, session.id)
        gets, exists = calls(redis_server, "get"), calls(redis_server, "exists")
        # Redis keeps its data; only the subscriber connection goes (as in a network blip).
        redis_server.client().client_kill_filter(_type="pubsub")
        await wait_until(lambda: instance.bus.statistics().reconnects > 0 and instance.bus.connected, 10, "back")
        await wait_until(lambda: len(woken) == 10, 5, "listeners woken to re-read")
    assert calls(redis_server, "get") == gets  # no session loaded one by one
    assert calls(redis_server, "exists") - exists == SESSIONS  # each checked once, in pipelines
    assert not any(s.closed for s in sessions)  # all still in Redis: all kept
    assert instance.bus.statistics().sessions_held == SESSIONS


async def test_sessions_lost_by_a_redis_restart_end_at_the_resync(
    redis_server: RedisServer, instance: Instance
) -> None:
    sessions = [await initialized_session(instance) for _ in range(SESSIONS)]
    redis_server.kill()
    redis_server.start()  # empty: no persistence
    await wait_until(lambda: all(s.closed for s in sessions), 15, "every session to end")
    assert {s.close_reason for s in sessions} == {"gone"}
    await wait_until(lambda: len(instance.registry) == 0, 5, "the registry to let them go")


async def test_a_worker_busy_past_the_command_bound_does_not_resync(
    redis_server: RedisServer, instance: Instance
) -> None:
    """A poll that comes back late because the worker itself was busy (a big notification fan-out on a shared core)
    has lost nothing: the subscriber keeps its connection, nobody is resynced, and messages still arrive."""
    session = await instance.registry.create_session("streamable")
    connection_before = [c["id"] for c in redis_server.client().client_list(_type="pubsub")]
    await trio.sleep(0.2)  # the subscriber is polling
    time.sleep(2.5)  # noqa: ASYNC251 - the whole worker blocked past the 2 s command bound, on purpose
    await trio.sleep(0.5)
    assert instance.bus.statistics().reconnects == 0
    assert [c["id"] for c in redis_server.client().client_list(_type="pubsub")] == connection_before
    received_before = instance.bus.statistics().received
    redis_server.client().execute_command("SPUBLISH", instance.bus._inbox, b'{"not": "a session message"}')
    await wait_until(lambda: instance.bus.statistics().received > received_before, 5, "a message after the stall")
    assert not session.closed


async def test_a_state_change_redis_refused_is_not_kept_by_the_instance(
    redis_server: RedisServer, instance: Instance
) -> None:
    """`logging/setLevel` on a session this instance holds, while Redis is gone: the client is told it failed, and
    this instance's copy keeps the level Redis and every other instance still have."""
    session = await instance.registry.create_session("streamable")
    initialize = Request(
        0,
        "initialize",
        {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}},
    )
    assert isinstance(await answer_request(instance.core, session, initialize, "r-init"), Response)
    set_level = Request(1, "logging/setLevel", {"level": "warning"})
    assert isinstance(await answer_request(instance.core, session, set_level, "r-1"), Response)
    assert session.state.log_level == "warning"
    redis_server.stop()
    try:
        with pytest.raises(BackendUnavailable):
            await answer_request(instance.core, session, Request(2, "logging/setLevel", {"level": "debug"}), "r-2")
        assert session.state.log_level == "warning"
    finally:
        redis_server.start()
