"""Running wrk (pinned to the generator core) with bench/lua/flood.lua, and reading what it measured."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from typing import Any, Final

import attrs

from bench.procs import BENCH_DIR, core_busy, core_jiffies, cpu_seconds, pinned

FLOOD_SCRIPT: Final = BENCH_DIR / "lua" / "flood.lua"
JSON_PREFIX: Final = "BENCH_JSON "
WRK_TIMEOUT: Final = "10s"
"""wrk's own per-request timeout; far above any latency a run should see (128 connections on one core)."""


def ensure_wrk() -> str:
    """The wrk binary; installed with apt-get (Debian package `wrk`) when missing and we are root."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise SystemExit("wrk is not installed: run `sudo apt-get install -y wrk` (Debian/Ubuntu), then retry")
    print("installing wrk: apt-get update && apt-get install -y wrk", flush=True)
    subprocess.run(["apt-get", "update"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "wrk"], check=True, stdout=subprocess.DEVNULL)
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("apt-get did not install wrk")
    return found


def wrk_version() -> str:
    result = subprocess.run([ensure_wrk(), "--version"], capture_output=True, text=True, check=False)
    words = (result.stdout or result.stderr or "?").split()
    return words[1] if len(words) > 1 and words[0] == "wrk" else " ".join(words[:2])


@attrs.frozen
class Target:
    """Where a flood goes: a URL path on one or more addresses, and the session to use there."""

    name: str
    port: int
    path: str = "/mcp"
    token: str = ""
    session: str = ""
    extra_ports: tuple[int, ...] = ()
    server_pid: int | None = None
    """The process whose CPU is reported next to the run (the server's worker)."""
    redis_ports: tuple[int, ...] = ()
    """The Redis the server uses (a cluster's masters): its commands per request are counted."""
    modern: bool = False
    """Protocol 2026-07-28: no session, every request self-contained."""


@attrs.frozen
class WrkResult:
    connections: int
    threads: int
    duration_s: float
    requests: int
    requests_per_s: float
    ok: int
    bad: int
    first_bad: str
    errors: dict[str, int]
    latency_ms: dict[str, float]
    generator_cpu: float
    """wrk's own CPU time (user + system) over the wall time of the run; 1.0 is one full core."""
    server_cpu: float | None
    core_busy: dict[int, float]
    """Busy fraction of every core during the run, whoever used it (interference shows here)."""

    def as_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


def run_wrk(
    target: Target, connections: int, duration: float, *, cpu: int | None, threads: int | None = None
) -> WrkResult:
    wrk = ensure_wrk()
    threads = threads or (2 if target.extra_ports else 1)
    threads = max(1, min(threads, connections))
    env = dict(os.environ)
    env.update(
        BENCH_PATH=target.path,
        BENCH_TOKEN=target.token,
        BENCH_SESSION=target.session,
        BENCH_MODERN="1" if target.modern else "",
        BENCH_EXPECT="Echo: hi",
        BENCH_ADDRS=",".join(f"127.0.0.1:{p}" for p in (target.port, *target.extra_ports))
        if target.extra_ports
        else "",
    )
    command = pinned(
        [
            wrk,
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(duration))}s",
            "--timeout",
            WRK_TIMEOUT,
            "--latency",
            "-s",
            str(FLOOD_SCRIPT),
            f"http://127.0.0.1:{target.port}{target.path}",
        ],
        cpu,
    )
    server_before = cpu_seconds(target.server_pid) if target.server_pid else None
    cores_before = core_jiffies()
    with tempfile.TemporaryFile() as out:
        started = time.monotonic()
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        wall = time.monotonic() - started
        cores = core_busy(cores_before, core_jiffies())
        server_cpu = None
        if target.server_pid is not None and server_before is not None:
            server_cpu = (cpu_seconds(target.server_pid) - server_before) / wall
        out.seek(0)
        text = out.read().decode(errors="replace")
    line = next((x for x in text.splitlines() if x.startswith(JSON_PREFIX)), None)
    if process.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({process.returncode}):\n{text}")
    data = json.loads(line[len(JSON_PREFIX) :])
    seconds = data["duration_us"] / 1e6
    return WrkResult(
        connections=connections,
        threads=threads,
        duration_s=seconds,
        requests=data["requests"],
        requests_per_s=data["requests"] / seconds if seconds else 0.0,
        ok=data["ok"],
        bad=data["bad"],
        first_bad=data["first_bad"],
        errors=data["errors"],
        latency_ms={k: v / 1000 for k, v in data["latency_us"].items()},
        generator_cpu=(usage.ru_utime + usage.ru_stime) / wall,
        server_cpu=server_cpu,
        core_busy=cores,
    )


def describe(result: WrkResult) -> str:
    lat = result.latency_ms
    text = (
        f"{result.requests_per_s:8.0f} req/s  p50 {lat['p50']:7.2f} ms  p99 {lat['p99']:7.2f} ms  "
        f"wrk CPU {result.generator_cpu:4.0%}"
    )
    if result.server_cpu is not None:
        text += f"  server CPU {result.server_cpu:4.0%}"
    if result.bad or any(result.errors.values()):
        text += f"  BAD {result.bad} errors {result.errors} {result.first_bad[:80]!r}"
    return text


def median_result(results: Sequence[WrkResult]) -> dict[str, float]:
    """Medians over repeated runs of the numbers the report shows."""
    from statistics import median

    return {
        "requests_per_s": median(r.requests_per_s for r in results),
        "p50_ms": median(r.latency_ms["p50"] for r in results),
        "p99_ms": median(r.latency_ms["p99"] for r in results),
        "generator_cpu": median(r.generator_cpu for r in results),
        "server_cpu": median(r.server_cpu for r in results if r.server_cpu is not None)
        if any(r.server_cpu is not None for r in results)
        else float("nan"),
        "bad": sum(r.bad for r in results),
        "errors": sum(sum(r.errors.values()) for r in results),
    }
