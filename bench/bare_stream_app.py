"""S4's floor: the least an open SSE stream can cost on our stack, measured beside S4 in the same run.

A plain ASGI app (no framework, no session, no MCP) on the same Hypercorn trio worker: `GET` answers
`text/event-stream`, sends one comment and holds the stream until the client leaves. What a worker's RSS grows
by per stream held here is the connection's price in Hypercorn, h11 and trio alone.

    hypercorn --config bench/hypercorn-bench.toml --bind 127.0.0.1:PORT bench.bare_stream_app:app
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

HEALTH = b'{"status":"ok"}'


async def app(scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["path"] == "/health":
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(HEALTH)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": HEALTH})
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
    await send({"type": "http.response.body", "body": b": open\n\n", "more_body": True})
    while (await receive())["type"] != "http.disconnect":
        pass
