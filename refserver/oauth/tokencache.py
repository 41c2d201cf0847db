"""Verified access tokens, remembered for a while: the one bounded cache of both token-checking paths.

Verifying an ES256 signature costs more than the rest of an echo call, and asking an introspection endpoint
costs a network round trip; a client sends the same token with every request. Entries are keyed by the
token's SHA-256 (the token itself is never kept), bounded in number (least recently used goes first), and
each lives until the earlier of its token's `exp` and `max_age` after it was verified. An entry is also
dropped when its `jti` or its grant is revoked (in this process, or announced by another instance on the
bus), and all at once when the bus reconnects (a revocation may have been missed while it was away).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Final

from refserver.oauth.models import AccessInfo

MAX_ENTRIES: Final = 10_000
"""Distinct live tokens remembered: at most about 10k x 0.5 KiB = 5 MiB."""


def _key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenCache:
    def __init__(
        self, *, max_entries: int = MAX_ENTRIES, max_age: float = math.inf, clock: Callable[[], float] = time.time
    ) -> None:
        if max_entries < 1:
            raise ValueError("a token cache holds at least one entry")
        # sha256(token) -> (facts, wall-clock deadline)
        self._entries: OrderedDict[str, tuple[AccessInfo, float]] = OrderedDict()
        self.max_entries = max_entries
        self._max_age = max_age
        self._clock = clock
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token: str) -> AccessInfo | None:
        key = _key(token)
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        if entry[1] <= self._clock():
            del self._entries[key]
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry[0]

    def put(self, token: str, info: AccessInfo) -> None:
        now = self._clock()
        deadline = min(now + self._max_age, info.expires_at)  # never beyond the token's own expiry
        if deadline <= now:
            return
        key = _key(token)
        self._entries[key] = (info, deadline)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
            self.evictions += 1

    def revoke(self, *, jti: str | None = None, grant_id: str | None = None) -> None:
        """Forget every entry of this token id or grant (a linear scan: revocations are rare)."""
        doomed = [
            key
            for key, (info, _) in self._entries.items()
            if (jti is not None and info.token_id == jti) or (grant_id is not None and info.grant_id == grant_id)
        ]
        for key in doomed:
            del self._entries[key]
        self.evictions += len(doomed)

    def clear(self) -> None:
        self.evictions += len(self._entries)
        self._entries.clear()

    def statistics(self) -> dict[str, Any]:
        return {
            "entries": len(self._entries),
            "max_entries": self.max_entries,
            "hits": self.hits,
            "misses": self.misses,
            "evictions": self.evictions,
        }
