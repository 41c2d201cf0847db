"""A real redis-server process on a free port, which tests may kill, pause and restart to inject faults."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import attrs
import redis

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
START_TIMEOUT = 10.0
"""Seconds a fresh redis-server gets to answer PING (it usually takes a few milliseconds)."""


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port free now and never handed out before in this test process.

    The kernel may offer a port it just gave to the previous caller, whose server has not bound it yet: two servers
    of one fixture were once given the same port, and the second one's probe was answered by the first.
    """
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@attrs.define
class RedisServer:
    """`redis-server` without persistence, bound to 127.0.0.1:`port`; restarts reuse the same port."""

    directory: Path
    port: int = attrs.field(factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    extra_options: list[str] = attrs.field(factory=list)
    cluster_mode = False
    """Read by `tests.cluster.start_cluster` (REFSERVER_REDIS_CLUSTER); see `tests.redis_cluster`."""

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.directory / f"redis-{self.port}.log"

    def start(self) -> None:
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("redis-server is already running")
        options = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        options += self.extra_options
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [REDIS_SERVER, *options, "--dir", str(self.directory)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        # Synchronous like ServerProcess.start (see there): it polls the condition itself, PING answered.
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited at start-up:\n{self.log()}")
            if _answers_ping(self.port):
                return
            time.sleep(0.01)
        self.kill()
        raise RuntimeError(f"redis-server did not answer PING in {START_TIMEOUT}s:\n{self.log()}")

    def stop(self) -> None:
        self._signal_and_wait(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: the abrupt death of Redis (no goodbye to clients)."""
        self._signal_and_wait(signal.SIGKILL)

    def restart(self) -> None:
        self.kill()
        self.start()

    def pause(self) -> None:
        """SIGSTOP: Redis hangs (sockets stay open, nothing answers)."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def client(self) -> redis.Redis:
        """A plain synchronous client for inspecting what the code under test wrote."""
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def node_clients(self) -> list[redis.Redis]:
        """A client per server process (one here; one per node in `tests.redis_cluster`)."""
        return [self.client()]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _signal_and_wait(self, sig: int) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, signal.SIGCONT)  # a paused server cannot act on SIGTERM
        process.send_signal(sig)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
