"""What the bus carries between instances, as records (their JSON wire form lives in the Redis adapter only).

A session message is about one session and reaches the other instances holding it; a global message reaches
every instance. Receivers match on the record type.
"""

from __future__ import annotations

from typing import Any, Final

import attrs

from refserver.backend.sessions import SessionRecord
from refserver.protocol.jsonrpc import RequestId


@attrs.frozen
class EventAppended:
    """Another instance appended event `seq` to this stream: wake its listeners here."""

    stream_id: str
    seq: int


@attrs.frozen
class CancelRequest:
    """`notifications/cancelled` for a request that may run on another instance (the id keeps its JSON type)."""

    request_id: RequestId


@attrs.frozen
class ClientReply:
    """The client's answer to a server-to-client request, for the instance whose tool waits for it."""

    message: dict[str, Any]


@attrs.frozen
class SessionDeleted:
    """DELETE: every instance ends its part of the session."""


@attrs.frozen
class StateChanged:
    """The session's protocol state changed (initialized, log level, subscriptions): adopt it."""

    record: SessionRecord


SessionMessage = EventAppended | CancelRequest | ClientReply | SessionDeleted | StateChanged


@attrs.frozen
class TokenRevoked:
    """A token or a whole grant was revoked: drop it from every verifier cache."""

    jti: str | None
    grant_id: str | None


TASK_STATUS: Final = "task"
"""The `ListenNotice` kind of a task whose status changed."""


@attrs.frozen
class ListenNotice:
    """Something `subscriptions/listen` streams may have opted in to (a list changed, a resource was updated),
    for the listeners on every instance."""

    kind: str
    """`tools`, `prompts` or `resources` (their lists changed), `resource` (the one at `uri` was updated), or `task`
    (the status of task `task_id` changed)."""
    uri: str | None = None
    task_id: str | None = None


@attrs.frozen
class TaskCancelled:
    """`tasks/cancel` on some instance: whichever instance runs the task stops its work."""

    task_id: str


@attrs.frozen
class BusResynced:
    """The bus was away (given by the bus itself, never published): what was published meanwhile is lost."""


GlobalMessage = TokenRevoked | ListenNotice | TaskCancelled | BusResynced
