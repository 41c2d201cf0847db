"""The bus on Redis: how the instances holding a session hear of what happens to it elsewhere.

Each instance subscribes to two sharded channels (SSUBSCRIBE, Redis 7), whatever the number of sessions: `{bus}`
(messages for every instance, such as revocations) and its own `{inbox:<instance id>}`; on a cluster each lives
on the node owning its slot, and the subscriber holds one connection per such node. A message about a session
(a `SessionMessage`, in its wire form from `wire`) is published, after the script that decided it, to the inbox
of every other instance in the session's `holders` set (an instance joins the set when it creates or adopts the
session, and leaves it when the session closes there). Nothing comes back to the instance that published it, an
append's announcement included (see `events`; the key layout is in `keys`).

Liveness: every instance refreshes `instance:{id}` (INSTANCE_TTL); a publisher drops holders that nobody heard on
their inbox and whose key is gone (`batching.publish_announcements`), so an instance killed without leaving costs
nothing for long. An instance that lost its subscriber
connection, or whose liveness lapsed, joins its sessions' holders sets again and resyncs them: whatever was
published meanwhile is lost, and re-read from Redis.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
from typing import Any, Final

import trio
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline, PubSub

from refserver.backend.messages import BusResynced, GlobalMessage, SessionMessage
from refserver.backend.redis.connection import RedisConnection
from refserver.backend.redis.keys import GLOBAL_CHANNEL, holders_key, inbox_channel, instance_key, milliseconds
from refserver.backend.redis.scripts import PUBLISH_SCRIPT
from refserver.backend.redis.wire import (
    decode_global_message,
    decode_session_message,
    encode_global_message,
    encode_session_message,
)
from refserver.backend.sessions import BusHandler, BusStatistics, GlobalHandler, ResyncHandler
from refserver.errors import BackendUnavailable

logger = logging.getLogger(__name__)

POLL_TIMEOUT: Final = 0.05
"""The subscriber waits at most this long for a message on the asyncio side before handing back control."""
POLL_BOUND: Final = 30.0
"""The trio side's bound on one poll. The poll itself returns after POLL_TIMEOUT of asyncio time whatever Redis does,
so this only catches a wedged bridge. It must not be the 2 s command bound: a poll that came back late because this
worker was busy (one notification fanned out to 10,000 listen streams takes about a second of CPU, more on a shared
core) would be cancelled, and a cancelled read drops the subscriber's socket mid-reply, which forces a resync that
ends every listener on the instance. A dead connection still fails the read at once."""
RECONNECT_DELAY: Final = 0.5
"""Pause between attempts to re-open the subscriber connection while Redis is down."""
SUBSCRIBE_TIMEOUT: Final = 5.0
"""Joining a session's holders waits at most this long for the subscriber connection to be up."""
INSTANCE_TTL: Final = 10.0
"""An instance that has not refreshed its liveness key for this long is considered dead."""
INSTANCE_REFRESH: Final = 3.0
REJOIN_BATCH: Final = 1000
"""Sessions rejoined per pipeline after a reconnect."""


class RedisBus:
    """One subscriber connection per instance, on two channels (all instances, and this one's inbox), reconnecting
    by itself; a session's messages reach the other instances in its holders set."""

    distributed = True

    def __init__(self, conn: RedisConnection, *, instance_id: str, holder_ttl: float) -> None:
        self._conn = conn
        self.instance_id = instance_id
        self._inbox = inbox_channel(instance_id)
        self._holder_ttl_ms = milliseconds(holder_ttl)
        self._handler: BusHandler | None = None
        self._global_handlers: list[GlobalHandler] = []
        self._resync_handler: ResyncHandler | None = None
        self._held: set[str] = set()
        """Sessions this instance is in the holders set of (to rejoin and resync after a reconnect)."""
        self._connected = trio.Event()
        self._received = 0
        self._published = 0
        self._reconnects = 0
        self._lapses = 0

    def set_handler(self, handler: BusHandler) -> None:
        self._handler = handler

    def add_global_handler(self, handler: GlobalHandler) -> None:
        """Messages for every instance (revocations, listen notices); `BusResynced` after a reconnect."""
        self._global_handlers.append(handler)

    async def _to_global_handlers(self, message: GlobalMessage) -> None:
        for handler in self._global_handlers:
            await handler(message)

    def set_resync_handler(self, handler: ResyncHandler) -> None:
        """Called after a reconnect with every session held here: what was published meanwhile is lost."""
        self._resync_handler = handler

    async def publish_global(self, message: GlobalMessage) -> None:
        self._published += 1
        payload = encode_global_message(message)
        await self._conn.call(lambda r: r.spublish(GLOBAL_CHANNEL, payload))

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def run(self, *, task_status: trio.TaskStatus[RedisBus] = trio.TASK_STATUS_IGNORED) -> None:
        """Read messages until cancelled; while Redis is away, retry, then rejoin and resync every session held."""
        started = False
        async with trio.open_nursery() as nursery:
            with contextlib.suppress(BackendUnavailable):
                await self._refresh_liveness()  # before any session joins a holders set: a live instance is kept
            nursery.start_soon(self._keep_instance_alive)
            while True:
                try:
                    subscribers = await self._conn.open_subscribers([GLOBAL_CHANNEL, self._inbox])
                    try:
                        if started:
                            # Redis may have restarted empty: say this instance is alive (else the next message
                            # drops it as dead) and join the holders sets again before the resync, so nothing
                            # published from now on misses it.
                            await self._refresh_liveness()
                            await self._rejoin(list(self._held))
                        self._connected.set()
                        if not started:
                            started = True
                            task_status.started(self)
                        else:
                            # Whatever was published while we were away is in Redis: re-read it.
                            await self._to_global_handlers(BusResynced())
                            if self._resync_handler is not None:
                                await self._resync_handler(list(self._held))
                        await self._read_all(subscribers)
                    finally:
                        self._connected = trio.Event()
                        for subscriber in subscribers:
                            await self._conn.close_subscriber(subscriber)
                except BackendUnavailable as exc:
                    if not started:
                        started = True
                        task_status.started(self)
                    self._reconnects += 1
                    logger.warning("redis bus disconnected (%s); reconnecting", exc)
                    await trio.sleep(RECONNECT_DELAY)

    async def _rejoin(self, session_ids: list[str]) -> None:
        ttl_ms, instance = self._holder_ttl_ms, self.instance_id
        for start in range(0, len(session_ids), REJOIN_BATCH):
            chunk = session_ids[start : start + REJOIN_BATCH]

            async def join(r: Redis, chunk: list[str] = chunk) -> None:
                async with r.pipeline(transaction=False) as pipe:
                    for session_id in chunk:
                        pipe.sadd(holders_key(session_id), instance)
                        pipe.pexpire(holders_key(session_id), ttl_ms)
                    await pipe.execute()

            await self._conn.call(join)

    async def _read_all(self, subscribers: list[PubSub]) -> None:
        """Read every subscriber (one per node) until one of them fails, which ends them all."""
        if len(subscribers) == 1:
            await self._read(subscribers[0])
            return
        failures: list[BackendUnavailable] = []

        async def read(subscriber: PubSub, cancel_scope: trio.CancelScope) -> None:
            try:
                await self._read(subscriber)
            except BackendUnavailable as exc:
                failures.append(exc)
                cancel_scope.cancel()

        async with trio.open_nursery() as readers:
            for subscriber in subscribers:
                readers.start_soon(read, subscriber, readers.cancel_scope)
        raise failures[0]  # the readers only end by failing

    async def _read(self, pubsub: PubSub) -> None:
        while True:
            # Everything already received, in one hop to the asyncio side (one hop per message cannot keep
            # up with a busy cluster).
            for message in await self._conn.call(lambda _r: _receive_batch(pubsub), within=POLL_BOUND):
                if message.get("type") in ("sunsubscribe", b"sunsubscribe"):
                    # Redis dropped the subscription (its slot moved to another node): whatever is published
                    # there from now on is lost to this subscriber. Start over, with a rejoin and a resync.
                    raise BackendUnavailable("a sharded subscription was moved")
                await self._dispatch(message)

    async def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind not in ("smessage", b"smessage"):
            return  # subscription confirmations
        self._received += 1
        try:
            payload = json.loads(message["data"])
        except ValueError:
            logger.warning("ignoring a malformed bus message")
            return
        if not isinstance(payload, dict):
            logger.warning("ignoring a malformed bus message")
            return
        name = message["channel"].decode() if isinstance(message.get("channel"), bytes) else message.get("channel")
        if name == GLOBAL_CHANNEL:
            decoded = decode_global_message(payload)
            if decoded is not None:
                await self._to_global_handlers(decoded)
        elif self._handler is not None:
            addressed = decode_session_message(payload)
            if addressed is not None:
                await self._handler(*addressed)

    async def wait_joinable(self) -> None:
        """Return once this instance may join a holders set (its subscriber is up), or raise after a while."""
        if not self._connected.is_set():
            # Joined while the subscriber is away, messages would be lost until it is back: wait for it a while.
            with trio.move_on_after(SUBSCRIBE_TIMEOUT):
                await self._connected.wait()
            if not self._connected.is_set():
                raise BackendUnavailable("the Redis bus is not connected")

    def held_here(self, session_id: str) -> None:
        """The session's holders set is being joined by another write (the store's first save): rejoin it too."""
        self._held.add(session_id)

    def not_held_here(self, session_id: str) -> None:
        self._held.discard(session_id)

    async def subscribe(self, session_id: str) -> None:
        """Join the session's holders: once this returns, every message about the session reaches this instance."""
        await self.wait_joinable()
        key, instance, ttl_ms = holders_key(session_id), self.instance_id, self._holder_ttl_ms

        def join(pipe: Pipeline) -> None:
            pipe.sadd(key, instance)
            pipe.pexpire(key, ttl_ms)

        self._held.add(session_id)
        try:
            await self._conn.write_batched(join)
        except BaseException:
            self._held.discard(session_id)
            raise

    async def unsubscribe(self, session_id: str) -> None:
        self._held.discard(session_id)
        key, instance = holders_key(session_id), self.instance_id
        await self._conn.write_batched(lambda pipe: pipe.srem(key, instance))

    async def publish(self, session_id: str, message: SessionMessage) -> None:
        payload = encode_session_message(session_id, message)
        self._published += 1
        # On the write lane: after this instance's appends queued before it (a reply follows the events before it).
        await self._conn.run_script_batched(PUBLISH_SCRIPT, [holders_key(session_id)], [payload, self.instance_id])

    async def _refresh_liveness(self) -> bool:
        """Refresh this instance's liveness key; True if it had lapsed (or never existed)."""
        key = instance_key(self.instance_id)
        previous = await self._conn.call(lambda r: r.set(key, b"1", px=milliseconds(INSTANCE_TTL), get=True))
        return previous is None

    async def _keep_instance_alive(self) -> None:
        while True:
            await trio.sleep(INSTANCE_REFRESH)
            try:
                lapsed = await self._refresh_liveness()
            except BackendUnavailable:
                continue
            if lapsed and self.connected:
                # Stalled (or cut off) longer than INSTANCE_TTL: other instances took this one for dead and may
                # have dropped it from holders sets, so messages were lost. Join again, then resync.
                logger.warning("instance liveness lapsed; rejoining %d sessions", len(self._held))
                self._lapses += 1
                with contextlib.suppress(BackendUnavailable):
                    await self._rejoin(list(self._held))
                    if self._resync_handler is not None:
                        await self._resync_handler(list(self._held))

    def statistics(self) -> BusStatistics:
        return BusStatistics(
            connected=self.connected,
            channels=2 if self.connected else 0,
            sessions_held=len(self._held),
            received=self._received,
            published=self._published,
            reconnects=self._reconnects,
            liveness_lapses=self._lapses,
        )


RECEIVE_BATCH: Final = 1000
"""Messages taken per hop to the asyncio side at most (memory bound of one batch)."""


async def _receive_batch(pubsub: PubSub) -> list[dict[str, Any]]:
    """Wait up to POLL_TIMEOUT for a message, then take whatever else is already buffered (bounded)."""
    first = await pubsub.get_message(False, POLL_TIMEOUT)
    if first is None:
        return []
    batch = [first]
    while len(batch) < RECEIVE_BATCH:
        message = await pubsub.get_message(False, 0.0)
        if message is None:
            break
        batch.append(message)
    return batch


def new_instance_id() -> str:
    return secrets.token_hex(8)
