"""S4's floor: hold N plain SSE streams on `bench.bare_stream_app` and report the worker's RSS per stream."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, Final

import trio

from bench.procs import rss_bytes
from bench.rawhttp import Connection, HttpError

OPEN_CONCURRENCY: Final = 32
SETTLE_SECONDS: Final = 1.0


async def run_floor_streams(
    *, port: int, count: int, worker_pid: int, progress: Callable[[str], None], path: str = "/mcp"
) -> dict[str, Any]:
    """`path`: `/mcp` the bare stream, `/watched` the bare stream with a disconnect watcher and a heartbeat wait."""
    held: list[tuple[Connection, AsyncIterator[bytes]]] = []
    failed = 0
    gate = trio.Semaphore(OPEN_CONCURRENCY)

    async def open_one() -> None:
        nonlocal failed
        async with gate:
            try:
                conn = await Connection.open("127.0.0.1", port)
                status, _ = await conn.open_stream("GET", path, {"Accept": "text/event-stream"})
                if status != 200:
                    raise HttpError(f"HTTP {status}")
                chunks = conn.stream_chunks()
                await anext(chunks)
            except (OSError, HttpError, StopAsyncIteration, trio.BrokenResourceError):
                failed += 1
                return
            held.append((conn, chunks))

    rss_before = rss_bytes(worker_pid)
    try:
        async with trio.open_nursery() as nursery:
            for _ in range(count):
                nursery.start_soon(open_one)
        await trio.sleep(SETTLE_SECONDS)
        rss_after = rss_bytes(worker_pid)
    finally:
        with trio.CancelScope(shield=True):
            for conn, _ in held:
                await conn.aclose()
    per_stream_kib = (rss_after - rss_before) / max(1, len(held)) / 1024
    progress(f"floor {path}: {len(held)} bare SSE streams held, {per_stream_kib:.1f} KiB of RSS each (failed {failed})")
    return {
        "streams_held": len(held),
        "streams_failed": failed,
        "rss_before_bytes": rss_before,
        "rss_after_bytes": rss_after,
        "rss_per_stream_kib": per_stream_kib,
    }
