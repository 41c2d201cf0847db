"""S5's ceiling: the three requests of a session set-up answered by a plain ASGI app, nothing behind them.

No framework, no auth, no session, no MCP: `POST /mcp` without `Mcp-Session-Id` answers a fixed initialize
result with a fresh session id (as refserver does, 256 random bits), a body without `"id"` (the
`notifications/initialized`) gets 202, anything else a fixed echo result. The same S5 client creates sessions
against it on the same Hypercorn trio worker: what Hypercorn, h11 and trio alone allow per second.

    hypercorn --config bench/hypercorn-bench.toml --bind 127.0.0.1:PORT bench.bare_session_app:app
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

HEALTH: Final = b'{"status":"ok"}'
INITIALIZE_RESULT: Final = (
    b'{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-11-25","capabilities":{"tools":{}},'
    b'"serverInfo":{"name":"bare","version":"0"}}}'
)
ECHO_RESULT: Final = (
    b'{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"Echo: hi"}],"isError":false}}'
)


async def _body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _answer(send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]]) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


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
        await _answer(send, 200, HEALTH, [])
        return
    body = await _body(receive)
    if not any(name == b"mcp-session-id" for name, _ in scope["headers"]):
        await _answer(send, 200, INITIALIZE_RESULT, [(b"mcp-session-id", secrets.token_urlsafe(32).encode())])
    elif b'"id"' not in body:
        await _answer(send, 202, b"", [])
    else:
        await _answer(send, 200, ECHO_RESULT, [])
