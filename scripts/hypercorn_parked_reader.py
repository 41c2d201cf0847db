"""Minimal reproduction: Hypercorn's trio worker waits out `graceful_timeout` for a connection it has closed.

A client sends two HTTP/1.1 requests back to back on one connection (pipelining; a client that sends its next request
the moment the previous response's last byte arrives hits the same path, only rarely). The app answers the first
slowly; shutdown begins meanwhile. Hypercorn sends the answer, closes the connection, and yet `serve()` returns only at
`graceful_timeout`: the task reading that connection stays parked for good.

    .venv/bin/python scripts/hypercorn_parked_reader.py           # Hypercorn as installed: exits after ~3 s
    .venv/bin/python scripts/hypercorn_parked_reader.py --fixed   # with refserver's workaround: after ~0.3 s

The mechanism (Hypercorn 0.18.0, h11 0.16.0), see docs/upstream/hypercorn-parked-reader.md.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import sys
from functools import partial
from pathlib import Path
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

ANSWER_DELAY = 0.3
"""The first request is answered this long after it arrived; shutdown begins in between."""
GRACEFUL_TIMEOUT = 3.0
CHECKOUT = str(Path(__file__).resolve().parents[1])
PIPELINED = b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET /next HTTP/1.1\r\nHost: x\r\n\r\n"


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["path"] == "/slow":
        await trio.sleep(ANSWER_DELAY)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


async def main(fixed: bool) -> int:
    if fixed:
        sys.path.insert(0, CHECKOUT)  # this checkout's refserver, whatever the environment has installed
        from refserver.hypercorn_workarounds import release_parked_readers_at_shutdown

        release_parked_readers_at_shutdown()
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.graceful_timeout = GRACEFUL_TIMEOUT
    shutdown = trio.Event()
    received = bytearray()

    async def pipelining_client() -> None:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(PIPELINED)
        await trio.sleep(ANSWER_DELAY / 3)  # both requests are in; the first one's answer is on its way
        shutdown.set()
        with contextlib.suppress(trio.BrokenResourceError):
            while chunk := await stream.receive_some():
                received.extend(chunk)
        await stream.aclose()
        print(f"client: connection closed by the server {trio.current_time() - shutdown_at:.2f} s after shutdown")

    shutdown_at = 0.0
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve, app, config, shutdown_trigger=shutdown.wait))  # type: ignore[arg-type]
        nursery.start_soon(pipelining_client)
        await shutdown.wait()
        shutdown_at = trio.current_time()
    exited_after = trio.current_time() - shutdown_at
    print(f"client received: {bytes(received)!r}")
    print(f"serve() returned {exited_after:.2f} s after shutdown began (graceful_timeout {GRACEFUL_TIMEOUT} s)")
    parked = exited_after > GRACEFUL_TIMEOUT * 0.9
    print("PARKED: the closed connection's reader held the exit until graceful_timeout" if parked else "clean exit")
    return 1 if parked else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fixed", action="store_true", help="install refserver's workaround first")
    main_args = parser.parse_args()
    sys.exit(trio.run(main, main_args.fixed))
