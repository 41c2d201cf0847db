"""The key-value store protocol: small records with a TTL, and the few atomic operations OAuth needs.

Every key has a TTL (nothing is stored forever), values are bytes (callers serialize), and `take` is an
atomic read-and-delete: exactly one of several concurrent takers gets the value, which is what makes
authorization codes, refresh tokens and pending authorizations single-use across instances.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import attrs


@attrs.frozen(kw_only=True)
class KeyValueStatistics:
    backend: str
    """"memory" or "redis"."""


class KeyValueStore(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """One round trip for several keys (revocation checks look up two at once)."""
        ...

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        """Store `value` for `ttl` seconds (> 0), replacing any previous value and TTL."""
        ...

    async def set_if_absent(self, key: str, value: bytes, ttl: float) -> bool:
        """Store only if `key` does not exist; True if stored."""
        ...

    async def take(self, key: str) -> bytes | None:
        """Atomically return and delete the value; None if absent or expired."""
        ...

    async def delete(self, *keys: str) -> None: ...

    async def take_rate_token(self, key: str, capacity: int, refill_per_second: float) -> bool:
        """Token bucket: True if a token was available (and is now used) for `key`.

        The bucket starts full with `capacity` tokens and refills continuously; its state expires once
        it would be full again, so idle buckets cost nothing.
        """
        ...

    async def ping(self) -> None:
        """Raise BackendUnavailable unless the store answers."""
        ...

    def statistics(self) -> KeyValueStatistics: ...
