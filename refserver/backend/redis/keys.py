"""The Redis key layout and channels (prefix `refserver:`; every key has a TTL, refreshed while the session is active).

A session's keys carry its id as a hash tag (`{...}`), so on Redis Cluster they share one slot and every script
on them touches that slot only; on a single Redis the braces are just characters. Channels are sharded
(SSUBSCRIBE / SPUBLISH) in both modes, each in the slot of its own tag.

{<id>}:session              JSON SessionRecord                                 idle TTL
{<id>}:streams              hash stream id -> instance that opened it          idle TTL
{<id>}:holders              set of the instances holding the session           idle TTL
{<id>}:events:<stream>      Redis Stream of SSE events, ids 0-<seq>, MAXLEN    idle TTL (from the last append)
instance:<instance id>      liveness of an instance (any slot)                 INSTANCE_TTL (`bus`)
{inbox:<instance id>}       sharded channel: messages for one instance         -
{bus}                       sharded channel: messages for every instance       -
{tasks}:...                 the task store's keys, one slot (see `tasks`)      per task
kv:<key>, rate:<key>        OAuth records and rate-limit buckets (any slot)    per key
"""

from __future__ import annotations

from typing import Final

PREFIX: Final = "refserver:"
GLOBAL_CHANNEL: Final = f"{PREFIX}{{bus}}"
"""Messages for every instance (revocations), on the same subscriber as the instance's inbox (a node apart on a
cluster, if their slots are on different nodes)."""


def session_key(session_id: str) -> str:
    return f"{PREFIX}{{{session_id}}}:session"


def streams_key(session_id: str) -> str:
    return f"{PREFIX}{{{session_id}}}:streams"


def events_key(session_id: str, stream_id: str) -> str:
    return f"{PREFIX}{{{session_id}}}:events:{stream_id}"


def holders_key(session_id: str) -> str:
    return f"{PREFIX}{{{session_id}}}:holders"


def inbox_channel(instance_id: str) -> str:
    return f"{PREFIX}{{inbox:{instance_id}}}"


def instance_key(instance_id: str) -> str:
    return f"{PREFIX}instance:{instance_id}"


def as_bytes(value: bytes | str) -> bytes:
    # The client is configured without decode_responses: replies are bytes.
    return value if isinstance(value, bytes) else value.encode()


def milliseconds(seconds: float) -> int:
    return max(1, round(seconds * 1000))
