"""S0A, the ceiling of the server itself: a plain ASGI function answering JSON on the same Hypercorn trio worker.

No framework at all: it reads the request body and sends a fixed small JSON document in two ASGI messages, which
is the least any ASGI application can do per request. S0 (`bench/bare_app.py`) is the same through Quart-Trio;
refserver serves `/mcp` in plain ASGI, so this is the floor its `/mcp` stands on.

    hypercorn --config bench/hypercorn-bench.toml --bind 127.0.0.1:PORT bench.bare_asgi_app:app
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

BODY: Final = b'{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"Echo: hi"}],"isError":false}}'
HEADERS: Final = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    more_body = True
    while more_body:
        message = await receive()
        if message["type"] != "http.request":
            return
        more_body = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
