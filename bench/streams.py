"""S4: many concurrent sessions on one worker, each with an open GET stream.

One Trio process creates N sessions (initialize, initialized, resources/subscribe to the same
resource, on a set-up connection it then closes); once all exist it opens `GET /mcp` for each on its
own connection and holds every stream open (raw sockets: the client must stay cheaper than the server).
The server's periodic subscription notifier then sends `notifications/resources/updated` to every
session once per round; a round is recognised on the client side as a burst of arrivals separated
from the next by a quiet gap (the notifier sleeps its whole interval between rounds). "Time to reach
all of them" is a complete round's spread: the last arrival minus the first.

Measured around it: the worker's RSS before, with the sessions, and with their streams (per session,
split into session and stream), the Redis connections named `refserver*` before and after (they must
not grow), and the sessions the server reports in /health.
"""

from __future__ import annotations

import json
import math
import resource
import statistics
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Final

import attrs
import trio

from bench.mcpclient import SUBSCRIBE, auth_headers, open_session, session_headers
from bench.procs import cpu_seconds, rss_bytes
from bench.rawhttp import Connection, HttpError
from bench.redisstats import calls_between, command_calls, redis_connections, redis_connections_by_node

UPDATE_MARK: Final = b"notifications/resources/updated"
SETUP_CONCURRENCY: Final = 32
"""Sessions being set up at once; the server admits them on one core, more would only queue."""
PROGRESS_EVERY: Final = 5.0
ROUND_ALLOWANCE_PER_SESSION: Final = 0.03
"""Seconds of waiting for notification rounds allowed per session (10,000 sessions: 5 more minutes)."""
HEALTH_TIMEOUT: Final = 5.0
FD_HEADROOM: Final = 512
"""File descriptors kept free beyond one socket per stream (Redis, logs, wrk, Python itself)."""


def raise_fd_limit(wanted: int) -> int:
    """Raise RLIMIT_NOFILE's soft limit towards `wanted` (children inherit it); return what we got."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return int(soft)


def rounds_from_arrivals(arrivals: list[tuple[float, int]], expected: int, gap: float) -> list[dict[str, float]]:
    """Split arrival times into notifier rounds (quiet gaps > `gap`); keep rounds that reached everyone."""
    rounds: list[list[tuple[float, int]]] = []
    for arrival in sorted(arrivals):
        if rounds and arrival[0] - rounds[-1][-1][0] <= gap:
            rounds[-1].append(arrival)
        else:
            rounds.append([arrival])
    complete = []
    for burst in rounds:
        if len({index for _, index in burst}) >= expected:
            times = [t for t, _ in burst]
            complete.append(
                {
                    "spread_s": times[-1] - times[0],
                    "p50_offset_s": statistics.median(t - times[0] for t in times),
                    "arrivals": len(times),
                }
            )
    return complete


@attrs.define
class StreamHolder:
    """What S4 and S4b count of their N streams, each on its own connection, held open until the measurement ends:
    the updates that arrive on each, and which are open."""

    port: int
    token: str
    count: int
    arrivals: list[tuple[float, int]] = attrs.field(factory=list)
    opened: int = 0
    """Streams that went live (their first event arrived)."""
    live: set[int] = attrs.field(factory=set)
    """Indices of the streams open right now."""
    failed: int = 0
    """Streams that could not be set up or opened."""
    dropped: int = 0
    """Streams that were live and then ended (the server closed them; the client never does)."""
    first_error: str = ""
    first_drop: str = ""
    all_settled: trio.Event = attrs.field(factory=trio.Event)

    def _check(self) -> None:
        if self.opened + self.failed >= self.count:
            self.all_settled.set()

    def _fail(self, name: str, exc: BaseException) -> None:
        self.failed += 1
        self.first_error = self.first_error or f"{name}: {exc!r}"
        self._check()

    async def wait_settled(self, progress: Callable[[str], None], streams: str, of: int) -> None:
        """Until every stream is open or failed, telling how far it got every `PROGRESS_EVERY` seconds."""
        while not self.all_settled.is_set():
            with trio.move_on_after(PROGRESS_EVERY):
                await self.all_settled.wait()
            progress(
                f"{streams} opened {self.opened}/{of}, open now {len(self.live)} "
                f"(failed {self.failed}, dropped by the server {self.dropped})"
            )

    async def _follow(self, index: int, conn: Connection, chunks: AsyncIterator[bytes], first: bytes) -> None:
        """Count the live stream's updates until the server ends it (a drop) or the measurement is cancelled."""
        self.opened += 1
        self.live.add(index)
        self._check()
        try:
            if UPDATE_MARK in first:
                self.arrivals.append((trio.current_time(), index))
            async for chunk in chunks:
                if UPDATE_MARK in chunk:
                    self.arrivals.append((trio.current_time(), index))
            raise HttpError("the server ended the stream")
        except (OSError, HttpError, trio.BrokenResourceError) as exc:
            self.dropped += 1
            self.first_drop = self.first_drop or f"stream {index}: {exc!r}"
        finally:
            self.live.discard(index)
            with trio.CancelScope(shield=True):
                await conn.aclose()


@attrs.define
class Swarm(StreamHolder):
    """N sessions: first every session is created (and its set-up connection closed), then every stream opens.

    The two phases let the RSS growth be split between the session itself and its open stream (with
    its HTTP connection).
    """

    created: int = 0
    all_created: trio.Event = attrs.field(factory=trio.Event)
    open_streams: trio.Event = attrs.field(factory=trio.Event)

    def _check(self) -> None:
        if self.created + self.failed >= self.count:
            self.all_created.set()
        super()._check()

    async def _create(self, gate: trio.Semaphore) -> str:
        async with gate:
            conn = await Connection.open("127.0.0.1", self.port)
            try:
                session_id = await open_session(conn, self.token)
                answer = await conn.request("POST", "/mcp", session_headers(self.token, session_id), SUBSCRIBE)
                if answer.status != 200 or b'"result"' not in answer.body:
                    raise HttpError(f"subscribe: {answer.status} {answer.body[:200]!r}")
                return session_id
            finally:
                await conn.aclose()

    async def _open(self, gate: trio.Semaphore, session_id: str) -> tuple[Connection, AsyncIterator[bytes], bytes]:
        async with gate:
            conn = await Connection.open("127.0.0.1", self.port)
            try:
                headers = {
                    **auth_headers(self.token),
                    "Accept": "text/event-stream",
                    "Mcp-Session-Id": session_id,
                    "MCP-Protocol-Version": "2025-11-25",
                }
                status, _ = await conn.open_stream("GET", "/mcp", headers)
                if status != 200:
                    raise HttpError(f"GET stream: HTTP {status}")
                chunks = conn.stream_chunks()
                first = await anext(chunks)  # the priming event (or a replay): the stream is live
            except BaseException:
                with trio.CancelScope(shield=True):
                    await conn.aclose()
                raise
            return conn, chunks, first

    async def hold_stream(self, index: int, gate: trio.Semaphore) -> None:
        try:
            session_id = await self._create(gate)
        except (OSError, HttpError, trio.BrokenResourceError) as exc:
            self._fail(f"session {index}", exc)
            return
        self.created += 1
        self._check()
        await self.open_streams.wait()
        try:
            stream = await self._open(gate, session_id)
        except (OSError, HttpError, StopAsyncIteration, trio.BrokenResourceError) as exc:
            self._fail(f"session {index}", exc)
            return
        await self._follow(index, *stream)


async def run_streams(
    *,
    port: int,
    token: str,
    count: int,
    interval: float,
    rounds: int,
    worker_pid: int,
    redis_ports: Sequence[int],
    connection_ports: Sequence[int] = (),
    progress: Callable[[str], None],
    label: str = "S4",
) -> dict[str, Any]:
    """`redis_ports`: the Redis whose commands are counted (a cluster's masters), none with the memory backend;
    `connection_ports`: where connections are counted, node by node (by default `redis_ports`)."""
    connection_ports = connection_ports or redis_ports
    swarm = Swarm(port, token, count)
    client_cpu_before = time.process_time()
    rss_before = rss_bytes(worker_pid)
    redis_before = redis_connections(connection_ports) if connection_ports else None
    nodes_before = redis_connections_by_node(connection_ports) if len(connection_ports) > 1 else None
    result: dict[str, Any] = {"sessions_requested": count, "update_interval_s": interval}
    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        gate = trio.Semaphore(SETUP_CONCURRENCY)
        for index in range(count):
            nursery.start_soon(swarm.hold_stream, index, gate)
        while not swarm.all_created.is_set():
            with trio.move_on_after(PROGRESS_EVERY):
                await swarm.all_created.wait()
            progress(f"{label} sessions created {swarm.created}/{count} (failed {swarm.failed})")
        created_seconds = trio.current_time() - started
        await trio.sleep(1.0)  # let allocations settle before reading RSS
        rss_sessions = rss_bytes(worker_pid)
        swarm.open_streams.set()
        streams_started = trio.current_time()
        await swarm.wait_settled(progress, f"{label} streams", swarm.created)
        streams_seconds = trio.current_time() - streams_started
        await trio.sleep(1.0)
        ready_at = trio.current_time()
        rss_streams = rss_bytes(worker_pid)
        live_at_rss = len(swarm.live)  # the denominator: streams really held when RSS was read
        result.update(
            sessions_created=swarm.created,
            streams_opened=swarm.opened,
            sessions_ready=live_at_rss,
            sessions_failed=swarm.failed,
            first_error=swarm.first_error,
            setup_seconds=created_seconds,
            setup_sessions_per_s=swarm.created / created_seconds if created_seconds else 0.0,
            streams_seconds=streams_seconds,
            rss_before_bytes=rss_before,
            rss_sessions_bytes=rss_sessions,
            rss_after_bytes=rss_streams,
            redis_connections_before=redis_before,
            redis_connections_after=redis_connections(connection_ports) if connection_ports else None,
            server_reported_sessions=await _server_sessions(port),
        )
        if nodes_before is not None:
            result["redis_connections_by_node_before"] = nodes_before
            result["redis_connections_by_node_after"] = redis_connections_by_node(connection_ports)
        per = max(1, live_at_rss)
        result["rss_session_only_kib"] = (rss_sessions - rss_before) / max(1, swarm.created) / 1024
        result["rss_stream_kib"] = (result["rss_after_bytes"] - rss_sessions) / per / 1024
        result["rss_per_session_kib"] = (result["rss_after_bytes"] - rss_before) / per / 1024
        progress(
            f"{label} {live_at_rss} streams open: RSS {rss_before / 2**20:.0f} -> {rss_sessions / 2**20:.0f} "
            "(sessions) -> "
            f"{result['rss_after_bytes'] / 2**20:.0f} MiB (streams): {result['rss_per_session_kib']:.1f} KiB per "
            f"session with its stream ({result['rss_session_only_kib']:.1f} session + {result['rss_stream_kib']:.1f} "
            f"stream); Redis connections {redis_before} -> {result['redis_connections_after']}"
        )
        server_cpu_before = cpu_seconds(worker_pid)
        calls_before = command_calls(redis_ports) if redis_ports else None
        complete = await watch_rounds(
            swarm.live,
            swarm.arrivals,
            ready_at=ready_at,
            interval=interval,
            rounds=rounds,
            label=label,
            progress=progress,
        )
        watched = trio.current_time() - ready_at
        result["server_cpu_while_idle_streams"] = (cpu_seconds(worker_pid) - server_cpu_before) / max(watched, 1e-9)
        if redis_ports and calls_before is not None:
            calls = calls_between(calls_before, command_calls(redis_ports))
            delivered = sum(1 for a in swarm.arrivals if a[0] >= ready_at)
            result["redis_calls_while_notifying"] = calls
            result["redis_calls_per_delivered_notification"] = sum(calls.values()) / max(1, delivered)
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
        f"{label} notification reached all {open_at_end} open streams in "
        + (", ".join(f"{s:.2f}" for s in spreads) + " s" if spreads else "NO complete round")
    )
    return result


async def watch_rounds(
    live: set[int],
    arrivals: list[tuple[float, int]],
    *,
    ready_at: float,
    interval: float,
    rounds: int,
    label: str,
    progress: Callable[[str], None],
) -> list[dict[str, float]]:
    """Wait for `rounds` notification rounds that reached every stream still open (`live`, filled by the holders
    of the streams as `arrivals` come in); return the complete rounds seen (fewer if the deadline passes)."""
    # A round to N streams may take a while (the notifier awaits each session in turn): allow for it.
    deadline = trio.current_time() + interval * (rounds + 2) + 60.0 + ROUND_ALLOWANCE_PER_SESSION * len(live)
    complete: list[dict[str, float]] = []
    while live and trio.current_time() < deadline:
        await trio.sleep(min(1.0, interval / 2))
        settled = [a for a in arrivals if a[0] >= ready_at]
        # A round still arriving is not complete: only bursts followed by a quiet gap count.
        if settled and trio.current_time() - settled[-1][0] > interval / 2:
            # Complete: reached every stream still open (one the server dropped cannot be reached).
            found = rounds_from_arrivals(settled, len(live), interval / 2)
            if len(found) > len(complete):
                spread = found[-1]["spread_s"]
                progress(f"{label} round {len(found)}: reached all {len(live)} open streams in {spread:.2f} s")
            complete = found
            if len(complete) >= rounds:
                break
    return complete


async def _server_sessions(port: int) -> int | None:
    """Sessions the server reports in /health (None if it cannot say within a few seconds)."""
    with trio.move_on_after(HEALTH_TIMEOUT):
        conn = await Connection.open("127.0.0.1", port)
        try:
            answer = await conn.request("GET", "/health")
            return int(json.loads(answer.body).get("sessions", -1))
        except (HttpError, ValueError):
            return None
        finally:
            with trio.CancelScope(shield=True):
                await conn.aclose()
    return None
