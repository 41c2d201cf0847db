"""Choosing the backend from settings: memory (embedded default, one instance) or Redis (any number)."""

from __future__ import annotations

import attrs

from refserver.backend.events import EventLog
from refserver.backend.kv import KeyValueStore
from refserver.backend.memory import MemoryEventLog
from refserver.backend.memory_kv import MemoryKeyValueStore
from refserver.backend.redis.bus import RedisBus, new_instance_id
from refserver.backend.redis.connection import RedisConnection
from refserver.backend.redis.events import RedisEventLog
from refserver.backend.redis.kv import RedisKeyValueStore
from refserver.backend.redis.sessions import RedisSessionStore
from refserver.backend.redis.tasks import RedisTaskStore
from refserver.backend.sessions import Bus, LocalBus, LocalStore, Store
from refserver.backend.tasks import MemoryTaskStore, TaskStore
from refserver.config import Settings


@attrs.frozen
class Backend:
    kv: KeyValueStore
    events: EventLog
    store: Store
    bus: Bus
    tasks: TaskStore
    redis: RedisConnection | None
    """Started by the app (`nursery.start(redis.run)`, then the bus) before anything uses the rest."""
    instance_id: str

    @property
    def kind(self) -> str:
        return "redis" if self.redis else "memory"


def backend_from_settings(settings: Settings) -> Backend:
    instance_id = new_instance_id()
    if settings.redis_url:
        connection = RedisConnection(
            settings.redis_url, client_name=f"refserver-{instance_id}", cluster=settings.redis_cluster
        )
        bus = RedisBus(connection, instance_id=instance_id, holder_ttl=settings.session_idle_ttl)
        return Backend(
            kv=RedisKeyValueStore(connection),
            events=RedisEventLog(
                connection,
                instance_id=instance_id,
                max_events=settings.event_log_max_events,
                ttl=settings.session_idle_ttl,
            ),
            store=RedisSessionStore(connection, bus),
            bus=bus,
            tasks=RedisTaskStore(connection),
            redis=connection,
            instance_id=instance_id,
        )
    return Backend(
        kv=MemoryKeyValueStore(),
        events=MemoryEventLog(settings.event_log_max_events),
        store=LocalStore(),
        bus=LocalBus(),
        tasks=MemoryTaskStore(),
        redis=None,
        instance_id=instance_id,
    )
