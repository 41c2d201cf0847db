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
from typing import TYPE_CHECKING, Any, Literal, Protocol

import attrs
import trio

from refserver.protocol.lifecycle import Lifecycle, Phase
from refserver.protocol.session_state import SessionState

if TYPE_CHECKING:
    from refserver.backend.messages import GlobalMessage, SessionMessage

TransportKind = Literal["streamable", "legacy"]

BusHandler = Callable[[str, "SessionMessage"], Awaitable[None]]
"""(session id, message) -> None; called for messages published by other instances."""
GlobalHandler = Callable[["GlobalMessage"], Awaitable[None]]
"""message -> None; called for messages addressed to every instance (and `BusResynced` after an outage)."""
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
        # The fields by hand, not `attrs.asdict` (which walks and copies every value): a save per state change.
        document = {
            "session_id": self.session_id,
            "kind": self.kind,
            "owner": self.owner,
            "phase": self.phase,
            "protocol_version": self.protocol_version,
            "client_capabilities": self.client_capabilities,
            "client_info": self.client_info,
            "log_level": self.log_level,
            "subscriptions": self.subscriptions,
        }
        return json.dumps(document, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> SessionRecord:
        return cls(**json.loads(raw))


@attrs.frozen
class BusStatistics:
    connected: bool
    channels: int
    """Pub/sub channels subscribed (2 on Redis while connected, whatever the number of sessions)."""
    sessions_held: int
    received: int
    published: int
    reconnects: int
    liveness_lapses: int


class Store(Protocol):
    async def save_first(self, record: SessionRecord, ttl: float) -> None:
        """The session's first record, with this instance joining its holders (one round trip).

        Written when `initialize` is answered, not when the session object is made: until its id reaches the client
        nobody can ask for it elsewhere, and a crash in between loses nothing a client was told.
        """
        ...

    async def save(self, record: SessionRecord, ttl: float) -> None:
        """The session's new record, announced (`StateChanged`) to the other instances holding it (one round trip)."""
        ...

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


SessionStore = Store
"""The name the session and the registry know the store by."""


class Bus(Protocol):
    async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        """Deliver messages until cancelled (started by the app before any session exists)."""
        ...

    async def subscribe(self, session_id: str) -> None:
        """Receive the session's messages from now on (returns once the subscription is active)."""
        ...

    async def unsubscribe(self, session_id: str) -> None: ...

    async def publish(self, session_id: str, message: SessionMessage) -> None:
        """To the other instances holding the session (never back to this one)."""
        ...

    async def publish_global(self, message: GlobalMessage) -> None:
        """To every instance (e.g. a revoked token: drop it from every verifier cache)."""
        ...

    def set_handler(self, handler: BusHandler) -> None:
        """Who receives the session messages published by other instances."""
        ...

    def add_global_handler(self, handler: GlobalHandler) -> None:
        """One more receiver of the messages published to every instance (each gets every message)."""
        ...

    def set_resync_handler(self, handler: ResyncHandler) -> None:
        """Called after the bus was away with every session held here: what was published meanwhile is lost."""
        ...

    @property
    def distributed(self) -> bool:
        """False when there is no other instance to talk to (memory backend)."""
        ...

    @property
    def connected(self) -> bool:
        """True while messages from other instances can arrive."""
        ...

    def statistics(self) -> BusStatistics: ...


class LocalStore:
    """The memory backend: a session is the object in this instance's registry, nothing more."""

    async def save_first(self, record: SessionRecord, ttl: float) -> None:
        return None

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


LocalSessionStore = LocalStore


class LocalBus:
    """The memory backend's bus: there is no other instance, so nothing is sent and nothing ever arrives."""

    distributed = False
    connected = True
    """Never cut off from anyone: there is nobody to lose contact with."""

    async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started(self)
        await trio.sleep_forever()

    async def subscribe(self, session_id: str) -> None:
        return None

    async def unsubscribe(self, session_id: str) -> None:
        return None

    async def publish(self, session_id: str, message: SessionMessage) -> None:
        return None

    async def publish_global(self, message: GlobalMessage) -> None:
        return None

    def set_handler(self, handler: BusHandler) -> None:
        return None

    def add_global_handler(self, handler: GlobalHandler) -> None:
        return None

    def set_resync_handler(self, handler: ResyncHandler) -> None:
        return None  # never away, so never resynced

    def statistics(self) -> BusStatistics:
        return BusStatistics(
            connected=True, channels=0, sessions_held=0, received=0, published=0, reconnects=0, liveness_lapses=0
        )


# The protocol state of a session and its stored record, one to one.


def state_to_record(state: SessionState, session_id: str, kind: TransportKind, owner: str | None) -> SessionRecord:
    lifecycle = state.lifecycle
    return SessionRecord(
        session_id=session_id,
        kind=kind,
        owner=owner,
        phase=lifecycle.phase.value,
        protocol_version=lifecycle.protocol_version,
        client_capabilities=lifecycle.client_capabilities,
        client_info=lifecycle.client_info,
        log_level=state.log_level,
        subscriptions=sorted(state.subscriptions),
    )


def state_from_record(record: SessionRecord) -> SessionState:
    lifecycle = Lifecycle(
        phase=Phase(record.phase),
        protocol_version=record.protocol_version,
        client_info=record.client_info,
        client_capabilities=record.client_capabilities,
    )
    return SessionState(lifecycle=lifecycle, log_level=record.log_level, subscriptions=set(record.subscriptions))
