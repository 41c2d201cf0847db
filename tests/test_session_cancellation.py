"""Cancellation is exact: each path cancels precisely the work it owns and leaves state consistent.

These drive the real session, registry, dispatcher, reference features and in-memory event log on
trio's autojump clock (virtual time, no real sleeps); the HTTP-level paths are in test_http_lifecycle.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing

from refserver.backend.events import STANDALONE_STREAM
from refserver.backend.memory import MemoryEventLog
from refserver.dispatch import RequestCore
from refserver.errors import SessionNotFound
from refserver.features import reference
from refserver.features.catalog import FeatureIndex
from refserver.protocol.jsonrpc import Notification, Request, Response
from refserver.registry import SessionRegistry
from refserver.session import Session

# Each test names `autojump_clock` itself: pytest-trio only takes the clock from the test's own arguments.
IDLE_TTL = 60.0
INIT = {
    "protocolVersion": "2025-11-25",
    "capabilities": {"sampling": {}},
    "clientInfo": {"name": "t", "version": "0"},
}


@pytest.fixture
async def registry(autojump_clock: trio.testing.MockClock) -> AsyncIterator[SessionRegistry]:
    dispatcher = RequestCore(FeatureIndex.build([reference.build_catalog()]))
    registry = SessionRegistry(
        events=MemoryEventLog(100),
        core=dispatcher,
        idle_ttl=IDLE_TTL,
        max_sessions=10,
        client_request_timeout=30.0,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(registry.run)
        yield registry
        nursery.cancel_scope.cancel()


async def events_of(session: Session, stream_id: str) -> list[dict[str, Any]]:
    read = await session.events.read_after(session.id, stream_id, 0)
    return [json.loads(e.data) for e in read.events]


async def wait_closed(session: Session, stream_id: str) -> list[dict[str, Any]]:
    with trio.fail_after(3600), session.events.watching(session.id, stream_id):
        while True:
            read = await session.events.read_after(session.id, stream_id, 0)
            if read.closed:
                return [json.loads(e.data) for e in read.events]
            await session.events.wait_for_events(session.id, stream_id, read.events[-1].seq if read.events else 0)


async def ready_session(registry: SessionRegistry) -> Session:
    session = await registry.create_session("streamable")
    stream = await session.start_requests([Request(0, "initialize", INIT)])
    (reply,) = await wait_closed(session, stream)
    assert reply["result"]["protocolVersion"] == "2025-11-25"
    await session.receive_notification(Notification("notifications/initialized"))
    return session


def long_call(request_id: int | str, duration: float = 10, steps: int = 5) -> Request:
    return Request(
        request_id, "tools/call", {"name": "longRunningOperation", "arguments": {"duration": duration, "steps": steps}}
    )


async def test_cancelled_notification_cancels_exactly_that_request(
    registry: SessionRegistry, autojump_clock: trio.testing.MockClock
) -> None:
    session = await ready_session(registry)
    int_stream = await session.start_requests([long_call(1)])
    str_stream = await session.start_requests([long_call("1")])
    assert session.statistics()["in_flight"] == 2

    await trio.sleep(3)
    await session.receive_notification(Notification("notifications/cancelled", {"requestId": "1"}))
    cancelled = await wait_closed(session, str_stream)
    assert cancelled == []  # no response is owed for a cancelled request
    assert session.statistics()["in_flight"] == 1

    completed = await wait_closed(session, int_stream)
    assert completed[-1]["id"] == 1
    assert "Long running operation completed" in completed[-1]["result"]["content"][0]["text"]
    assert session.statistics()["in_flight"] == 0
    assert not session.closed


async def test_cancelling_an_unknown_or_finished_request_changes_nothing(
    registry: SessionRegistry, autojump_clock: trio.testing.MockClock
) -> None:
    session = await ready_session(registry)
    stream = await session.start_requests([long_call(7, duration=1, steps=1)])
    await wait_closed(session, stream)
    assert session.cancel_request(7) is False
    assert session.cancel_request("7") is False
    assert session.cancel_request(None) is False
    assert session.cancel_request(True) is False
    assert session.statistics()["in_flight"] == 0


async def test_initialize_cannot_be_cancelled(
    registry: SessionRegistry, autojump_clock: trio.testing.MockClock
) -> None:
    session = await registry.create_session("streamable")
    await session.start_requests([Request(0, "initialize", INIT)])
    assert session.cancel_request(0) is False


async def test_delete_cancels_everything_the_session_owns(
    registry: SessionRegistry, autojump_clock: trio.testing.MockClock
) -> None:
    session = await ready_session(registry)
    streams = [await session.start_requests([long_call(i, duration=100)]) for i in range(3)]
    await trio.sleep(1)
    other = await ready_session(registry)
    other_stream = await other.start_requests([long_call(1, duration=4, steps=2)])

    await registry.delete(session.id)
    with trio.fail_after(1):
        await session.wait_closed()
    await trio.lowlevel.checkpoint()
    with pytest.raises(SessionNotFound):
        await registry.get(session.id)
    for stream in (*streams, STANDALONE_STREAM):
        read = await session.events.read_after(session.id, stream, 0)
        assert not read.exists  # the event log forgot the session
    assert session.statistics()["in_flight"] == 0
    assert session.close_reason == "deleted"

    # The other session's work is untouched.
    completed = await wait_closed(other, other_stream)
    assert completed[-1]["id"] == 1 and "result" in completed[-1]


async def test_idle_session_is_reaped_after_ttl_but_not_while_working(
    registry: SessionRegistry, autojump_clock: trio.testing.MockClock
) -> None:
    idle = await ready_session(registry)
    busy = await ready_session(registry)
    busy_stream = await busy.start_requests([long_call(1, duration=IDLE_TTL * 3, steps=3)])

    await trio.sleep(IDLE_TTL + 10)
    assert idle.closed and idle.close_reason == "idle"
    with pytest.raises(SessionNotFound):
        await registry.get(idle.id)
    assert await registry.get(busy.id) is busy  # in flight: not idle

    completed = await wait_closed(busy, busy_stream)
    assert "result" in completed[-1]
    await trio.sleep(IDLE_TTL + 10)
    assert busy.closed and busy.close_reason == "idle"
    assert len(registry) == 0
    assert registry.statistics()["reaped_idle"] == 2


async def test_activity_postpones_expiry(registry: SessionRegistry, autojump_clock: trio.testing.MockClock) -> None:
    session = await ready_session(registry)
    for _ in range(5):
        await trio.sleep(IDLE_TTL * 0.6)
        stream = await session.start_requests([Request("p", "ping", None)])
        await wait_closed(session, stream)
    assert not session.closed


async def test_sampling_reply_is_routed_to_the_waiting_tool(
    registry: SessionRegistry, autojump_clock: trio.testing.MockClock
) -> None:
    session = await ready_session(registry)
    call = Request(5, "tools/call", {"name": "sampleLLM", "arguments": {"prompt": "hi", "maxTokens": 10}})
    stream = await session.start_requests([call])
    with trio.fail_after(5), session.events.watching(session.id, stream):
        await session.events.wait_for_events(session.id, stream, 0)
    (sampling,) = await events_of(session, stream)
    assert sampling["method"] == "sampling/createMessage"
    assert sampling["params"]["maxTokens"] == 10
    answer = {"role": "assistant", "content": {"type": "text", "text": "42"}, "model": "m"}
    assert await session.receive_reply(Response(sampling["id"], answer))
    assert not await session.receive_reply(Response(sampling["id"], answer))  # a second answer is ignored
    completed = await wait_closed(session, stream)
    assert completed[-1]["result"]["content"][0]["text"] == "LLM sampling result: 42"


async def test_cancelling_a_tool_waiting_for_sampling_tells_the_client(
    registry: SessionRegistry, autojump_clock: trio.testing.MockClock
) -> None:
    session = await ready_session(registry)
    call = Request(6, "tools/call", {"name": "sampleLLM", "arguments": {"prompt": "hi"}})
    stream = await session.start_requests([call])
    with trio.fail_after(5), session.events.watching(session.id, stream):
        await session.events.wait_for_events(session.id, stream, 0)  # the sampling request is out
    assert session.statistics()["pending_client_requests"] == 1
    await session.receive_notification(Notification("notifications/cancelled", {"requestId": 6}))
    sent = await wait_closed(session, stream)
    assert [m.get("method") for m in sent] == ["sampling/createMessage", "notifications/cancelled"]
    assert sent[1]["params"]["requestId"] == sent[0]["id"]
    assert session.statistics()["pending_client_requests"] == 0
    assert session.statistics()["in_flight"] == 0


async def test_unanswered_sampling_times_out_into_a_tool_error(
    registry: SessionRegistry, autojump_clock: trio.testing.MockClock
) -> None:
    session = await ready_session(registry)
    call = Request(8, "tools/call", {"name": "sampleLLM", "arguments": {"prompt": "hi"}})
    stream = await session.start_requests([call])
    sent = await wait_closed(session, stream)  # virtual time runs past the 30 s client timeout
    assert sent[1]["method"] == "notifications/cancelled"
    assert sent[-1]["result"]["isError"] is True
    assert "did not answer" in sent[-1]["result"]["content"][0]["text"]


async def test_registry_shutdown_closes_every_session(autojump_clock: trio.testing.MockClock) -> None:
    dispatcher = RequestCore(FeatureIndex.build([reference.build_catalog()]))
    registry = SessionRegistry(
        events=MemoryEventLog(100), core=dispatcher, idle_ttl=IDLE_TTL, max_sessions=10, client_request_timeout=5
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(registry.run)
        sessions = [await ready_session(registry) for _ in range(3)]
        for session in sessions:
            await session.start_requests([long_call(1, duration=1000)])
        nursery.cancel_scope.cancel()
    assert registry.draining
    assert len(registry) == 0
    for session in sessions:
        assert session.closed and session.close_reason == "shutdown"
        assert session.statistics()["in_flight"] == 0


async def test_session_limit(registry: SessionRegistry, autojump_clock: trio.testing.MockClock) -> None:
    from refserver.errors import TooManySessions

    for _ in range(10):
        await registry.create_session("streamable")
    with pytest.raises(TooManySessions):
        await registry.create_session("streamable")
