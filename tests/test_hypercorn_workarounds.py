"""refserver.hypercorn_workarounds against real Hypercorn (trio worker code, real sockets): a connection Hypercorn
closes at shutdown with a request parked behind the previous answer no longer holds the exit for graceful_timeout.

refserver's own drain makes the race rare (its answers close their connections, its streams end before Hypercorn
closes kept-alive connections), so this drives Hypercorn directly, as scripts/hypercorn_parked_reader.py does.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from refserver.hypercorn_workarounds import release_parked_readers_at_shutdown
from tests.conftest import free_port

GRACEFUL_TIMEOUT = 5.0
ANSWER_DELAY = 0.3


async def slow_first_answer(slow_started: trio.Event, scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A bare ASGI app: `/slow` takes ANSWER_DELAY (a handler at work), anything else is answered at once; answers
    keep their connections alive."""
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["path"] == "/slow":
        slow_started.set()
        await trio.sleep(ANSWER_DELAY)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


async def test_a_request_pipelined_behind_an_answer_ending_after_shutdown_does_not_hold_the_exit() -> None:
    release_parked_readers_at_shutdown()
    release_parked_readers_at_shutdown()  # idempotent: create_app calls it for every app it builds
    port = free_port()
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.graceful_timeout = GRACEFUL_TIMEOUT
    shutdown = trio.Event()
    slow_started = trio.Event()
    app = partial(slow_first_answer, slow_started)
    received = bytearray()
    host = f"Host: 127.0.0.1:{port}\r\n"
    pipelined = f"GET /slow HTTP/1.1\r\n{host}\r\nGET /next HTTP/1.1\r\n{host}\r\n".encode()
    shutdown_at = 0.0
    with trio.fail_after(GRACEFUL_TIMEOUT * 2):
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve, app, config, shutdown_trigger=shutdown.wait))
            connection = await trio.open_tcp_stream("127.0.0.1", port)
            async with connection:
                await connection.send_all(pipelined)
                # Both requests came in one packet: the second is paused by h11 while the first is being answered.
                await slow_started.wait()
                shutdown.set()
                shutdown_at = trio.current_time()
                while chunk := await connection.receive_some():
                    received.extend(chunk)
        exited_after = trio.current_time() - shutdown_at
    # The first answer went out, the early request was dropped unparsed (never run: it may be sent elsewhere).
    assert received.startswith(b"HTTP/1.1 200") and received.count(b"HTTP/1.1 ") == 1, bytes(received)
    assert received.endswith(b"ok")
    # Hypercorn's serve() ends once its connections have: right after the first answer, not at graceful_timeout.
    assert exited_after < GRACEFUL_TIMEOUT / 2, exited_after
