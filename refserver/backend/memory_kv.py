"""In-memory `KeyValueStore`: the embedded default for a single instance (no Redis).

Expiry is exact on every read (an expired entry is absent even before it is purged); memory stays bounded
because every write first purges the entries that have expired, found through a heap ordered by expiry.
Everything runs in one Trio thread without awaiting, so each operation (notably `take`) is atomic.
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from collections.abc import Callable, Sequence
from typing import Final, Generic, TypeVar

import attrs

from refserver.backend.kv import KeyValueStatistics

V = TypeVar("V")

HEAP_SLACK_MIN: Final = 64
"""Stale heap entries (overwritten or deleted keys) tolerated beyond 2x the live entries before a rebuild:
keeps the heap O(live entries) while making the O(n) rebuild amortized O(1) per write."""


def check_ttl(ttl: float) -> None:
    if not (ttl > 0 and math.isfinite(ttl)):
        raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")


def check_bucket(capacity: int, refill_per_second: float) -> None:
    if capacity < 1:
        raise ValueError(f"capacity must be >= 1, got {capacity!r}")
    if not (refill_per_second > 0 and math.isfinite(refill_per_second)):
        raise ValueError(f"refill_per_second must be positive, got {refill_per_second!r}")


@attrs.frozen(kw_only=True)
class MemoryKeyValueStatistics(KeyValueStatistics):
    keys: int
    buckets: int
    expiry_heap: int


@attrs.define
class _Slot(Generic[V]):
    value: V
    expires_at: float
    version: int


class _ExpiringMap(Generic[V]):
    """A dict whose entries vanish at their deadline; `now` is passed in so one clock reading serves a call."""

    def __init__(self) -> None:
        self._slots: dict[str, _Slot[V]] = {}
        # (expires_at, version, key): versions are unique, so keys are never compared and a heap entry whose
        # version no longer matches its slot is recognisably stale.
        self._heap: list[tuple[float, int, str]] = []
        self._versions = itertools.count()

    def __len__(self) -> int:
        return len(self._slots)

    @property
    def heap_size(self) -> int:
        return len(self._heap)

    def get(self, key: str, now: float) -> V | None:
        slot = self._slots.get(key)
        if slot is None:
            return None
        if slot.expires_at <= now:
            del self._slots[key]
            return None
        return slot.value

    def contains(self, key: str, now: float) -> bool:
        return self.get(key, now) is not None

    def put(self, key: str, value: V, expires_at: float, now: float) -> None:
        self._purge(now)
        version = next(self._versions)
        self._slots[key] = _Slot(value, expires_at, version)
        heapq.heappush(self._heap, (expires_at, version, key))
        if len(self._heap) > 2 * len(self._slots) + HEAP_SLACK_MIN:
            self._heap = [(slot.expires_at, slot.version, k) for k, slot in self._slots.items()]
            heapq.heapify(self._heap)

    def pop(self, key: str, now: float) -> V | None:
        slot = self._slots.pop(key, None)
        if slot is None or slot.expires_at <= now:
            return None
        return slot.value

    def _purge(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, version, key = heapq.heappop(heap)
            slot = self._slots.get(key)
            if slot is not None and slot.version == version:
                del self._slots[key]


@attrs.define
class _Bucket:
    tokens: float
    updated: float


class MemoryKeyValueStore:
    """`KeyValueStore` in this process's memory; `clock` is injectable so tests control expiry."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._values: _ExpiringMap[bytes] = _ExpiringMap()
        # A separate namespace: bucket state is not a value a caller could `get`.
        self._buckets: _ExpiringMap[_Bucket] = _ExpiringMap()

    async def get(self, key: str) -> bytes | None:
        return self._values.get(key, self._clock())

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        now = self._clock()
        return [self._values.get(key, now) for key in keys]

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        check_ttl(ttl)
        now = self._clock()
        self._values.put(key, value, now + ttl, now)

    async def set_if_absent(self, key: str, value: bytes, ttl: float) -> bool:
        check_ttl(ttl)
        now = self._clock()
        if self._values.contains(key, now):
            return False
        self._values.put(key, value, now + ttl, now)
        return True

    async def take(self, key: str) -> bytes | None:
        return self._values.pop(key, self._clock())

    async def delete(self, *keys: str) -> None:
        now = self._clock()
        for key in keys:
            self._values.pop(key, now)

    async def take_rate_token(self, key: str, capacity: int, refill_per_second: float) -> bool:
        check_bucket(capacity, refill_per_second)
        now = self._clock()
        bucket = self._buckets.get(key, now)
        if bucket is None:
            tokens = float(capacity)
        else:
            tokens = min(float(capacity), bucket.tokens + (now - bucket.updated) * refill_per_second)
        if tokens < 1:
            # The stored state still describes this bucket exactly (and its expiry stays right): nothing to write.
            return False
        tokens -= 1
        full_at = now + (capacity - tokens) / refill_per_second
        self._buckets.put(key, _Bucket(tokens, now), full_at, now)
        return True

    async def ping(self) -> None:
        return None

    def statistics(self) -> MemoryKeyValueStatistics:
        """Counts include expired entries that no write has purged yet (they are never returned)."""
        return MemoryKeyValueStatistics(
            backend="memory",
            keys=len(self._values),
            buckets=len(self._buckets),
            expiry_heap=self._values.heap_size + self._buckets.heap_size,
        )
