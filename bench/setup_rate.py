"""S5: session creation rate — initialize + notifications/initialized + the first tools/call, per second.

`workers` Trio tasks each keep one connection and create sessions back to back for `duration` seconds
(a session counts when its first echo call has answered). Latency is that of the whole three-request
set-up of one session.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import trio

from bench.mcpclient import call_echo, open_session
from bench.rawhttp import Connection, HttpError


async def run_setup_rate(*, port: int, token: str, workers: int, duration: float) -> dict[str, Any]:
    latencies: list[float] = []
    errors: list[str] = []
    client_cpu_before = time.process_time()
    started = trio.current_time()
    deadline = started + duration

    async def worker() -> None:
        conn = await Connection.open("127.0.0.1", port)
        try:
            while trio.current_time() < deadline:
                begun = trio.current_time()
                try:
                    session_id = await open_session(conn, token)
                    await call_echo(conn, token, session_id)
                except HttpError as exc:
                    errors.append(str(exc)[:200])
                    await conn.aclose()
                    conn = await Connection.open("127.0.0.1", port)
                    continue
                latencies.append(trio.current_time() - begun)
        finally:
            await conn.aclose()

    async with trio.open_nursery() as nursery:
        for _ in range(workers):
            nursery.start_soon(worker)
    elapsed = trio.current_time() - started
    latencies.sort()
    return {
        "workers": workers,
        "duration_s": elapsed,
        "sessions": len(latencies),
        "sessions_per_s": len(latencies) / elapsed if elapsed else 0.0,
        "p50_ms": statistics.median(latencies) * 1000 if latencies else float("nan"),
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000 if latencies else float("nan"),
        "errors": len(errors),
        "first_error": errors[0] if errors else "",
        "generator_cpu": (time.process_time() - client_cpu_before) / elapsed if elapsed else 0.0,
    }
