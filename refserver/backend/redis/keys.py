"""The Redis key layout and channels (prefix `refserver:`; every key has a TTL, refreshed while the session is active):

session:{id}                JSON SessionRecord                                 idle TTL
session:{id}:streams        hash stream id -> instance that opened it          idle TTL
session:{id}:holders        set of the instances holding the session           idle TTL
events:{id}:{stream}        Redis Stream of SSE events, ids 0-<seq>, MAXLEN    idle TTL (from the last append)
instance:{instance id}      liveness of an instance                            INSTANCE_TTL (`bus`)
inbox:{instance id}         pub/sub channel: messages for one instance         -
bus                         pub/sub channel: messages for every instance       -
"""

from __future__ import annotations

from typing import Final

PREFIX: Final = "refserver:"
GLOBAL_CHANNEL: Final = f"{PREFIX}bus"
"""Messages for every instance (revocations), on the same subscriber connection as the instance's inbox."""
INBOX_PREFIX: Final = f"{PREFIX}inbox:"


def session_key(session_id: str) -> str:
    return f"{PREFIX}session:{session_id}"


def streams_key(session_id: str) -> str:
    return f"{PREFIX}session:{session_id}:streams"


def events_key(session_id: str, stream_id: str) -> str:
    return f"{PREFIX}events:{session_id}:{stream_id}"


def holders_key(session_id: str) -> str:
    return f"{PREFIX}session:{session_id}:holders"


def inbox_channel(instance_id: str) -> str:
    return f"{INBOX_PREFIX}{instance_id}"


def instance_key(instance_id: str) -> str:
    return f"{PREFIX}instance:{instance_id}"


def as_bytes(value: bytes | str) -> bytes:
    # The client is configured without decode_responses: replies are bytes.
    return value if isinstance(value, bytes) else value.encode()


def milliseconds(seconds: float) -> int:
    return max(1, round(seconds * 1000))
