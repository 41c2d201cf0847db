"""IP: what refserver's own code costs per `tools/call` echo, without any HTTP server in the measured path.

The floods measure refserver and the stack under it together. This takes the stack out: the real application
(`refserver.app.create_app()`, memory backend, embedded OAuth, the bench's settings) serves a token and a session
over real HTTP on Hypercorn in this process, and then the measured requests are handed to the ASGI application
directly, one after the other: the same headers and bodies as the floods (S1's 2025 session, M1's 2026 envelope),
every answer checked. What remains is everything between the ASGI call and its last `send`: the middleware,
authentication, the session or the stateless exchange, the request core, the tool and the answer.

A bare ASGI function on the same worker (S0A) costs 1/S0A per request; an application that adds `t` seconds of
work per request can serve at most 1 / (1/S0A + t). This scenario gives `t`, so the report can show how much of
S1's and M1's throughput the stack takes and what our own code would have to cost to reach a goal.

    python -m bench.inprocess --requests 3000 --batches 7      # prints one JSON line
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import httpx
import trio

from bench.mcpclient import BENCH_USER, ECHO_CALL, INITIALIZE, INITIALIZED, POST_HEADERS, PROTOCOL_VERSION
from bench.procs import refserver_env

MODERN_VERSION: Final = "2026-07-28"
EXPECTED: Final = b"Echo: hi"
READY_TIMEOUT: Final = 30.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _echo_body(request_id: int, *, modern: bool) -> bytes:
    params: dict[str, Any] = {"name": "echo", "arguments": {"message": "hi"}}
    if modern:
        params["_meta"] = {
            "io.modelcontextprotocol/protocolVersion": MODERN_VERSION,
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "0"},
        }
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}).encode()


class DirectCaller:
    """Hands one HTTP request at a time to an ASGI application, as Hypercorn would, and checks the answer."""

    def __init__(self, app: Callable[..., Awaitable[None]], port: int, headers: list[tuple[bytes, bytes]]) -> None:
        self._app = app
        self._port = port
        self._headers = headers

    async def call(self, body: bytes) -> None:
        sent: list[dict[str, Any]] = []
        delivered = False

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await trio.sleep_forever()
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/mcp",
            "raw_path": b"/mcp",
            "query_string": b"",
            "root_path": "",
            "headers": self._headers,
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", self._port),
            "extensions": {},
        }
        await self._app(scope, receive, send)
        answer = b"".join(message.get("body", b"") for message in sent[1:])
        if not sent or sent[0].get("status") != 200 or EXPECTED not in answer:
            raise RuntimeError(f"unexpected answer: {sent[:1]} {answer[:200]!r}")


async def _prepare(port: int) -> tuple[str, str]:
    """A token by the OAuth flow and an initialized 2025 session, over real HTTP."""
    from refserver.oauth.headless import obtain_tokens

    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(timeout=httpx.Timeout(10.0)) as http:
        with trio.fail_after(READY_TIMEOUT):
            while True:
                try:
                    if (await http.get(f"{base}/health")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await trio.sleep(0.05)
        tokens = await obtain_tokens(http, f"{base}/mcp", user=BENCH_USER, client_name="bench-inprocess")
        token = str(tokens["access_token"])
        headers = {**POST_HEADERS, "Authorization": f"Bearer {token}"}
        answer = await http.post(f"{base}/mcp", headers=headers, content=INITIALIZE)
        answer.raise_for_status()
        session = answer.headers["mcp-session-id"]
        headers |= {"Mcp-Session-Id": session, "MCP-Protocol-Version": PROTOCOL_VERSION}
        (await http.post(f"{base}/mcp", headers=headers, content=INITIALIZED)).raise_for_status()
        (await http.post(f"{base}/mcp", headers=headers, content=ECHO_CALL)).raise_for_status()
    return token, session


@asynccontextmanager
async def _callers() -> AsyncIterator[dict[str, tuple[DirectCaller, bool]]]:
    """The application served on Hypercorn in this process (for the token and the session), and one direct caller
    per request shape (S1's, M1's), warm."""
    from hypercorn.config import Config
    from hypercorn.trio import serve

    from refserver.app import create_app

    port = int(os.environ["REFSERVER_BASE_URL"].rsplit(":", 1)[1])
    app = create_app()
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.errorlog = None
    async with trio.open_nursery() as nursery:
        stop = trio.Event()
        nursery.start_soon(lambda: serve(app, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
        token, session = await _prepare(port)
        common = [
            (b"host", f"127.0.0.1:{port}".encode()),
            (b"authorization", f"Bearer {token}".encode()),
            (b"accept", b"application/json, text/event-stream"),
            (b"content-type", b"application/json"),
        ]
        callers = {
            "S1": (
                DirectCaller(
                    app,
                    port,
                    [*common, (b"mcp-session-id", session.encode()), (b"mcp-protocol-version", b"2025-11-25")],
                ),
                False,
            ),
            "M1": (
                DirectCaller(
                    app,
                    port,
                    [
                        *common,
                        (b"mcp-protocol-version", MODERN_VERSION.encode()),
                        (b"mcp-method", b"tools/call"),
                        (b"mcp-name", b"echo"),
                    ],
                ),
                True,
            ),
        }
        for caller, modern in callers.values():  # warm-up: caches, first-call paths
            for request_id in range(200):
                await caller.call(_echo_body(request_id, modern=modern))
        yield callers
        stop.set()


async def measure(requests: int, batches: int) -> dict[str, Any]:
    result: dict[str, Any] = {"requests_per_batch": requests, "batches": batches}
    async with _callers() as callers:
        next_id = 1000
        per_request: dict[str, list[float]] = {name: [] for name in callers}
        for _ in range(batches):  # interleaved batches: both shapes see the same machine
            for name, (caller, modern) in callers.items():
                bodies = [_echo_body(next_id + i, modern=modern) for i in range(requests)]
                next_id += requests
                started = time.perf_counter()
                for body in bodies:
                    await caller.call(body)
                per_request[name].append((time.perf_counter() - started) / requests * 1e6)
        for name, values in per_request.items():
            result[name] = {"us_per_request": statistics.median(values), "min_us": min(values), "batches_us": values}
    return result


async def count_instructions(requests: int, out_file: Path) -> dict[str, float]:
    """Under callgrind (`bench/instructions.py`): this process's instructions per request, shape by shape."""
    from bench.instructions import Counter

    counter = Counter(os.getpid(), out_file)
    result: dict[str, float] = {}
    async with _callers() as callers:
        for name, (caller, modern) in callers.items():
            bodies = [_echo_body(1000 + i, modern=modern) for i in range(requests)]
            counter.start()  # blocking on purpose: nothing else of this process may run while it is counted
            for body in bodies:
                await caller.call(body)
            result[f"IP {name}"] = counter.stop() / requests
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000, help="requests per batch and shape")
    parser.add_argument("--batches", type=int, default=7)
    parser.add_argument(
        "--callgrind",
        type=Path,
        metavar="OUT_FILE",
        help="run under callgrind with this --callgrind-out-file: count instructions per request instead of time",
    )
    args = parser.parse_args()
    port = _free_port()
    os.environ.update(refserver_env(port))
    if args.callgrind is not None:
        result = trio.run(count_instructions, args.requests, args.callgrind)
    else:
        result = trio.run(measure, args.requests, args.batches)
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
