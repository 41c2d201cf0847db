"""T1: durable tasks (the 2026-07-28 tasks extension) through three instances sharing one Redis.

`clients` Trio tasks each create a task (`tools/call` of `slow_compute` with `seconds: 0`, answered at once
with a task handle), then poll `tasks/get` until the task is terminal, back to back for `duration` seconds.
Every request goes to the next instance than the last (each loop keeps one keep-alive connection to each
of the three): the task is created on one instance, run by whichever instance's worker takes it off the
shared queue, and polled on the others. The tool takes no time, so what a task costs beyond its two kinds
of request is the queue: from the handle to the first `tasks/get` that shows `completed`.

The first poll goes out as soon as the handle is in, then one `poll_interval` after each answer that is
not terminal; the completion happened between the sending of the last poll that showed the task still
working (the lower bound recorded) and the answer that showed it completed (the latency reported). That
bracket is as wide as a poll's round trip plus the interval, so the server's own clock is recorded too: the
completed task's `lastUpdatedAt` minus its `createdAt`, which no polling delays (1 ms resolution).
"""

from __future__ import annotations

import datetime
import json
import statistics
import time
from collections.abc import Sequence
from typing import Any, Final

import attrs
import trio

from bench.mcpclient import POST_HEADERS, auth_headers
from bench.procs import cpu_seconds
from bench.rawhttp import Connection, HttpError, RawResponse

MODERN_VERSION: Final = "2026-07-28"
TOOL: Final = "slow_compute"
ARGUMENTS: Final = {"seconds": 0, "label": "bench"}
EXPECTED_TEXT: Final = b"Computed bench in 0s"
TERMINAL: Final = frozenset({"completed", "failed", "cancelled"})
META: Final = {
    "io.modelcontextprotocol/protocolVersion": MODERN_VERSION,
    "io.modelcontextprotocol/clientCapabilities": {"extensions": {"io.modelcontextprotocol/tasks": {}}},
    "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "0"},
}
TASK_TIMEOUT: Final = 30.0
"""Seconds a task may stay unfinished before it counts as an error (a 0 s tool: never, unless broken)."""
WINDOW: Final = 1.0
"""Seconds of each window of the per-second throughput distribution."""


class TaskError(Exception):
    """An answer that is not what a working task server gives (status, JSON-RPC error, task failed)."""


def _request(
    method: str, params: dict[str, Any], request_id: int, name: str, token: str
) -> tuple[dict[str, str], bytes]:
    headers = {
        **POST_HEADERS,
        **auth_headers(token),
        "MCP-Protocol-Version": MODERN_VERSION,
        "Mcp-Method": method,
        "Mcp-Name": name,
    }
    body = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": {**params, "_meta": META}}
    return headers, json.dumps(body, separators=(",", ":")).encode()


def _result(response: RawResponse, step: str) -> dict[str, Any]:
    if response.status != 200:
        raise TaskError(f"{step}: HTTP {response.status}: {response.body[:300]!r}")
    if not (response.header("content-type") or "").startswith("application/json"):
        raise TaskError(f"{step}: expected a JSON answer, got {response.header('content-type')}")
    answer = json.loads(response.body)
    if "result" not in answer:
        raise TaskError(f"{step}: {str(answer.get('error', answer))[:300]}")
    result: dict[str, Any] = answer["result"]
    return result


def _instant(stamp: str) -> float:
    """Seconds since the epoch of an ISO 8601 timestamp as the server writes them (`...T02:31:16.043Z`)."""
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


@attrs.define
class TaskTiming:
    created_ms: float
    """The `tools/call` round trip (the task handle's creation)."""
    queue_ms: float
    """From the handle's arrival to the answer of the first `tasks/get` showing `completed`."""
    queue_lower_ms: float
    """From the handle's arrival to the sending of the last `tasks/get` that showed the task unfinished."""
    stored_ms: float
    """The server's own clock: the completed task's `lastUpdatedAt` minus its `createdAt` (1 ms resolution)."""
    polls: int
    done_at: float
    """perf_counter() at the completed answer."""


class Rotation:
    """One keep-alive connection to each instance; every request on the next one than the last."""

    def __init__(self, ports: Sequence[int], authority: str, start: int) -> None:
        self.ports = list(ports)
        self.authority = authority
        self.conns: list[Connection | None] = [None] * len(self.ports)
        self.turn = start
        self.served = [0] * len(self.ports)
        self.reconnects = 0

    async def request(self, headers: dict[str, str], body: bytes) -> RawResponse:
        index = self.turn % len(self.ports)
        self.turn += 1
        conn = self.conns[index]
        if conn is None:
            conn = self.conns[index] = await Connection.open("127.0.0.1", self.ports[index], self.authority)
        try:
            response = await conn.request("POST", "/mcp", headers, body)
        except BaseException:  # a broken connection, or one cancelled mid-answer (a task's timeout)
            with trio.CancelScope(shield=True):
                await conn.aclose()
            self.conns[index] = None  # reopened by the next request to this instance
            self.reconnects += 1
            raise
        self.served[index] += 1
        return response

    async def aclose(self) -> None:
        for conn in self.conns:
            if conn is not None:
                await conn.aclose()


def percentiles(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"min": float("nan"), "p50": float("nan"), "p90": float("nan"), "p99": float("nan"), "max": float("nan")}
    ordered = sorted(values)

    def at(share: float) -> float:
        return ordered[min(len(ordered) - 1, int(len(ordered) * share))]

    return {
        "min": ordered[0],
        "p50": statistics.median(ordered),
        "p90": at(0.90),
        "p99": at(0.99),
        "max": ordered[-1],
    }


async def run_tasks(
    *,
    ports: Sequence[int],
    token: str,
    clients: int,
    duration: float,
    poll_interval: float,
    worker_pids: Sequence[int] = (),
) -> dict[str, Any]:
    timings: list[TaskTiming] = []
    errors: list[str] = []
    get_ms: list[float] = []
    rotations: list[Rotation] = []
    authority = f"127.0.0.1:{ports[0]}"
    cpu_before = [cpu_seconds(pid) for pid in worker_pids]
    client_cpu_before = time.process_time()
    started = time.perf_counter()
    deadline = started + duration

    async def one_task(rotation: Rotation, request_id: int) -> TaskTiming:
        headers, body = _request("tools/call", {"name": TOOL, "arguments": ARGUMENTS}, request_id, TOOL, token)
        sent = time.perf_counter()
        handle = _result(await rotation.request(headers, body), "tools/call")
        handled = time.perf_counter()
        if handle.get("resultType") != "task" or not handle.get("taskId"):
            raise TaskError(f"tools/call: not a task handle: {str(handle)[:300]}")
        task_id = str(handle["taskId"])
        headers, body = _request("tasks/get", {"taskId": task_id}, request_id + 1, task_id, token)
        last_unfinished = handled
        polls = 0
        with trio.fail_after(TASK_TIMEOUT):
            while True:
                asked = time.perf_counter()
                response = await rotation.request(headers, body)
                answered = time.perf_counter()
                polls += 1
                get_ms.append((answered - asked) * 1000)
                task = _result(response, "tasks/get")
                status = task.get("status")
                if status in TERMINAL:
                    break
                last_unfinished = asked
                await trio.sleep(poll_interval)
        if status != "completed" or EXPECTED_TEXT not in response.body:
            raise TaskError(f"task {task_id} ended {status}: {response.body[:300]!r}")
        return TaskTiming(
            created_ms=(handled - sent) * 1000,
            queue_ms=(answered - handled) * 1000,
            queue_lower_ms=(last_unfinished - handled) * 1000,
            stored_ms=(_instant(task["lastUpdatedAt"]) - _instant(task["createdAt"])) * 1000,
            polls=polls,
            done_at=answered,
        )

    async def client(index: int) -> None:
        rotation = Rotation(ports, authority, start=index)
        rotations.append(rotation)
        request_id = 0
        try:
            while time.perf_counter() < deadline:
                request_id += 2
                try:
                    timings.append(await one_task(rotation, request_id))
                except (TaskError, HttpError, OSError, trio.BrokenResourceError, trio.TooSlowError) as exc:
                    errors.append(f"{type(exc).__name__}: {exc}"[:300])
        finally:
            await rotation.aclose()

    async with trio.open_nursery() as nursery:
        for index in range(clients):
            nursery.start_soon(client, index)
    finished = time.perf_counter()
    elapsed = finished - started
    cpu_after = [cpu_seconds(pid) for pid in worker_pids]
    # Throughput counts the tasks completed inside the window; the ones in flight at its end finish after it.
    inside = [t for t in timings if t.done_at <= deadline]
    windows = [0] * int(duration / WINDOW)
    for timing in inside:
        slot = int((timing.done_at - started) / WINDOW)
        if slot < len(windows):
            windows[slot] += 1
    per_window = [count / WINDOW for count in windows]
    server_cpu = [(after - before) / elapsed for before, after in zip(cpu_before, cpu_after, strict=True)]
    served = [sum(r.served[i] for r in rotations) for i in range(len(ports))]
    return {
        "clients": clients,
        "duration_s": duration,
        "poll_interval_ms": poll_interval * 1000,
        "tasks": len(inside),
        "tasks_after_window": len(timings) - len(inside),
        "tasks_per_s": len(inside) / duration if duration else 0.0,
        "tasks_per_s_by_window": per_window,
        "tasks_per_s_windows": percentiles(per_window) if per_window else {},
        "created_ms": percentiles([t.created_ms for t in timings]),
        "queue_ms": percentiles([t.queue_ms for t in timings]),
        "queue_lower_ms": percentiles([t.queue_lower_ms for t in timings]),
        "stored_ms": percentiles([t.stored_ms for t in timings]),
        "end_to_end_ms": percentiles([t.created_ms + t.queue_ms for t in timings]),
        "tasks_get_ms": percentiles(get_ms),
        "polls_per_task": statistics.fmean(t.polls for t in timings) if timings else float("nan"),
        "requests_by_instance": served,
        "reconnects": sum(r.reconnects for r in rotations),
        "errors": len(errors),
        "first_errors": errors[:5],
        "generator_cpu": (time.process_time() - client_cpu_before) / elapsed if elapsed else 0.0,
        "server_cpu": sum(server_cpu),
        "server_cpu_by_instance": server_cpu,
    }
