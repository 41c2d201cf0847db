"""The processes a benchmark run starts: Hypercorn/uvicorn servers and redis-server, pinned with taskset.

Everything is read from /proc (Linux only, like taskset): a process's children, its RSS and its CPU
time. Hypercorn's parent process spawns the worker that serves requests; what is measured is the worker.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import attrs
import httpx

ROOT: Final = Path(__file__).resolve().parent.parent
BENCH_DIR: Final = Path(__file__).resolve().parent
HYPERCORN_CONFIG: Final = BENCH_DIR / "hypercorn-bench.toml"
START_TIMEOUT: Final = 90.0
"""Seconds a server gets to answer its health URL (spawned worker, imports, key generation)."""
CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pinned(command: Sequence[str], cpu: int | None) -> list[str]:
    """`command` under `taskset -c cpu` (children inherit the affinity), or as is without pinning."""
    if cpu is None or shutil.which("taskset") is None:
        return list(command)
    return ["taskset", "-c", str(cpu), *command]


def children(pid: int) -> list[int]:
    found: list[int] = []
    task_dir = Path(f"/proc/{pid}/task")
    try:
        for task in task_dir.iterdir():
            text = (task / "children").read_text().split()
            found.extend(int(p) for p in text)
    except OSError:
        return []
    return found


def raise_priority(pid: int, nice: int) -> None:
    """Give `pid`'s scheduler autogroup the niceness `nice` (negative: root only).

    With `kernel.sched_autogroup_enabled`, CPU time is shared between sessions first and a process's
    own nice value only counts inside its session: every process started with its own session (as the
    servers are) needs its autogroup reniced, or other sessions on a shared machine take half its core.
    """
    if not nice:
        return
    # Without autogroups (or the right to renice), the inherited nice value is all there is.
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/autogroup").write_text(str(nice))


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@attrs.define
class Proc:
    """A started process with its log file; `pid` is what is measured (the worker for Hypercorn)."""

    name: str
    command: list[str]
    env: dict[str, str]
    log_path: Path
    health_url: str | None = None
    any_answer: bool = False
    """Ready at any HTTP answer (an app without a health route), not only 200/503."""
    process: subprocess.Popen[bytes] | None = None
    worker_pid: int | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        raise_priority(self.process.pid, os.getpriority(os.PRIO_PROCESS, 0))

    def wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start-up:\n{self.log()[-3000:]}")
            if self._ready():
                self.worker_pid = self._find_worker()
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} did not start in {START_TIMEOUT}s:\n{self.log()[-3000:]}")

    def _ready(self) -> bool:
        if self.health_url is None:
            return True
        try:
            status = httpx.get(self.health_url, timeout=1.0).status_code
        except httpx.HTTPError:
            return False
        return self.any_answer or status in (200, 503)

    def _find_worker(self) -> int:
        """The process serving requests: Hypercorn's spawned worker, else the process itself.

        taskset execs in place, so the started pid is the server's parent; multiprocessing also starts
        a resource tracker next to the worker, which is not it.
        """
        assert self.process is not None
        for kid in children(self.process.pid):
            if "spawn_main" in cmdline(kid):
                return kid
        return self.process.pid

    @property
    def pid(self) -> int:
        assert self.worker_pid is not None, f"{self.name} is not running"
        return self.worker_pid

    def terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (Hypercorn drains for its graceful timeout), then SIGKILL to the whole group."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def refserver_env(port: int, *, base_port: int | None = None, **settings: object) -> dict[str, str]:
    """Environment for a refserver instance: embedded auth unless told, logs at WARNING."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFSERVER_")}
    env["PYTHONUNBUFFERED"] = "1"
    values: dict[str, object] = {
        "auth_mode": "embedded",
        "base_url": f"http://127.0.0.1:{base_port or port}",
        "log_level": "WARNING",
        "rate_limit_per_minute": 1_000_000,
        "log_message_interval": 3600,
    }
    values.update(settings)
    for key, value in values.items():
        env[f"REFSERVER_{key.upper()}"] = str(value)
    return env


def hypercorn_server(name: str, app: str, port: int, env: dict[str, str], cpu: int | None, log_dir: Path) -> Proc:
    command = [sys.executable, "-m", "hypercorn", "--config", str(HYPERCORN_CONFIG)]
    command += ["--bind", f"127.0.0.1:{port}", app]
    return Proc(name, pinned(command, cpu), env, log_dir / f"{name}.log", f"http://127.0.0.1:{port}/health")


def sdk_peer_server(
    name: str,
    port: int,
    cpu: int | None,
    log_dir: Path,
    *,
    json_response: bool = False,
    auth_server: str | None = None,
) -> Proc:
    """The SDK's echo server; with `auth_server` (a refserver base URL) it requires that server's JWTs for its /mcp."""
    command = [sys.executable, "-m", "bench.peers.sdk_echo_server", "--port", str(port)]
    command += ["--json"] if json_response else []
    if auth_server is not None:
        command += ["--auth-server", auth_server, "--resource", f"{auth_server}/mcp"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFSERVER_")}
    # The SDK app has no health route: any HTTP answer on /mcp (406 to a bare GET) means it is up.
    return Proc(
        name, pinned(command, cpu), env, log_dir / f"{name}.log", f"http://127.0.0.1:{port}/mcp", any_answer=True
    )


REDIS_PROC_PREFIX: Final = "redis"
"""Every redis-server Proc's name starts so: they are stopped after the servers, which talk to them on their way out."""


def redis_server(
    port: int, cpu: int | None, log_dir: Path, *, name: str = REDIS_PROC_PREFIX, extra_options: Sequence[str] = ()
) -> Proc:
    """redis-server without persistence; `extra_options` (a cluster node's) come last. Its files go to `log_dir`."""
    assert name.startswith(REDIS_PROC_PREFIX), name
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    options = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    options += ["--dir", str(log_dir), "--maxclients", "20000", *extra_options]
    proc = Proc(name, pinned([binary, *options], cpu), dict(os.environ), log_dir / f"{name}.log")
    proc.health_url = None
    return proc


def is_redis(proc: Proc) -> bool:
    return proc.name.startswith(REDIS_PROC_PREFIX)


def wait_redis(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(64).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        time.sleep(0.02)
    raise RuntimeError(f"redis-server on port {port} did not answer PING")


def stop_all(procs: Sequence[Proc]) -> None:
    """Stop every process at once (their graceful shutdowns overlap)."""
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.stop()


def start_all(procs: Sequence[Proc]) -> None:
    """Start every process at once, then wait for each (start-ups overlap)."""
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.wait_ready()


def core_jiffies() -> dict[int, tuple[int, int]]:
    """Per core: (busy, total) jiffies since boot, from /proc/stat."""
    cores: dict[int, tuple[int, int]] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3].isdigit():
            name, *values = line.split()
            numbers = [int(v) for v in values]
            idle = numbers[3] + (numbers[4] if len(numbers) > 4 else 0)
            cores[int(name[3:])] = (sum(numbers) - idle, sum(numbers))
    return cores


def core_busy(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]]) -> dict[int, float]:
    """Per core: the busy fraction between two `core_jiffies()` readings (whoever used it)."""
    busy: dict[int, float] = {}
    for core, (b1, t1) in after.items():
        b0, t0 = before.get(core, (0, 0))
        busy[core] = (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0
    return busy
