"""S4's floor: the least an open SSE stream can cost on our stack, measured beside S4 in the same run.

A plain ASGI app (no framework, no session, no MCP) on the same Hypercorn trio worker: `GET` answers
`text/event-stream`, sends one comment and holds the stream until the client leaves. What a worker's RSS grows
by per stream held here is the connection's price in Hypercorn, h11 and trio alone.

`GET /watched` is the least a stream that must both wait for something to send and notice its client leaving
costs: the same stream, plus a nursery with a task waiting for `http.disconnect` (Hypercorn does not end the app
when the client goes) and the sending side waiting on an event under a heartbeat timeout (one cancel scope).

    hypercorn --config bench/hypercorn-bench.toml --bind 127.0.0.1:PORT bench.bare_stream_app:app
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

import trio

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

HEALTH = b'{"status":"ok"}'
HEARTBEAT_SECONDS: Final = 15.0


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
    if scope["path"] == "/watched":
        await _watched(receive, send)
        return
    while (await receive())["type"] != "http.disconnect":
        pass


async def _watched(receive: Receive, send: Send) -> None:
    nothing_to_send = trio.Event()  # never set: the stream stays idle, as S4's and S4b's do between rounds
    async with trio.open_nursery() as nursery:

        async def end_when_client_leaves() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            nursery.cancel_scope.cancel()

        nursery.start_soon(end_when_client_leaves)
        while True:
            with trio.move_on_after(HEARTBEAT_SECONDS):
                await nothing_to_send.wait()
            await send({"type": "http.response.body", "body": b": ping\n\n", "more_body": True})
