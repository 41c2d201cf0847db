"""The session store on Redis: a session's record, and the removal of everything the session wrote."""

from __future__ import annotations

from typing import Any, Final

from redis.asyncio import Redis

from refserver.backend.events import STANDALONE_STREAM
from refserver.backend.redis.bus import RedisBus
from refserver.backend.redis.connection import RedisConnection
from refserver.backend.redis.keys import as_bytes, events_key, holders_key, milliseconds, session_key, streams_key
from refserver.backend.redis.scripts import SAVE_FIRST_SCRIPT, SAVE_SCRIPT
from refserver.backend.sessions import SessionRecord

EXISTS_BATCH: Final = 1000
"""Sessions checked per pipeline by `RedisSessionStore.existing`."""


class RedisSessionStore:
    """Records on the write lane (group-committed with the other writes of the moment), each save one script."""

    def __init__(self, conn: RedisConnection, bus: RedisBus) -> None:
        self._conn = conn
        self._bus = bus
        self._instance = bus.instance_id.encode()

    async def save_first(self, record: SessionRecord, ttl: float) -> None:
        session_id = record.session_id
        self._bus.held_here(session_id)
        try:
            await self._conn.run_script_batched(
                SAVE_FIRST_SCRIPT,
                [session_key(session_id), holders_key(session_id)],
                [record.to_json(), milliseconds(ttl), self._instance],
            )
            # After the write, as `subscribe` after a save did: with Redis down the write fails at once, and with only
            # the subscriber away (a blip) the answer waits a while for it, as a join does.
            await self._bus.wait_joinable()
        except BaseException:
            self._bus.not_held_here(session_id)
            raise

    async def save(self, record: SessionRecord, ttl: float) -> None:
        session_id = record.session_id
        await self._conn.run_script_batched(
            SAVE_SCRIPT,
            [session_key(session_id), holders_key(session_id)],
            [record.to_json(), milliseconds(ttl), self._instance, session_id],
        )

    async def load(self, session_id: str) -> SessionRecord | None:
        raw = await self._conn.call(lambda r: r.get(session_key(session_id)))
        return SessionRecord.from_json(as_bytes(raw)) if raw else None

    async def touch(self, session_ids: list[str], ttl: float) -> None:
        if not session_ids:
            return

        async def pipeline(r: Redis) -> None:
            async with r.pipeline(transaction=False) as pipe:
                for session_id in session_ids:
                    pipe.pexpire(session_key(session_id), milliseconds(ttl))
                    pipe.pexpire(streams_key(session_id), milliseconds(ttl))
                    pipe.pexpire(events_key(session_id, STANDALONE_STREAM), milliseconds(ttl))
                    pipe.pexpire(holders_key(session_id), milliseconds(ttl))
                await pipe.execute()

        await self._conn.call(pipeline)

    async def existing(self, session_ids: list[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(session_ids), EXISTS_BATCH):
            chunk = session_ids[start : start + EXISTS_BATCH]

            async def check(r: Redis, chunk: list[str] = chunk) -> list[Any]:
                async with r.pipeline(transaction=False) as pipe:
                    for session_id in chunk:
                        pipe.exists(session_key(session_id))
                    return list(await pipe.execute())

            replies = await self._conn.call(check)
            found.update(session_id for session_id, exists in zip(chunk, replies, strict=True) if exists)
        return found

    async def delete(self, session_id: str) -> None:
        async def remove(r: Redis) -> None:
            stream_ids = [as_bytes(s) for s in await r.hkeys(streams_key(session_id))]
            keys = [session_key(session_id), streams_key(session_id), events_key(session_id, STANDALONE_STREAM)]
            keys += [events_key(session_id, s.decode()) for s in stream_ids]
            await r.delete(*keys)

        await self._conn.call(remove)
