"""The Lua scripts of the Redis backend: each runs atomically in Redis, and those on hot paths by SHA1 (batched).

The event announcements they build are the bus's wire form of `EventAppended` (see `wire`).
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

from redis.asyncio import Redis

from refserver.backend.redis.batching import BatchedScript, publish_announcements

ANNOUNCE_LUA: Final = """
local function announce(holders, skip, result, message)
  local reply = {result, message}
  for _, holder in ipairs(redis.call('SMEMBERS', holders)) do
    if holder ~= skip then reply[#reply + 1] = holder end
  end
  return reply
end
"""
"""The reply of a script that announces: `{result, message, holder...}`, every holder of the session but `skip`.

The script cannot publish itself: on a cluster each inbox is a sharded channel in its own slot, and a script may
touch its keys' slot only. The writer publishes `message` to each holder's inbox right after the script ran,
in the same call (`batching.publish_announcements`), and drops holders that are gone; the caller sees `result`.
A script that has nothing to announce returns `{result}`.
"""

# Append one event (or the closing marker) to a stream, refresh its TTL, record which instance opened
# the stream, and tell every instance holding the session: atomic, and batched with the other appends
# queued at the same time (group commit: one pipeline of EVALSHAs, see `RedisConnection.run_script_batched`).
# Nothing is written for a session that no longer exists, so a DELETE racing with running work leaves no key.
# MAXLEN is exact, not `~`: a stream keeps its newest max_events events (and its closing marker), the same bound
# as the memory log's, so a resumption from a dropped event is refused alike (`refserver.backend.events`).
APPEND_SCRIPT: Final = BatchedScript(
    holders_key=3,
    source=ANNOUNCE_LUA
    + """
if redis.call('EXISTS', KEYS[3]) == 0 then return {-1} end
local fields, maxlen = {'d', ARGV[1], 'r', ARGV[2]}, ARGV[3]
if ARGV[2] == 'c' then fields, maxlen = {'c', '1'}, tonumber(ARGV[3]) + 1 end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', maxlen, '0-*', unpack(fields))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('HSETNX', KEYS[2], ARGV[6], ARGV[7])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
local seq = string.sub(id, 3)
return announce(KEYS[4], ARGV[8], seq,
  '{"t":"event","sid":"' .. ARGV[5] .. '","s":"' .. ARGV[6] .. '","n":' .. seq .. '}')
""",
)

# Close a stream only if it is still open, after final events (errors for the lost requests).
CLOSE_ABANDONED_SCRIPT: Final = BatchedScript(
    holders_key=1,
    source=ANNOUNCE_LUA
    + """
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #last > 0 and last[1][2][1] == 'c' then return {0} end
for i = 5, #ARGV do
  redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[1], '0-*', 'd', ARGV[i], 'r', '1')
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', tonumber(ARGV[1]) + 1, '0-*', 'c', '1')
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return announce(KEYS[2], '', 1,
  '{"t":"event","sid":"' .. ARGV[3] .. '","s":"' .. ARGV[4] .. '","n":' .. string.sub(id, 3) .. '}')
""",
)


# Write a stream that was kept locally so far, with the sequence numbers already handed out (so ids a
# client may hold stay valid), then continue as any stream: TTL, owner record, announcement.
PERSIST_SCRIPT: Final = BatchedScript(
    holders_key=3,
    source=ANNOUNCE_LUA
    + """
if redis.call('EXISTS', KEYS[3]) == 0 then return {-1} end
local last = 0
for i = 6, #ARGV, 3 do
  if ARGV[i + 2] == 'c' then
    redis.call('XADD', KEYS[1], 'MAXLEN', tonumber(ARGV[1]) + 1, '0-' .. ARGV[i], 'c', '1')
  else
    redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[1], '0-' .. ARGV[i], 'd', ARGV[i + 1], 'r', ARGV[i + 2])
  end
  last = tonumber(ARGV[i])
end
redis.call('HSETNX', KEYS[2], ARGV[4], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
if last == 0 then return {0} end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return announce(KEYS[4], '', last,
  '{"t":"event","sid":"' .. ARGV[3] .. '","s":"' .. ARGV[4] .. '","n":' .. last .. '}')
""",
)
# A message about a session, for every other instance holding it: the publisher acted on it here first (a
# cancel or reply it could not deliver itself, a state it set, a delete it carries out).
PUBLISH_SCRIPT: Final = BatchedScript(
    holders_key=0, source=ANNOUNCE_LUA + "return announce(KEYS[1], ARGV[2], 1, ARGV[1])\n"
)


# A session's first record, with this instance as its one holder: in one round trip, and announced to nobody (no
# other instance can hold a session before its id was returned, which is after this script ran).
SAVE_FIRST_SCRIPT: Final = BatchedScript(
    source="""
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
""",
)
# A session's new record, and its announcement (`StateChanged`, the record verbatim) for the other holders: one
# round trip where a save and a publish were two, and no message is built when nobody else holds the session.
SAVE_SCRIPT: Final = BatchedScript(
    holders_key=1,
    source=ANNOUNCE_LUA
    + """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return announce(KEYS[2], ARGV[3], 1, '{"t":"state","sid":"' .. ARGV[4] .. '","record":' .. ARGV[1] .. '}')
""",
)


# Token bucket, atomic across instances. State "tokens updated_ms" lives under KEYS[1] with PX = time until full, so
# an idle bucket disappears exactly when it would be indistinguishable from a new one. Redis's TIME is the clock, so
# instances with skewed clocks agree; a denied call writes nothing because the stored state is still exact.
BUCKET_LUA: Final = """
local capacity = tonumber(ARGV[1])
local per_ms = tonumber(ARGV[2]) / 1000
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + tonumber(clock[2]) / 1000
local tokens = capacity
local state = redis.call('GET', KEYS[1])
if state then
  local stored, updated = string.match(state, '^(%S+) (%S+)$')
  if stored then
    tokens = math.min(capacity, tonumber(stored) + math.max(0, now - tonumber(updated)) * per_ms)
  end
end
if tokens < 1 then
  return 0
end
tokens = tokens - 1
local ttl_ms = math.max(1, math.ceil((capacity - tokens) / per_ms))
redis.call('SET', KEYS[1], string.format('%.17g %.17g', tokens, now), 'PX', string.format('%d', ttl_ms))
return 1
"""
BUCKET_SHA: Final = hashlib.sha1(BUCKET_LUA.encode()).hexdigest()


async def run_script(r: Redis, script: BatchedScript, keys: list[str], args: list[Any]) -> Any:
    """Run `script` by its source (for calls off the hot path), publishing its announcement; return its result."""
    reply = await r.eval(script.source, len(keys), *keys, *args)
    if script.holders_key is None:
        return reply
    (result,) = await publish_announcements(r, [(keys[script.holders_key], reply)])
    return result
