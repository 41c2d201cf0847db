"""Structured logs and Prometheus metrics.

`logging.py` turns every log record into one JSON line (request id, session id, redaction as a last line of
defence); `context.py` carries the ids of the request or session a task works for; `metrics.py` holds one
`CollectorRegistry` per app and reads the existing `statistics()` methods at scrape time; `http.py` is the ASGI
middleware (request id, access log, request metrics) and the optional separate metrics listener. What observes
the session registry, the resource guard and the Redis backend is `refserver/observed.py`, a layer above.

Nothing here imports Quart or Redis.
"""
