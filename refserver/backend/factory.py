"""Choosing the backend from settings: memory (embedded default) or Redis."""

from __future__ import annotations

import attrs

from refserver.backend.kv import KeyValueStore
from refserver.backend.memory_kv import MemoryKeyValueStore
from refserver.backend.redis import RedisConnection, RedisKeyValueStore
from refserver.config import Settings


@attrs.frozen
class Backend:
    kv: KeyValueStore
    redis: RedisConnection | None
    """Started by the app (`nursery.start(redis.run)`) before anything uses `kv`."""

    @property
    def kind(self) -> str:
        return "redis" if self.redis else "memory"


def backend_from_settings(settings: Settings) -> Backend:
    if settings.redis_url:
        connection = RedisConnection(settings.redis_url)
        return Backend(RedisKeyValueStore(connection), connection)
    return Backend(MemoryKeyValueStore(), None)
