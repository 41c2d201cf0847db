"""S3 at concurrency 1: one session, each request to the next instance in turn, against one instance only.

wrk cannot move a connection between addresses, so per-request alternation is done here: one Trio task
keeps a connection to each instance and sends every echo call to the other one than the last. The
baseline is the same client, the same session and the same cluster with every request to instance A
(which is S2's set-up). Both arms run in short interleaved blocks so that drift and neighbours on the
machine affect them alike; the difference of the medians is the cross-instance cost.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from typing import Any, Final

import trio

from bench.mcpclient import call_echo
from bench.rawhttp import Connection, HttpError

BLOCK_SECONDS: Final = 0.5


def _summary(latencies: list[float], seconds: float) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "requests": len(ordered),
        "requests_per_s": len(ordered) / seconds if seconds else 0.0,
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
        "mean_ms": statistics.fmean(ordered) * 1000,
    }


async def run_cross_instance(*, ports: tuple[int, int], token: str, session_id: str, duration: float) -> dict[str, Any]:
    authority = f"127.0.0.1:{ports[0]}"
    conns = [await Connection.open("127.0.0.1", port, authority=authority) for port in ports]
    failures: list[str] = []

    async def call(index: int) -> None:
        """One echo call on connection `index`; a connection the server closed is reopened (and counted)."""
        try:
            await call_echo(conns[index], token, session_id)
        except (HttpError, OSError, trio.BrokenResourceError) as exc:
            failures.append(f"instance {'AB'[index]}: {exc}")
            await conns[index].aclose()
            conns[index] = await Connection.open("127.0.0.1", ports[index], authority=authority)
            raise

    arms: dict[str, list[float]] = {"one_instance": [], "alternating": []}
    spent = {"one_instance": 0.0, "alternating": 0.0}
    client_cpu_before = time.process_time()
    started = trio.current_time()
    try:
        for index in (0, 1):  # both instances hold the session before anything is measured
            for _ in range(20):
                with contextlib.suppress(HttpError, OSError, trio.BrokenResourceError):
                    await call(index)
        turn = 0
        while min(spent.values()) < duration:
            for arm in ("one_instance", "alternating"):
                block_end = trio.current_time() + BLOCK_SECONDS
                block_start = trio.current_time()
                while trio.current_time() < block_end:
                    index = turn % 2 if arm == "alternating" else 0
                    turn += 1
                    begun = time.perf_counter()
                    try:
                        await call(index)
                    except (HttpError, OSError, trio.BrokenResourceError):
                        continue  # counted in failures; a failed call has no latency
                    arms[arm].append(time.perf_counter() - begun)
                spent[arm] += trio.current_time() - block_start
    finally:
        for conn in conns:
            await conn.aclose()
    elapsed = trio.current_time() - started
    one, alternating = (
        _summary(arms["one_instance"], spent["one_instance"]),
        _summary(arms["alternating"], spent["alternating"]),
    )
    return {
        "one_instance": one,
        "alternating": alternating,
        "added_median_ms": alternating["p50_ms"] - one["p50_ms"],
        "generator_cpu": (time.process_time() - client_cpu_before) / elapsed if elapsed else 0.0,
        "failures": len(failures),
        "first_failures": failures[:5],
    }
