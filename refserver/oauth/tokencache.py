"""Verified access tokens, remembered until they expire or are revoked.

Verifying an ES256 signature costs more than the rest of an echo call; a client sends the same token
with every request. An entry is dropped at its `exp`, when its `jti` or its grant is revoked (in this
process, or announced by another instance on the bus), and all at once when the bus reconnects (a
revocation may have been missed while it was away).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Final

from refserver.oauth.models import AccessInfo

MAX_ENTRIES: Final = 10_000
"""Distinct live tokens remembered; the least recently used goes first (about 1 KiB each)."""


class VerifiedTokenCache:
    def __init__(self, *, max_entries: int = MAX_ENTRIES, clock: Callable[[], float] = time.time) -> None:
        self._entries: OrderedDict[str, AccessInfo] = OrderedDict()
        self._max_entries = max_entries
        self._clock = clock
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def get(self, token: str) -> AccessInfo | None:
        info = self._entries.get(token)
        if info is None:
            self.misses += 1
            return None
        if info.expires_at <= self._clock():
            del self._entries[token]
            self.misses += 1
            return None
        self._entries.move_to_end(token)
        self.hits += 1
        return info

    def put(self, token: str, info: AccessInfo) -> None:
        self._entries[token] = info
        self._entries.move_to_end(token)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def revoke(self, *, jti: str | None = None, grant_id: str | None = None) -> None:
        """Forget every entry of this token id or grant (a linear scan: revocations are rare)."""
        doomed = [
            token
            for token, info in self._entries.items()
            if (jti is not None and info.token_id == jti) or (grant_id is not None and info.grant_id == grant_id)
        ]
        for token in doomed:
            del self._entries[token]
        self.evictions += len(doomed)

    def clear(self) -> None:
        self.evictions += len(self._entries)
        self._entries.clear()

    def statistics(self) -> dict[str, Any]:
        return {"entries": len(self._entries), "hits": self.hits, "misses": self.misses, "evictions": self.evictions}
