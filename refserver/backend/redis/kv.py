"""`KeyValueStore` on Redis: OAuth's records and rate-limit buckets, through the process's `RedisConnection`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
from redis import exceptions as rx
from redis.asyncio import Redis

from refserver.backend.kv import KeyValueStatistics
from refserver.backend.memory_kv import check_bucket, check_ttl
from refserver.backend.redis.connection import RedisConnection, RedisConnectionStatistics
from refserver.backend.redis.scripts import BUCKET_LUA, BUCKET_SHA
from refserver.errors import InternalError


@attrs.frozen(kw_only=True)
class RedisKeyValueStatistics(KeyValueStatistics):
    prefix: str
    connection: RedisConnectionStatistics


async def _run_bucket_script(client: Redis, key: str, capacity: int, refill_per_second: float) -> Any:
    args = (key, capacity, repr(float(refill_per_second)))
    try:
        return await client.evalsha(BUCKET_SHA, 1, *args)
    except rx.NoScriptError:
        # First use, or Redis restarted (its script cache is gone): load once and retry, still one call.
        await client.script_load(BUCKET_LUA)
        return await client.evalsha(BUCKET_SHA, 1, *args)


def _ms(ttl: float) -> int:
    check_ttl(ttl)
    return max(1, round(ttl * 1000))


def _as_bytes(value: object) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    raise InternalError(f"unexpected Redis reply {value!r}")


class RedisKeyValueStore:
    """`KeyValueStore` on Redis: every key is written with a PX expiry, values under `{prefix}kv:` and token buckets
    under `{prefix}rate:`, so bucket state can never be read or overwritten as a value (as in the memory store)."""

    def __init__(self, conn: RedisConnection, prefix: str = "refserver:") -> None:
        self._conn = conn
        self._prefix = prefix
        self._values = prefix + "kv:"
        self._buckets = prefix + "rate:"

    def _key(self, key: str) -> str:
        return self._values + key

    async def get(self, key: str) -> bytes | None:
        full = self._key(key)
        return _as_bytes(await self._conn.call(lambda r: r.get(full)))

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        full = [self._key(key) for key in keys]

        async def get_each(r: Redis) -> list[Any]:
            # A pipeline of GETs, not MGET: on a cluster the keys are in different slots (one round trip per node).
            async with r.pipeline(transaction=False) as pipe:
                for key in full:
                    pipe.get(key)
                return list(await pipe.execute())

        return [_as_bytes(value) for value in await self._conn.call(get_each)]

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        full, px = self._key(key), _ms(ttl)
        await self._conn.call(lambda r: r.set(full, value, px=px))

    async def set_if_absent(self, key: str, value: bytes, ttl: float) -> bool:
        full, px = self._key(key), _ms(ttl)
        return bool(await self._conn.call(lambda r: r.set(full, value, px=px, nx=True)))

    async def take(self, key: str) -> bytes | None:
        full = self._key(key)
        return _as_bytes(await self._conn.call(lambda r: r.getdel(full)))

    async def delete(self, *keys: str) -> None:
        if keys:
            full = [self._key(key) for key in keys]
            await self._conn.call(lambda r: r.delete(*full))

    async def take_rate_token(self, key: str, capacity: int, refill_per_second: float) -> bool:
        check_bucket(capacity, refill_per_second)
        full = self._buckets + key
        result = await self._conn.call(lambda r: _run_bucket_script(r, full, capacity, refill_per_second))
        return bool(result == 1)

    async def ping(self) -> None:
        await self._conn.call(lambda r: r.ping())

    def statistics(self) -> RedisKeyValueStatistics:
        return RedisKeyValueStatistics(backend="redis", prefix=self._prefix, connection=self._conn.statistics())
