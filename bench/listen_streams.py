"""S4b: many concurrent 2026-07-28 `subscriptions/listen` streams on one worker.

One Trio process opens N listen requests, each on its own connection: a `POST /mcp` with the 2026 `_meta`
envelope (no session), `params.notifications.resourceSubscriptions` naming the demo resource, answered as a
long-lived SSE stream that starts with `notifications/subscriptions/acknowledged`. The server's periodic resource
updates (`REFSERVER_SUBSCRIPTION_UPDATE_INTERVAL`, announced by one instance per round through the listen hub)
then reach every stream once per round; rounds are told apart as in S4 (`bench/streams.py`).

Measured around it: the worker's RSS before and with the streams (per stream), the Redis connections named
`refserver*` before and after (they must not grow), and the time a round takes to reach every stream.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

import attrs
import trio

from bench.mcpclient import POST_HEADERS, SUBSCRIBE_URI, auth_headers
from bench.procs import rss_bytes
from bench.rawhttp import Connection, HttpError
from bench.redisstats import redis_connections
from bench.streams import SETUP_CONCURRENCY, StreamHolder, watch_rounds

MODERN_VERSION: Final = "2026-07-28"
LISTEN_ID: Final = "bench-listen"
ACKNOWLEDGED_MARK: Final = b"notifications/subscriptions/acknowledged"
LISTEN_BODY: Final = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": LISTEN_ID,
        "method": "subscriptions/listen",
        "params": {
            "notifications": {"resourceSubscriptions": [SUBSCRIBE_URI]},
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": MODERN_VERSION,
                "io.modelcontextprotocol/clientCapabilities": {},
                "io.modelcontextprotocol/clientInfo": {"name": "refserver-bench", "version": "0"},
            },
        },
    }
).encode()


def listen_headers(token: str) -> dict[str, str]:
    return {
        **POST_HEADERS,
        **auth_headers(token),
        "MCP-Protocol-Version": MODERN_VERSION,
        "Mcp-Method": "subscriptions/listen",
    }


async def warm_listener(port: int, token: str) -> None:
    """One listen stream opened, acknowledged and left: the code paths are warm before the RSS baseline."""
    conn = await Connection.open("127.0.0.1", port)
    try:
        status, _ = await conn.open_stream("POST", "/mcp", listen_headers(token), LISTEN_BODY)
        if status != 200:
            raise HttpError(f"listen: HTTP {status}")
        first = await anext(conn.stream_chunks())
        if ACKNOWLEDGED_MARK not in first:
            raise HttpError(f"listen: no acknowledgement: {first[:200]!r}")
    finally:
        await conn.aclose()


@attrs.define
class ListenSwarm(StreamHolder):
    """N listen streams, each on its own connection, held open until the measurement ends."""

    async def _open(self, gate: trio.Semaphore) -> tuple[Connection, AsyncIterator[bytes], bytes]:
        async with gate:
            conn = await Connection.open("127.0.0.1", self.port)
            try:
                status, headers = await conn.open_stream("POST", "/mcp", listen_headers(self.token), LISTEN_BODY)
                if status != 200 or not headers.get("content-type", "").startswith("text/event-stream"):
                    raise HttpError(f"listen: HTTP {status} {headers.get('content-type')}")
                chunks = conn.stream_chunks()
                first = await anext(chunks)
                if ACKNOWLEDGED_MARK not in first:
                    raise HttpError(f"listen: the stream did not start with its acknowledgement: {first[:200]!r}")
            except BaseException:
                with trio.CancelScope(shield=True):
                    await conn.aclose()
                raise
            return conn, chunks, first

    async def hold_stream(self, index: int, gate: trio.Semaphore) -> None:
        try:
            stream = await self._open(gate)
        except (OSError, HttpError, StopAsyncIteration, trio.BrokenResourceError) as exc:
            self._fail(f"listener {index}", exc)
            return
        await self._follow(index, *stream)


async def run_listen_streams(
    *,
    port: int,
    token: str,
    count: int,
    interval: float,
    rounds: int,
    worker_pid: int,
    redis_port: int | None,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    swarm = ListenSwarm(port, token, count)
    client_cpu_before = time.process_time()
    await trio.sleep(1.0)  # the warm-up listener's teardown settles before the baseline
    rss_before = rss_bytes(worker_pid)
    redis_before = redis_connections([redis_port]) if redis_port else None
    result: dict[str, Any] = {"streams_requested": count, "update_interval_s": interval}
    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        gate = trio.Semaphore(SETUP_CONCURRENCY)
        for index in range(count):
            nursery.start_soon(swarm.hold_stream, index, gate)
        await swarm.wait_settled(progress, "S4b listen streams", count)
        open_seconds = trio.current_time() - started
        await trio.sleep(1.0)  # let allocations settle before reading RSS
        ready_at = trio.current_time()
        rss_after = rss_bytes(worker_pid)
        live_at_rss = len(swarm.live)
        result.update(
            streams_opened=swarm.opened,
            streams_ready=live_at_rss,
            streams_failed=swarm.failed,
            first_error=swarm.first_error,
            open_seconds=open_seconds,
            open_streams_per_s=swarm.opened / open_seconds if open_seconds else 0.0,
            rss_before_bytes=rss_before,
            rss_after_bytes=rss_after,
            rss_per_stream_kib=(rss_after - rss_before) / max(1, live_at_rss) / 1024,
            redis_connections_before=redis_before,
            redis_connections_after=redis_connections([redis_port]) if redis_port else None,
        )
        progress(
            f"S4b {live_at_rss} listen streams open: RSS {rss_before / 2**20:.0f} -> {rss_after / 2**20:.0f} MiB: "
            f"{result['rss_per_stream_kib']:.1f} KiB per stream; Redis connections {redis_before} -> "
            f"{result['redis_connections_after']}"
        )
        complete = await watch_rounds(
            swarm.live,
            swarm.arrivals,
            ready_at=ready_at,
            interval=interval,
            rounds=rounds,
            label="S4b",
            progress=progress,
        )
        open_at_end = len(swarm.live)
        nursery.cancel_scope.cancel()
    result["rounds"] = complete
    result["streams_dropped"] = swarm.dropped
    result["first_drop"] = swarm.first_drop
    result["streams_open_at_end"] = open_at_end
    spreads = [r["spread_s"] for r in complete[:rounds]]
    result["notify_all_s"] = statistics.median(spreads) if spreads else math.nan
    result["client_cpu_s"] = time.process_time() - client_cpu_before
    progress(
        f"S4b notification reached all {open_at_end} open listen streams in "
        + (", ".join(f"{s:.2f}" for s in spreads) + " s" if spreads else "NO complete round")
    )
    return result
