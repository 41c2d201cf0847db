"""`TaskStore` on Redis: task records, the per-owner bound and the shared work queue, through `RedisConnection`.

Key layout (`prefix` defaults to `refserver:`; every key carries the `{tasks}` hash tag, so all task keys share one
cluster slot and each script below touches a single slot; a prefix must therefore contain no braces):

<prefix>{tasks}:task:<id>        hash: v = version, json = TaskRecord.to_json()     PEXPIREAT expires_at
<prefix>{tasks}:owner:<owner>    sorted set: the owner's unfinished task ids,       PEXPIREAT its highest score
                                 scored by expires_at (ms): the per-owner bound
<prefix>{tasks}:owned:<owner>    sorted set: all the owner's live task ids,         PEXPIREAT the last expiry
                                 scored by created_at (s): `owned`'s order
<prefix>{tasks}:expiring:<owner> sorted set: the same ids scored by expires_at      PEXPIREAT its highest score
                                 (ms): which ones to drop from `owned:`
<prefix>{tasks}:queue            stream of entries {task: <id>}, consumer group     none: drained by `done`
                                 `workers`

The owner sets are pruned by this instance's "now" (ZREMRANGEBYSCORE -inf now) on every creation and listing, so
they hold only live tasks; `owned:` needs its `expiring:` twin because its own scores say nothing about expiry.

The queue holds only entries waiting or running (`done` deletes them), so its XLEN is the queue bound. Leases are
Redis's idle times: an entry's lease runs out when it has been idle (not delivered, claimed or renewed) for longer
than the `lease` the *claiming* instance passes, which is also its min-idle-time for reclaiming (XAUTOCLAIM). So a
lease is not stored per entry: every instance must use the same lease, or a short-lease instance would take work
from a long-lease one mid-run. `renew`'s `lease` is accepted for the protocol and otherwise unused.

The consumer group is created on demand, at id 0 rather than `$`: every entry in the stream is one that still has
to run, so a group lost while its stream survived (a stream re-created by XADD after a Redis restart, or a
dropped group) must deliver all of them, not only the ones added later.

"Now" is this process's clock (injectable, as in `MemoryTaskStore`), passed to the scripts as milliseconds; Redis
expires the records by its own clock, and `load`, `replace`, `owned` and `unfinished` also judge expiry by ours, so
a task is never served or counted past `expires_at` as this instance sees it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Final

from redis import exceptions as rx
from redis.asyncio import Redis

from refserver.backend.redis.batching import BatchedScript
from refserver.backend.redis.connection import RedisConnection
from refserver.backend.redis.keys import as_bytes, milliseconds
from refserver.backend.tasks import Claim, TaskStoreStatistics
from refserver.errors import InternalError, TaskLimitReached
from refserver.protocol.tasks import TaskRecord

GROUP: Final = "workers"
"""The one consumer group: every instance competes for the same entries."""
RELEASED_IDLE_MS: Final = 10 * 24 * 3600 * 1000
"""Idle time given to a released entry: beyond any lease, so the next XAUTOCLAIM anywhere takes it at once."""

_OVER_OWNER_BOUND: Final = -1
_QUEUE_FULL: Final = -2

_ENSURE_GROUP_LUA: Final = """
local function ensure_group(queue)
  if redis.call('EXISTS', queue) == 0 then
    redis.call('XGROUP', 'CREATE', queue, ARGV[1], '0', 'MKSTREAM')
  end
end
"""
"""Lua helper: create the group with its stream. A missing stream means a missing group (EXISTS is cheaper than
catching BUSYGROUP on every call); a stream that exists without its group is repaired by CLAIM_SCRIPT (NOGROUP)."""

_QUEUE_EXPIRY_LUA: Final = """
local function outlive(queue, expires_ms)
  local at = redis.call('PEXPIRETIME', queue)
  if at < tonumber(expires_ms) then redis.call('PEXPIREAT', queue, expires_ms) end
end
"""
"""Lua helper: the queue lives as long as the last task that may still need it (PEXPIRETIME -1, no expiry yet, is
below any time), so an idle cluster's queue leaves no key behind, and a busy one's never expires under it."""

_OWNER_LUA: Final = """
local function prune_owned(owned, expiring, now)
  local gone = redis.call('ZRANGEBYSCORE', expiring, '-inf', now)
  for i = 1, #gone, 1000 do
    redis.call('ZREM', owned, unpack(gone, i, math.min(i + 999, #gone)))
  end
  redis.call('ZREMRANGEBYSCORE', expiring, '-inf', now)
end
local function expire_with_last(key, scored)
  local last = redis.call('ZRANGE', scored, -1, -1, 'WITHSCORES')
  if last[2] then redis.call('PEXPIREAT', key, last[2]) end
end
"""
"""Lua helpers: drop expired tasks from the owner's listing index (ZREM in chunks: `unpack` is bounded by Lua's C
stack), and expire a set when the last task it lists expires, so an idle owner leaves no key behind."""

CREATE_SCRIPT: Final = BatchedScript(
    _ENSURE_GROUP_LUA
    + _QUEUE_EXPIRY_LUA
    + _OWNER_LUA
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[2])
prune_owned(KEYS[3], KEYS[4], ARGV[2])
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then return -1 end
local queued = redis.call('XLEN', KEYS[5])
if queued >= tonumber(ARGV[4]) then return -2 end
ensure_group(KEYS[5])
redis.call('HSET', KEYS[1], 'v', ARGV[6], 'json', ARGV[7])
redis.call('PEXPIREAT', KEYS[1], ARGV[5])
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[8])
expire_with_last(KEYS[2], KEYS[2])
redis.call('ZADD', KEYS[3], ARGV[9], ARGV[8])
redis.call('ZADD', KEYS[4], ARGV[5], ARGV[8])
expire_with_last(KEYS[3], KEYS[4])
expire_with_last(KEYS[4], KEYS[4])
redis.call('XADD', KEYS[5], '*', 'task', ARGV[8])
outlive(KEYS[5], ARGV[5])
return queued + 1
"""
)
"""Create a task: both bounds checked and the record, owner entries and queue entry written in one atomic step, so
a refused creation leaves nothing behind and two instances cannot both take the last slot. Returns the new XLEN,
or -1 (owner bound) / -2 (queue full). KEYS: record, owner (unfinished), owned, expiring, queue; ARGV: group,
now ms, per_owner, queue_limit, expires ms, version, json, task id, created_at."""

OWNED_SCRIPT: Final = BatchedScript(
    _OWNER_LUA
    + """
prune_owned(KEYS[1], KEYS[2], ARGV[1])
local listed = {}
for _, task_id in ipairs(redis.call('ZREVRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1)) do
  local json = redis.call('HGET', ARGV[3] .. task_id, 'json')
  if json then listed[#listed + 1] = json end
end
return listed
"""
)
"""List the owner's newest live tasks (JSON), pruning the index first; a record Redis already expired by its own
clock is skipped. The record keys are built from a prefix argument, not passed as KEYS, because which ones are read
is known only inside the script; they share the `{tasks}` slot, so this still touches one slot. KEYS: owned,
expiring; ARGV: now ms, limit, record key prefix."""

ENQUEUE_SCRIPT: Final = BatchedScript(
    _ENSURE_GROUP_LUA
    + _QUEUE_EXPIRY_LUA
    + """
ensure_group(KEYS[1])
redis.call('XADD', KEYS[1], '*', 'task', ARGV[2])
outlive(KEYS[1], ARGV[3])
return redis.call('XLEN', KEYS[1])
"""
)
"""Queue another run, creating the group first if the stream is new (a bare XADD would make a stream without a
group, whose entry a later group created at `$` would never deliver). Returns XLEN. KEYS: queue; ARGV: group,
task id, the task's expiry ms."""

REPLACE_SCRIPT: Final = BatchedScript(
    """
local stored = redis.call('HGET', KEYS[1], 'v')
if not stored or tonumber(stored) ~= tonumber(ARGV[1]) - 1 then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'json', ARGV[2])
redis.call('PEXPIREAT', KEYS[1], ARGV[3])
if ARGV[4] == '1' then redis.call('ZREM', KEYS[2], ARGV[5]) end
return 1
"""
)
"""Compare-and-set on the version (the one guard against two instances both applying a transition), dropping a
terminal task from its owner's bound in the same step. Returns 1 if stored, else 0. KEYS: record, owner set; ARGV:
new version, json, expires ms, terminal 1/0, task id."""

CLAIM_SCRIPT: Final = BatchedScript(
    """
local queue, group, consumer, count = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3])
local function read()
  return redis.pcall('XREADGROUP', 'GROUP', group, consumer, 'COUNT', count, 'STREAMS', queue, '>')
end
local function task_of(fields)
  for i = 1, #fields, 2 do
    if fields[i] == 'task' then return fields[i + 1] end
  end
  return ''
end
local got = read()
if type(got) == 'table' and got.err then
  if string.sub(got.err, 1, 7) ~= 'NOGROUP' then return got end
  -- No stream: nothing to claim (creating it here would leave an empty key behind with no expiry).
  if redis.call('EXISTS', queue) == 0 then return {'0-0', 0, {}} end
  redis.call('XGROUP', 'CREATE', queue, group, '0')
  got = read()
  if type(got) == 'table' and got.err then return got end
end
local claimed = {}
if got then
  for _, entry in ipairs(got[1][2]) do
    claimed[#claimed + 1] = entry[1]
    claimed[#claimed + 1] = task_of(entry[2])
  end
end
local cursor = ARGV[5]
local missing = count - #claimed / 2
if missing > 0 then
  local lapsed = redis.call('XAUTOCLAIM', queue, group, consumer, ARGV[4], cursor, 'COUNT', missing)
  cursor = lapsed[1]
  for _, entry in ipairs(lapsed[2]) do
    if entry then
      claimed[#claimed + 1] = entry[1]
      claimed[#claimed + 1] = task_of(entry[2])
    end
  end
end
return {cursor, redis.call('XLEN', queue), claimed}
"""
)
"""Claim waiting entries, then lapsed ones (idle longer than the lease), in one step; on NOGROUP (Redis lost the
group, or has no queue yet) re-create the group of an existing stream and read again. Entries XAUTOCLAIM finds
deleted (Redis 7 drops them from the pending list and reports them apart) are skipped. Returns {next cursor, XLEN,
{entry id, task id, ...}}. KEYS: queue; ARGV: group, consumer, count, lease ms, XAUTOCLAIM cursor."""

HOLD_SCRIPT: Final = BatchedScript(
    """
local held = {}
for i = 4, #ARGV do
  local pending = redis.pcall('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2])
  if pending.err then
    if string.sub(pending.err, 1, 7) == 'NOGROUP' then return {} end
    return pending
  end
  if #pending > 0 then
    local claimed = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'IDLE', ARGV[3], 'JUSTID')
    if #claimed > 0 then held[#held + 1] = ARGV[i] end
  end
end
return held
"""
)
"""Set the idle time of the entries `consumer` still holds: 0 renews their leases, a huge one releases them. The
ownership check and the XCLAIM are one step, so an entry another consumer reclaimed meanwhile is never taken back.
Returns the ids held. KEYS: queue; ARGV: group, consumer, idle ms, entry ids..."""

DONE_SCRIPT: Final = BatchedScript(
    """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 2))
redis.call('XDEL', KEYS[1], unpack(ARGV, 2))
return redis.call('XLEN', KEYS[1])
"""
)
"""Acknowledge and delete entries in one step, so the queue bound (XLEN) drops exactly when the run ends and no
entry is left acknowledged but counted. Returns XLEN. KEYS: queue; ARGV: group, entry ids..."""


async def _run(r: Redis, script: BatchedScript, keys: list[str], args: list[Any]) -> Any:
    try:
        return await r.evalsha(script.sha, len(keys), *keys, *args)
    except rx.NoScriptError:
        # First use, or Redis restarted (its script cache is gone): load once and retry, still one call.
        await r.script_load(script.source)
        return await r.evalsha(script.sha, len(keys), *keys, *args)


def _epoch_ms(seconds: float) -> int:
    return round(seconds * 1000)


def _text(value: object) -> str:
    if isinstance(value, bytes | str):
        return as_bytes(value).decode()
    raise InternalError(f"unexpected Redis reply {value!r}")


def _integer(value: object) -> int:
    if isinstance(value, int):
        return value
    raise InternalError(f"unexpected Redis reply {value!r}")


class RedisTaskStore:
    """`TaskStore` on Redis, shared by every instance using the same `prefix`: each operation is one Lua script or
    one read, so the bounds and the compare-and-set hold across instances. See the module docstring for the keys
    and for the one rule all instances must share (the lease)."""

    def __init__(
        self, conn: RedisConnection, prefix: str = "refserver:", clock: Callable[[], float] = time.time
    ) -> None:
        self._conn = conn
        self._clock = clock
        self._base = f"{prefix}{{tasks}}:"
        self._queue = self._base + "queue"
        # Where this instance's next XAUTOCLAIM resumes: each scans at most 10 x count pending entries, so
        # successive claims walk the whole pending list instead of rescanning its head.
        self._cursor = "0-0"
        self._queued = 0
        self._created = 0
        self._refused = 0

    def _record_key(self, task_id: str) -> str:
        return f"{self._base}task:{task_id}"

    def _owner_key(self, owner: str) -> str:
        return f"{self._base}owner:{owner}"

    def _owned_keys(self, owner: str) -> list[str]:
        return [f"{self._base}owned:{owner}", f"{self._base}expiring:{owner}"]

    async def create(self, record: TaskRecord, *, per_owner: int, queue_limit: int) -> None:
        keys = [
            self._record_key(record.task_id),
            self._owner_key(record.owner),
            *self._owned_keys(record.owner),
            self._queue,
        ]
        args = [
            GROUP,
            _epoch_ms(self._clock()),
            per_owner,
            queue_limit,
            _epoch_ms(record.expires_at),
            record.version,
            record.to_json(),
            record.task_id,
            repr(record.created_at),
        ]
        outcome = _integer(await self._conn.call(lambda r: _run(r, CREATE_SCRIPT, keys, args)))
        if outcome == _OVER_OWNER_BOUND:
            self._refused += 1
            raise TaskLimitReached(f"at most {per_owner} unfinished tasks per user; wait for one to finish")
        if outcome == _QUEUE_FULL:
            self._refused += 1
            raise TaskLimitReached(f"the task queue is full ({queue_limit} tasks); retry later")
        self._queued = outcome
        self._created += 1

    async def load(self, task_id: str) -> TaskRecord | None:
        key = self._record_key(task_id)
        raw = await self._conn.call(lambda r: r.hget(key, "json"))
        if raw is None:
            return None
        record = TaskRecord.from_json(as_bytes(raw))
        return None if record.expires_at <= self._clock() else record

    async def replace(self, record: TaskRecord) -> bool:
        if record.expires_at <= self._clock():
            return False  # expired by our clock, though Redis's may not have dropped it yet (as `load` says)
        keys = [self._record_key(record.task_id), self._owner_key(record.owner)]
        args = [record.version, record.to_json(), _epoch_ms(record.expires_at), int(record.terminal), record.task_id]
        return _integer(await self._conn.call(lambda r: _run(r, REPLACE_SCRIPT, keys, args))) == 1

    async def enqueue(self, record: TaskRecord) -> None:
        keys, args = [self._queue], [GROUP, record.task_id, milliseconds(record.expires_at)]
        self._queued = _integer(await self._conn.call(lambda r: _run(r, ENQUEUE_SCRIPT, keys, args)))

    async def claim(self, consumer: str, count: int, lease: float) -> list[Claim]:
        if count <= 0:
            return []  # COUNT 0 would mean "no limit" to XREADGROUP
        keys, args = [self._queue], [GROUP, consumer, count, milliseconds(lease), self._cursor]
        reply = await self._conn.call(lambda r: _run(r, CLAIM_SCRIPT, keys, args))
        cursor, queued, flat = reply
        self._cursor, self._queued = _text(cursor), _integer(queued)
        pairs = [_text(item) for item in flat]
        return [Claim(task_id, entry_id) for entry_id, task_id in zip(pairs[::2], pairs[1::2], strict=True)]

    async def renew(self, consumer: str, claims: Sequence[Claim], lease: float) -> list[Claim]:
        held = await self._hold(consumer, claims, idle_ms=0)
        return [claim for claim in claims if claim.entry_id in held]

    async def done(self, claims: Sequence[Claim]) -> None:
        if not claims:
            return
        keys, args = [self._queue], [GROUP, *(claim.entry_id for claim in claims)]
        self._queued = _integer(await self._conn.call(lambda r: _run(r, DONE_SCRIPT, keys, args)))

    async def release(self, consumer: str, claims: Sequence[Claim]) -> None:
        await self._hold(consumer, claims, idle_ms=RELEASED_IDLE_MS)

    async def _hold(self, consumer: str, claims: Sequence[Claim], *, idle_ms: int) -> set[str]:
        if not claims:
            return set()
        keys, args = [self._queue], [GROUP, consumer, idle_ms, *(claim.entry_id for claim in claims)]
        reply = await self._conn.call(lambda r: _run(r, HOLD_SCRIPT, keys, args))
        return {_text(entry_id) for entry_id in reply}

    async def unfinished(self, owner: str) -> int:
        # A count of the unexpired members is the pruned ZCARD without a write; `create` does the pruning.
        key, after = self._owner_key(owner), f"({_epoch_ms(self._clock())}"
        return _integer(await self._conn.call(lambda r: r.zcount(key, after, "+inf")))

    async def owned(self, owner: str, limit: int) -> list[TaskRecord]:
        if limit <= 0:
            return []
        # Pruned by our clock inside the script, so nothing past its expiry (by this instance) is listed.
        keys, args = self._owned_keys(owner), [_epoch_ms(self._clock()), limit, self._record_key("")]
        listed = await self._conn.call(lambda r: _run(r, OWNED_SCRIPT, keys, args))
        return [TaskRecord.from_json(as_bytes(raw)) for raw in listed]

    def statistics(self) -> TaskStoreStatistics:
        """No I/O: `queued` is the queue length as last seen by this instance's own calls."""
        return TaskStoreStatistics(tasks=-1, queued=self._queued, created=self._created, refused=self._refused)
