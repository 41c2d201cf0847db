"""Group commit: calls queued by many tasks go out together, one pipeline at a time, on a lane (queue and writer).

So 10,000 appends cost a few dozen round trips instead of 10,000. `RedisConnection` owns a lane for writes and
one for reads, and runs their writers in its own nursery.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio
from redis import exceptions as rx
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from refserver.backend.redis.errors import map_redis_error
from refserver.backend.redis.keys import as_bytes, inbox_channel, instance_key
from refserver.errors import BackendSlow, BackendUnavailable, InternalError

if TYPE_CHECKING:
    from refserver.backend.redis.connection import RedisConnection

BATCH_MAX_CALLS: Final = 512
"""Batched calls per pipeline at most: a full pipeline of appends runs a few milliseconds in Redis, so no other
client waits long behind it, and the replies of one batch stay a bounded amount of memory."""
BATCH_QUEUE_SIZE: Final = 2048
"""Batched calls waiting for the writer at most (four pipelines' worth); beyond that callers wait for room."""


class BatchLane:
    """A bounded queue of batched calls and the one task that sends them: a pipeline at a time, in queue order.

    The writer sends as soon as something is queued (no timer: a lone call costs one round trip, as with `call`),
    and whatever is queued while a pipeline is in flight goes out together in the next one.
    """

    def __init__(self, conn: RedisConnection) -> None:
        self._conn = conn
        self._send, self._receive = trio.open_memory_channel[BatchedCall](BATCH_QUEUE_SIZE)
        self.batches = 0
        self.calls = 0
        self.largest = 0
        self.timeouts = 0

    @property
    def queued(self) -> int:
        return self._send.statistics().current_buffer_used

    async def submit(self, call: BatchedCall) -> list[Any]:
        timeout = self._conn.command_timeout
        try:
            with trio.fail_after(timeout):
                try:
                    # No scheduling point when there is room: waiting for the reply is one already.
                    self._send.send_nowait(call)
                except trio.WouldBlock:
                    await self._send.send(call)
                await call.done.wait()
        except trio.TooSlowError as exc:
            self.timeouts += 1
            raise BackendSlow(f"Redis did not answer within {timeout}s") from exc
        except trio.BrokenResourceError as exc:
            raise BackendUnavailable("Redis connection closed") from exc
        finally:
            # Not sent yet: the writer skips it. Sent: its reply is read (the socket stays in step) and dropped.
            call.abandoned = not call.done.is_set()
        if call.error is not None:
            raise call.error
        return call.replies

    async def submit_many(self, calls: Iterable[BatchedCall]) -> None:
        """Queue `calls` in order and return once the last one has its outcome (see `run_script_many`)."""
        sent: list[BatchedCall] = []
        try:
            for call in calls:
                try:
                    self._send.send_nowait(call)
                except trio.WouldBlock:
                    await self._send.send(call)
                sent.append(call)
            if sent:
                # One writer, FIFO: once the last call has its outcome, so has every call before it.
                await sent[-1].done.wait()
        except trio.BrokenResourceError as exc:
            raise BackendUnavailable("Redis connection closed") from exc
        finally:
            for call in sent:
                call.abandoned = not call.done.is_set()

    async def write_batches(self) -> None:
        """Send what is queued until cancelled (by `RedisConnection.run`, which owns this task)."""
        batch: list[BatchedCall] = []
        with self._receive:
            try:
                while True:
                    batch = [await self._receive.receive()]
                    # Tasks woken together (a fan-out, the callers of the last batch) are still queueing their
                    # calls in this scheduler pass: one checkpoint lets them join this pipeline, without a sleep.
                    await trio.lowlevel.checkpoint()
                    while len(batch) < self._conn.max_batch:
                        try:
                            batch.append(self._receive.receive_nowait())
                        except trio.WouldBlock:
                            break
                    batch = [call for call in batch if not call.abandoned]
                    if batch:
                        await self._send_batch(batch)
                    batch = []
            finally:
                # Shutting down: nobody may keep waiting for a pipeline that will never be sent (closing the
                # channel would drop the queued calls silently, so they are taken out first).
                unsent = batch
                with contextlib.suppress(trio.WouldBlock):
                    while True:
                        unsent.append(self._receive.receive_nowait())
                for call in unsent:
                    if not call.done.is_set():
                        call.fail(BackendUnavailable("Redis connection closed"))

    async def _send_batch(self, batch: list[BatchedCall]) -> None:
        self.batches += 1
        self.calls += len(batch)
        self.largest = max(self.largest, len(batch))
        try:
            replies = await self._conn.call(lambda client: _run_batch(client, batch))
        except (BackendUnavailable, InternalError) as exc:
            # The whole pipeline failed or timed out: some of its commands may have run, as with a failed `call`.
            for call in batch:
                call.fail(exc)
            return
        for call, reply in zip(batch, replies, strict=True):
            call.resolve(reply)


@attrs.frozen
class BatchedScript:
    """A Lua script run through `RedisConnection.run_script_batched`, by its SHA1."""

    source: str
    holders_key: int | None = None
    """Set for a script that announces (see `scripts.ANNOUNCE_LUA`): the index in KEYS of the session's holders set;
    the writer publishes the announcement after the batch and hands the caller the script's result only."""
    sha: str = attrs.field(init=False)

    @sha.default
    def _sha(self) -> str:
        return hashlib.sha1(self.source.encode()).hexdigest()


@attrs.define(eq=False)
class BatchedCall:
    stage: Callable[[Pipeline], object]
    """Adds this call's commands to the pipeline (on the asyncio side, like `call`'s command)."""
    script: BatchedScript | None = None
    """Set when the call is exactly one EVALSHA of this script (the only shape that may be re-run on NOSCRIPT)."""
    order_key: str = ""
    keys: Sequence[str] = ()
    """The script call's KEYS (for its holders set)."""
    on_outcome: Callable[[Any], None] | None = None
    done: trio.Event = attrs.field(factory=trio.Event)
    replies: list[Any] = attrs.field(factory=list)
    error: Exception | None = None
    abandoned: bool = False

    def resolve(self, replies: list[Any]) -> None:
        failure = next((reply for reply in replies if isinstance(reply, rx.RedisError)), None)
        if isinstance(failure, rx.NoScriptError):
            # Not re-run because that would have reordered its key (see `_to_rerun_after_noscript`): it did not
            # run at all, and trying again later is safe.
            self.fail(BackendUnavailable("Redis lost its scripts during the batch"))
        elif failure is not None:
            self.fail(map_redis_error(failure))
        else:
            self.replies = replies
            self.done.set()
            if self.on_outcome is not None:
                self.on_outcome(replies[0])

    def fail(self, exc: Exception) -> None:
        # An exception of its own per caller: one instance raised in many tasks would share a traceback.
        error = type(exc)(*exc.args)
        error.__cause__ = exc
        self.error = error
        self.done.set()
        if self.on_outcome is not None:
            self.on_outcome(error)


def script_call(
    script: BatchedScript, keys: Sequence[str], args: Sequence[Any], on_outcome: Callable[[Any], None] | None
) -> BatchedCall:
    """One EVALSHA of `script`, ordered by its first key."""
    sha, key_count = script.sha, len(keys)
    return BatchedCall(
        lambda pipe: pipe.evalsha(sha, key_count, *keys, *args), script, keys[0] if keys else "", keys, on_outcome
    )


async def _run_batch(client: Redis, batch: list[BatchedCall]) -> list[list[Any]]:
    """One pipeline for the batch, then one more for the script calls that met NOSCRIPT (if any), then one for the
    announcements of the scripts that ran (if any)."""
    replies = await _run_pipeline(client, batch)
    missing = _to_rerun_after_noscript(batch, replies)
    if missing:
        for script in {batch[i].script for i in missing}:
            assert script is not None
            await client.script_load(script.source)
        for i, reply in zip(missing, await _run_pipeline(client, [batch[i] for i in missing]), strict=True):
            replies[i] = reply
    announcing = [
        i
        for i, call in enumerate(batch)
        if call.script is not None
        and call.script.holders_key is not None
        and len(replies[i]) == 1
        and isinstance(replies[i][0], list)
    ]
    if announcing:
        announced = [(batch[i].keys[_holders_index(batch[i])], replies[i][0]) for i in announcing]
        for i, result in zip(announcing, await publish_announcements(client, announced), strict=True):
            replies[i] = [result]
    return replies


def _holders_index(call: BatchedCall) -> int:
    assert call.script is not None and call.script.holders_key is not None
    return call.script.holders_key


async def publish_announcements(client: Redis, announced: Sequence[tuple[str, list[Any]]]) -> list[Any]:
    """Publish what announcing scripts returned (`(holders key, reply)` each) and return their results.

    One pipeline of SPUBLISH to the inboxes (a cluster client sends each to its slot's node). A holder that
    nobody heard on its inbox and whose liveness key is gone died without leaving: it is dropped from the
    holders set, so later messages are not published for it (one more round trip, only then). An instance
    between two subscriber connections keeps its liveness key and so its place.
    """
    results: list[Any] = []
    deliveries: list[tuple[str, str, bytes]] = []
    for holders, reply in announced:
        results.append(reply[0])
        if len(reply) > 1:
            message = reply[1]
            deliveries += [(holders, as_bytes(holder).decode(), message) for holder in reply[2:]]
    if not deliveries:
        return results
    async with client.pipeline(transaction=False) as pipe:
        for _, holder, message in deliveries:
            pipe.spublish(inbox_channel(holder), message)
        heard = await pipe.execute()
    unheard = [(holders, holder) for (holders, holder, _), count in zip(deliveries, heard, strict=True) if not count]
    if unheard:
        async with client.pipeline(transaction=False) as pipe:
            for _, holder in unheard:
                pipe.exists(instance_key(holder))
            alive = await pipe.execute()
        gone = [entry for entry, live in zip(unheard, alive, strict=True) if not live]
        if gone:
            async with client.pipeline(transaction=False) as pipe:
                for holders, holder in gone:
                    pipe.srem(holders, holder)
                await pipe.execute()
    return results


async def _run_pipeline(client: Redis, calls: list[BatchedCall]) -> list[list[Any]]:
    async with client.pipeline(transaction=False) as pipe:
        counts = []
        for call in calls:
            before = len(pipe)
            call.stage(pipe)
            counts.append(len(pipe) - before)
        flat = await pipe.execute(raise_on_error=False)
    replies, start = [], 0
    for count in counts:
        replies.append(flat[start : start + count])
        start += count
    return replies


def _to_rerun_after_noscript(batch: list[BatchedCall], replies: list[list[Any]]) -> list[int]:
    """Indexes of the script calls that met NOSCRIPT (so did not run) and may run now without breaking order.

    A call is re-run only if no later call on its key ran in this pipeline (another client may load the script
    half-way through it): running it after that one would reorder the key's writes, so it keeps its NOSCRIPT
    error, which fails it as a Redis error rather than reordering.
    """
    rerun: list[int] = []
    ran_later: set[str] = set()
    for i in reversed(range(len(batch))):
        call, reply = batch[i], replies[i]
        if call.script is not None and len(reply) == 1 and isinstance(reply[0], rx.NoScriptError):
            if call.order_key not in ran_later:
                rerun.append(i)
        elif call.order_key:
            ran_later.add(call.order_key)
    rerun.reverse()
    return rerun


# Token bucket, atomic across instances. State "tokens updated_ms" lives under KEYS[1] with PX = time until full, so
