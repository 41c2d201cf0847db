"""Where sessions live beyond one instance: the session store and the bus.

With the memory backend a session exists only in the instance that created it, so the store keeps
nothing and the bus carries nothing. With Redis, the store holds every session's protocol state (so
any instance can serve any request) and the bus carries what must reach the instance that holds the
work: a client's answer to a sampling request, a cancellation, a DELETE, a state change, "new events
on stream X".
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, Literal, Protocol

import attrs

TransportKind = Literal["streamable", "legacy"]

BusHandler = Callable[[str, dict[str, Any]], Awaitable[None]]
"""(session id, message) -> None; called for messages published by other instances."""
GlobalHandler = Callable[[dict[str, Any]], Awaitable[None]]
"""message -> None; called for messages addressed to every instance."""
ResyncHandler = Callable[[list[str]], Awaitable[None]]
"""session ids -> None; called after the bus was away, with every session it holds."""


@attrs.define
class SessionRecord:
    """A session as stored: everything another instance needs to serve its next request."""

    session_id: str
    kind: TransportKind
    owner: str | None
    phase: str = "new"
    protocol_version: str | None = None
    client_capabilities: dict[str, Any] = attrs.field(factory=dict)
    client_info: dict[str, Any] | None = None
    log_level: str | None = None
    subscriptions: list[str] = attrs.field(factory=list)

    def to_json(self) -> bytes:
        return json.dumps(attrs.asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> SessionRecord:
        return cls(**json.loads(raw))


class SessionStore(Protocol):
    async def save(self, record: SessionRecord, ttl: float) -> None: ...

    async def load(self, session_id: str) -> SessionRecord | None: ...

    async def touch(self, session_ids: list[str], ttl: float) -> None:
        """Push back the expiry of these sessions (one round trip for all of them)."""
        ...

    async def delete(self, session_id: str) -> None:
        """Remove the session and everything it wrote (its event streams included)."""
        ...

    async def existing(self, session_ids: list[str]) -> set[str]:
        """Those of `session_ids` the store still has (a few round trips for any number of them)."""
        ...


class Bus(Protocol):
    async def subscribe(self, session_id: str) -> None:
        """Receive the session's messages from now on (returns once the subscription is active)."""
        ...

    async def unsubscribe(self, session_id: str) -> None: ...

    async def publish(self, session_id: str, message: dict[str, Any]) -> None: ...

    async def publish_global(self, message: dict[str, Any]) -> None:
        """To every instance (e.g. a revoked token: drop it from every verifier cache)."""
        ...

    def set_global_handler(self, handler: GlobalHandler) -> None: ...

    @property
    def distributed(self) -> bool:
        """False when there is no other instance to talk to (memory backend)."""
        ...


class LocalSessionStore:
    """The memory backend: a session is the object in this instance's registry, nothing more."""

    async def save(self, record: SessionRecord, ttl: float) -> None:
        return None

    async def load(self, session_id: str) -> SessionRecord | None:
        return None

    async def touch(self, session_ids: list[str], ttl: float) -> None:
        return None

    async def delete(self, session_id: str) -> None:
        return None

    async def existing(self, session_ids: list[str]) -> set[str]:
        return set(session_ids)  # nothing is stored apart from the registry: a session exists while it is there


class LocalBus:
    distributed = False

    async def subscribe(self, session_id: str) -> None:
        return None

    async def unsubscribe(self, session_id: str) -> None:
        return None

    async def publish(self, session_id: str, message: dict[str, Any]) -> None:
        return None

    async def publish_global(self, message: dict[str, Any]) -> None:
        return None

    def set_global_handler(self, handler: GlobalHandler) -> None:
        return None
