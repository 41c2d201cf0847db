"""The Redis backend: any number of instances share sessions, event streams and OAuth state.

connection.py   RedisConnection: the trio-asyncio bridge, one bounded pool per process
batching.py     group commit: the read and write lanes that pipeline many small calls
errors.py       redis-py's exceptions mapped to refserver's
keys.py         the key layout and channel names
scripts.py      the Lua scripts (append, persist, close, publish, token bucket)
sessions.py     RedisSessionStore
events.py       RedisEventLog (with streams.py: what it keeps in this instance's memory)
bus.py          RedisBus: the subscriber connection, holders sets, liveness, resync
wire.py         the bus messages' JSON form
kv.py           RedisKeyValueStore (OAuth records, rate limits)
"""
