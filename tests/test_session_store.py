"""The Redis session store: the first record joins the holders set and tells nobody; later saves announce themselves
to the other holders only. Two instances' connections and buses on a real redis-server; nothing is mocked."""

from __future__ import annotations

import json

import attrs
import trio

from refserver.backend.messages import SessionMessage, StateChanged
from refserver.backend.redis.bus import RedisBus
from refserver.backend.redis.connection import RedisConnection
from refserver.backend.redis.keys import holders_key, session_key
from refserver.backend.redis.sessions import RedisSessionStore
from refserver.backend.sessions import SessionRecord
from tests.conftest import wait_until
from tests.redis_server import RedisServer

TTL = 600.0


def test_a_record_keeps_every_field_through_its_json() -> None:
    record = SessionRecord(
        "s-1",
        "legacy",
        "alice",
        phase="ready",
        protocol_version="2025-06-18",
        client_capabilities={"sampling": {}},
        client_info={"name": "c", "version": "1"},
        log_level="error",
        subscriptions=["test://static/resource/1"],
    )
    assert SessionRecord.from_json(record.to_json()) == record
    # Written by hand for speed: a field added to the record must be added there too.
    assert set(json.loads(record.to_json())) == {field.name for field in attrs.fields(SessionRecord)}


async def test_first_save_joins_the_holders_and_later_saves_reach_the_other_holders(
    redis_server: RedisServer,
) -> None:
    received: dict[str, list[tuple[str, SessionMessage]]] = {"a": [], "b": []}
    client = redis_server.client()
    async with trio.open_nursery() as nursery:
        stores: dict[str, RedisSessionStore] = {}
        buses: dict[str, RedisBus] = {}
        for name in ("a", "b"):
            conn = await nursery.start(RedisConnection(redis_server.url, command_timeout=2.0).run)
            buses[name] = bus = await nursery.start(RedisBus(conn, instance_id=name, holder_ttl=TTL).run)
            stores[name] = RedisSessionStore(conn, bus)

            async def on_message(session_id: str, message: SessionMessage, name: str = name) -> None:
                received[name].append((session_id, message))

            bus.set_handler(on_message)
        record = SessionRecord("s-new", "streamable", "alice", phase="initializing", protocol_version="2025-11-25")
        await stores["a"].save_first(record, TTL)
        assert SessionRecord.from_json(client.get(session_key("s-new"))) == record
        assert client.smembers(holders_key("s-new")) == {b"a"}
        assert 0 < client.pttl(session_key("s-new")) <= TTL * 1000
        assert 0 < client.pttl(holders_key("s-new")) <= TTL * 1000
        assert buses["a"].statistics().sessions_held == 1  # rejoined and resynced after an outage like any other

        await buses["b"].subscribe("s-new")  # b adopts the session
        changed = attrs.evolve(record, log_level="error", subscriptions=["test://static/resource/1"])
        await stores["a"].save(changed, TTL)
        assert SessionRecord.from_json(client.get(session_key("s-new"))) == changed
        await wait_until(lambda: bool(received["b"]), 5, "b to hear of the new state")
        assert received["b"] == [("s-new", StateChanged(changed))]
        # Never back to the instance that saved; and b's own save reaches a.
        again = attrs.evolve(changed, log_level="debug")
        await stores["b"].save(again, TTL)
        await wait_until(lambda: bool(received["a"]), 5, "a to hear of b's state")
        assert received["a"] == [("s-new", StateChanged(again))]
        assert received["b"] == [("s-new", StateChanged(changed))]
        nursery.cancel_scope.cancel()
