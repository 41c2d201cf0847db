"""One overflow rule for both event logs: a stream over its bound drops its oldest events and goes on (so does its
session); a read after a dropped event gets EventsGone, and a `Last-Event-ID` resumption from one gets 400.

Real registry, sessions, dispatcher and reference features over the memory log and over a real redis-server,
then the same through real HTTP against real Hypercorn.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import trio

from refserver.backend.events import EventLog, StreamRead
from refserver.backend.memory import MemoryEventLog
from refserver.backend.redis.bus import RedisBus
from refserver.backend.redis.connection import RedisConnection
from refserver.backend.redis.events import RedisEventLog
from refserver.backend.redis.sessions import RedisSessionStore
from refserver.dispatch import RequestCore
from refserver.errors import EventsGone
from refserver.features import reference
from refserver.features.catalog import FeatureIndex
from refserver.protocol.jsonrpc import Notification, Request
from refserver.protocol.sse import SSEDecoder
from refserver.registry import SessionRegistry
from refserver.session import Session
from tests.conftest import initialize, session_headers, wait_until
from tests.redis_server import RedisServer

BOUND = 10
"""Events kept per stream in these tests."""
STEPS = 5 * BOUND
"""Progress notifications of the long call: the stream gets STEPS + 1 events (its response last)."""
FIRST_KEPT = STEPS + 2 - BOUND
WAIT = 15.0
INIT = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}


def long_call(request_id: int) -> Request:
    arguments = {"duration": 0, "steps": STEPS}
    return Request(
        request_id,
        "tools/call",
        {"name": "longRunningOperation", "arguments": arguments, "_meta": {"progressToken": "p"}},
    )


@pytest.fixture(params=["memory", "redis"])
async def registry(request: pytest.FixtureRequest, shared_redis_server: RedisServer) -> AsyncIterator[SessionRegistry]:
    handler = RequestCore(FeatureIndex.build([reference.build_catalog()]))
    async with trio.open_nursery() as nursery:
        if request.param == "memory":
            registry = SessionRegistry(
                events=MemoryEventLog(BOUND), core=handler, idle_ttl=600.0, max_sessions=10, client_request_timeout=5
            )
        else:
            conn = await nursery.start(RedisConnection(shared_redis_server.url).run)
            bus = await nursery.start(RedisBus(conn, instance_id="overflow", holder_ttl=600).run)
            registry = SessionRegistry(
                events=RedisEventLog(conn, instance_id="overflow", max_events=BOUND, ttl=600),
                store=RedisSessionStore(conn, bus),
                bus=bus,
                core=handler,
                idle_ttl=600.0,
                max_sessions=10,
                client_request_timeout=5,
            )
        await nursery.start(registry.run)
        yield registry
        nursery.cancel_scope.cancel()


async def read_closed(events: EventLog, session: Session, stream_id: str, after_seq: int) -> StreamRead:
    reads: list[StreamRead] = []

    async def closed() -> bool:
        reads.append(await events.read_after(session.id, stream_id, after_seq))
        return reads[-1].closed

    await wait_until(closed, WAIT, f"stream {stream_id} to close")
    return reads[-1]


@pytest.mark.parametrize("served", [False, True], ids=["kept-here", "served-as-sse"])
async def test_a_stream_over_its_bound_drops_its_oldest_events_and_goes_on(
    registry: SessionRegistry, served: bool
) -> None:
    events = registry.events
    session = await registry.create_session("streamable")
    init_stream = await session.start_requests([Request(0, "initialize", INIT)])
    await read_closed(events, session, init_stream, 0)
    await session.receive_notification(Notification("notifications/initialized"))

    stream_id = await session.start_requests([long_call(1)])
    if served:
        await events.persist(session.id, stream_id)  # Redis: from now on in a Redis Stream, trimmed by MAXLEN
    kept = await read_closed(events, session, stream_id, FIRST_KEPT - 1)

    # The newest BOUND events are kept, the response last; the oldest were dropped, the session lives on.
    messages = [json.loads(e.data) for e in kept.events]
    assert [e.seq for e in kept.events] == list(range(FIRST_KEPT, STEPS + 2))
    assert [m["params"]["progress"] for m in messages[:-1]] == list(range(FIRST_KEPT, STEPS + 1))
    assert messages[-1]["id"] == 1 and "result" in messages[-1]
    assert not session.closed
    # Asking for events after a dropped one is refused, with the oldest kept.
    for after_seq in (0, FIRST_KEPT - 2):
        with pytest.raises(EventsGone) as gone:
            await events.read_after(session.id, stream_id, after_seq)
        assert gone.value.first_kept == FIRST_KEPT and gone.value.http_status == 400
    ping_stream = await session.start_requests([Request(2, "ping")])
    (pong,) = (await read_closed(events, session, ping_stream, 0)).events
    assert json.loads(pong.data) == {"jsonrpc": "2.0", "id": 2, "result": {}}


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_resuming_from_a_dropped_event_is_refused_with_400(
    backend: str, make_server: Any, shared_redis_server: RedisServer, http: httpx.AsyncClient
) -> None:
    settings: dict[str, Any] = {"event_log_max_events": BOUND}
    if backend == "redis":
        settings["redis_url"] = shared_redis_server.url
    server = make_server(**settings)
    session_id = await initialize(http, server.mcp_url)
    headers = session_headers(session_id)
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": long_call(1).params}
    ids: list[str] = []
    last: dict[str, Any] = {}
    with trio.fail_after(WAIT):
        async with http.stream("POST", server.mcp_url, json=call, headers=headers) as response:
            decoder = SSEDecoder()
            async for chunk in response.aiter_bytes():
                for event in decoder.feed(chunk):
                    ids.append(str(event.id))
                    last = json.loads(event.data) if event.data else last
    assert last["id"] == 1 and "result" in last  # the newest events reach the client whatever it missed
    stream_id = ids[0].rpartition(".")[0]  # the priming event's id: `<stream>.0`

    refused = await http.get(server.mcp_url, headers={**headers, "Last-Event-ID": f"{stream_id}.1"})
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["code"] == -32600 and "no longer kept" in error["message"]
    # The newest events can still be replayed, and the session is alive.
    with trio.fail_after(WAIT):
        async with http.stream(
            "GET", server.mcp_url, headers={**headers, "Last-Event-ID": f"{stream_id}.{FIRST_KEPT - 1}"}
        ) as resumed:
            assert resumed.status_code == 200
            replayed = [event async for event in _events(resumed) if event]
    assert json.loads(replayed[-1])["id"] == 1 and len(replayed) == BOUND
    ping = await http.post(server.mcp_url, json={"jsonrpc": "2.0", "id": 2, "method": "ping"}, headers=headers)
    assert ping.json() == {"jsonrpc": "2.0", "id": 2, "result": {}}


async def _events(response: httpx.Response) -> AsyncIterator[str]:
    decoder = SSEDecoder()
    async for chunk in response.aiter_bytes():
        for event in decoder.feed(chunk):
            yield event.data or ""
