"""The listen hub without sockets: filters, delivery, the bounded queue, revocation, expiry, drain."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import trio
import trio.testing

from refserver.backend.messages import BusResynced, ListenNotice, TokenRevoked
from refserver.backend.sessions import LocalBus
from refserver.errors import InvalidParams, ServiceUnavailable
from refserver.oauth.models import AccessInfo
from refserver.protocol.sse import SSEDecoder
from refserver.transport.listen import LISTENER_QUEUE, ListenFilter, ListenHub, listen_stream

SERVER_INFO = {"name": "refserver", "version": "test"}


def access(token_id: str = "jti-1", grant_id: str | None = "grant-1", expires_in: float = 3600) -> AccessInfo:
    return AccessInfo(
        subject="alice",
        client_id="c",
        scopes=frozenset({"mcp"}),
        expires_at=int(time.time() + expires_in),
        token_id=token_id,
        grant_id=grant_id,
    )


def messages(chunks: list[bytes]) -> list[dict[str, Any]]:
    decoder = SSEDecoder()
    return [json.loads(e.data) for chunk in chunks for e in decoder.feed(chunk) if e.data]


def test_filters_parse_and_select() -> None:
    wanted = ListenFilter.parse({"notifications": {"toolsListChanged": True, "resourceSubscriptions": ["a://1"]}})
    assert wanted.as_wire() == {"toolsListChanged": True, "resourceSubscriptions": ["a://1"]}
    assert [n.method for n in wanted.notifications_for(ListenNotice("tools"))] == ["notifications/tools/list_changed"]
    assert wanted.notifications_for(ListenNotice("prompts")) == []
    assert [n.params for n in wanted.notifications_for(ListenNotice("resource", "a://1"))] == [{"uri": "a://1"}]
    assert wanted.notifications_for(ListenNotice("resource", "a://2")) == []
    assert len(wanted.notifications_for(ListenNotice("resource"))) == 1  # the periodic "all subscribed" update
    for bad in (
        None,
        {},
        {"notifications": []},
        {"notifications": {"toolsListChanged": "yes"}},
        {"notifications": {"resourceSubscriptions": "a://1"}},
    ):
        with pytest.raises(InvalidParams):
            ListenFilter.parse(bad)


async def test_a_stream_acknowledges_tags_and_ends_gracefully_at_drain() -> None:
    hub = ListenHub(LocalBus(), max_listeners=10)
    wanted = ListenFilter.parse({"notifications": {"promptsListChanged": True}})
    chunks: list[bytes] = []
    with trio.fail_after(5), hub.listening("L1", wanted, None) as listener:
        stream = listen_stream(listener, heartbeat_interval=60, server_info=SERVER_INFO)
        chunks.append(await stream.__anext__())
        await hub.publish(ListenNotice("tools"))  # not asked for
        await hub.publish(ListenNotice("prompts"))
        chunks.append(await stream.__anext__())
        hub.begin_drain()
        chunks.extend([chunk async for chunk in stream])
    ack, changed, result = messages(chunks)
    assert ack["method"] == "notifications/subscriptions/acknowledged"
    assert ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == "L1"
    assert changed["method"] == "notifications/prompts/list_changed"
    assert changed["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == "L1"
    assert result["id"] == "L1" and result["result"]["resultType"] == "complete"
    with pytest.raises(ServiceUnavailable), hub.listening("L2", wanted, None):
        pass  # a draining hub takes no new listener
    assert len(hub) == 0


async def test_a_listener_that_cannot_keep_up_is_ended_not_buffered() -> None:
    hub = ListenHub(LocalBus(), max_listeners=10)
    with hub.listening("L", ListenFilter.parse({"notifications": {"toolsListChanged": True}}), None) as listener:
        for _ in range(LISTENER_QUEUE + 5):
            await hub.publish(ListenNotice("tools"))
        assert listener.end_reason == "overflow"
        stream = listen_stream(listener, heartbeat_interval=60, server_info=SERVER_INFO)
        chunks = [chunk async for chunk in stream]
    sent = messages(chunks)
    assert len(sent) == 1 + LISTENER_QUEUE + 1  # the ack, what was queued, and the result telling it to re-listen
    assert hub.overflowed == 1


async def test_revocation_ends_the_listeners_of_that_token_or_grant_only() -> None:
    hub = ListenHub(LocalBus(), max_listeners=10)
    wanted = ListenFilter.parse({"notifications": {"toolsListChanged": True}})
    with (
        hub.listening("a", wanted, access("jti-a", "grant-1")) as a,
        hub.listening("b", wanted, access("jti-b", "grant-2")) as b,
        hub.listening("c", wanted, access("jti-c", "grant-3")) as c,
        hub.listening("open", wanted, None) as unauthenticated,
    ):
        await hub.on_global_message(TokenRevoked("jti-a", None))
        await hub.on_global_message(TokenRevoked(None, "grant-2"))
        assert (a.end_reason, b.end_reason, c.end_reason, unauthenticated.end_reason) == (
            "revoked",
            "revoked",
            None,
            None,
        )


async def test_too_many_listeners_are_refused() -> None:
    hub = ListenHub(LocalBus(), max_listeners=1)
    wanted = ListenFilter.parse({"notifications": {}})
    with hub.listening("one", wanted, None), pytest.raises(ServiceUnavailable), hub.listening("two", wanted, None):
        pass
    with hub.listening("three", wanted, None):
        assert len(hub) == 1


async def test_the_stream_ends_when_its_token_expires(autojump_clock: trio.testing.MockClock) -> None:
    hub = ListenHub(LocalBus(), max_listeners=10)
    with hub.listening("L", ListenFilter.parse({"notifications": {}}), access(expires_in=90)) as listener:
        started = trio.current_time()
        chunks = [chunk async for chunk in listen_stream(listener, heartbeat_interval=30, server_info=SERVER_INFO)]
    assert 88 <= trio.current_time() - started <= 91
    assert sum(chunk.startswith(b":") for chunk in chunks) >= 2  # heartbeats while idle
    assert [m["method"] for m in messages(chunks)] == ["notifications/subscriptions/acknowledged"]


async def test_after_the_bus_was_away_every_listener_is_told_to_listen_again() -> None:
    hub = ListenHub(LocalBus(), max_listeners=10)
    with hub.listening("L", ListenFilter.parse({"notifications": {"toolsListChanged": True}}), None) as listener:
        await hub.on_global_message(BusResynced())
        chunks = [chunk async for chunk in listen_stream(listener, heartbeat_interval=60, server_info=SERVER_INFO)]
    ack, result = messages(chunks)
    assert ack["method"] == "notifications/subscriptions/acknowledged" and result["id"] == "L"
